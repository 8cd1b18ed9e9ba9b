//! Running deployments, behind the [`Dispatcher`] trait. [`LocalDispatcher`] runs them
//! as tasks of this process with a bounded queue and a configurable number of builds at
//! once (embedded mode); `ecs::EcsDispatcher` runs builds as ECS Fargate tasks.
//!
//! A dispatcher owns its backend: the API hands it a deployment ([`Job`]) and nothing
//! about where or how it runs. The local dispatcher alone knows the sandbox, the work
//! and cache directories, the `PATH` builds get, and how to recover after a crash.
//!
//! # Layout
//! * this file — the [`Dispatcher`] trait, [`Job`] and the errors dispatchers answer.
//! * [`local`] — [`LocalDispatcher`]: builds in this process, sandboxed.
//! * `ecs` — `ecs::EcsDispatcher`: builds as ECS Fargate tasks (feature `aws`).

#[cfg(feature = "aws")]
pub mod ecs;
pub mod local;

pub use local::{create_passable_parents, prepare_dirs, LocalBuilds, LocalDispatcher};

use std::time::Duration;

use async_trait::async_trait;
use cdeploy_builder::BuildSpec;
use cdeploy_core::config::SiteConfig;
use cdeploy_core::rules::RulesConfig;
use cdeploy_storage::publish::OutputFiles;

/// Work for a deployment.
pub enum JobKind {
    /// Fetch, install, build, upload, activate.
    Build(Box<BuildSpec>),
    /// Prebuilt output whose blobs are already stored: write the manifest and activate.
    Activate {
        /// False for a preview: it is served at its own URL (and branch alias) only.
        promote: bool,
        files: OutputFiles,
        site: SiteConfig,
        rules: RulesConfig,
        url: String,
    },
}

pub struct Job {
    pub id: String,
    pub slug: String,
    pub kind: JobKind,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("the build queue is full ({0} deployments waiting; server setting queue_size); try again shortly")]
    QueueFull(usize),
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The build could not be started (the message says why, e.g. ECS's reason).
    #[error("{0}")]
    Rejected(String),
}

/// Where deployments' work runs.
#[async_trait]
pub trait Dispatcher: Send + Sync + 'static {
    /// Starts (or queues) a job. An error means it will not run; the deployment is
    /// marked failed by the caller.
    async fn submit(&self, job: Job) -> Result<(), DispatchError>;
    /// Cancels a queued or running deployment. Returns false if this dispatcher does not
    /// know it (the caller then marks it canceled itself).
    async fn cancel(&self, id: &str, slug: &str) -> bool;
    /// Stops taking jobs and waits (bounded) for the ones of this process to end.
    async fn shutdown(&self, grace: Duration);
    /// Deals with deployments no process works on any more: at start (after a crash)
    /// and after shutdown. Builds that outlive this process (ECS tasks) are left alone.
    async fn recover(&self, reason: &str);
    /// A project was deleted: drop what this backend keeps for it (build caches), so a
    /// project created later under the same name starts clean.
    async fn forget_project(&self, _slug: &str) {}
    /// Whether a build claim presented from `from` (the caller's address, through the
    /// request's `headers` when load balancers are trusted) may come from the build's
    /// task. Backends whose builds claim nothing over the network accept any.
    async fn vouch_claim(
        &self,
        _d: &crate::db::DeploymentRow,
        _headers: &axum::http::HeaderMap,
        _from: std::net::IpAddr,
    ) -> Result<(), ClaimRefused> {
        Ok(())
    }
}

/// Why a build claim was not taken.
#[derive(Debug)]
pub enum ClaimRefused {
    /// The build's task can't be checked yet (not recorded, or ECS did not answer):
    /// the builder retries.
    NotYet(String),
    /// It did not come from the task: whoever presents it read the overrides.
    Elsewhere(String),
}
