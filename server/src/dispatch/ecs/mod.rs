//! The ECS dispatcher (distributed mode): each build is an ECS Fargate task running the
//! `cdeploy-builder` image, which appends its log to Redis and writes to S3 itself.
//!
//! * **RunTask** — `FARGATE`, awsvpc from `ECS_SUBNETS`/`ECS_SECURITY_GROUPS`, and one
//!   container override (`ECS_CONTAINER_NAME`, default `builder-image`) carrying only
//!   the deployment's ids, where the API is (`--builder-api`) and a one-time claim: the
//!   builder claims its spec and a capability through the builder API
//!   ([`crate::api::builds`]) and holds no credential. Overrides are readable by anyone
//!   allowed `ecs:DescribeTasks`, so no build setting, env value or git URL is in them.
//!   ECS `failures[]` or an API error fail the deployment at once, with ECS's reason.
//! * **Watching** — every replica watches every running ECS build: it applies the status
//!   events the builder writes to the log (the stored status follows the log) and asks
//!   DescribeTasks how the task is doing. A task that stops without the builder's final
//!   event ends the deployment `failed` with the stop reason (`canceled` when it was
//!   stopped by a cancel). All of this is idempotent, so replicas need no leader, and a
//!   replica that restarts picks the running builds up again.
//! * **Cancel** — StopTask; Fargate sends the builder SIGTERM and it reports `canceled`.
//!
//! Prebuilt deployments need no build: they are activated in this process.
//!
//! # Layout
//! * this file — [`EcsDispatcher`] and its [`Dispatcher`] side: submit, cancel, claims.
//! * [`settings`] — [`EcsSettings`] from the environment, and where claims come from.
//! * [`watch`] — the reconciler and one watcher per running build.
//! * [`tasks`] — the ECS calls: RunTask, StopTask, DescribeTasks.

pub mod settings;
pub mod tasks;
pub mod watch;

pub use settings::{ClaimFrom, EcsSettings};

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ecs::Client;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ClaimRefused, DispatchError, Dispatcher, Job, JobKind, LocalDispatcher};
use crate::db::DeploymentRow;
use crate::lifecycle::Lifecycle;

/// The stop reason a cancel gives StopTask; a task stopped with it ends `canceled`.
const CANCEL_REASON: &str = "cdeploy: deployment canceled";
/// The stop reason of a build stopped at its deadline.
const TIMEOUT_REASON: &str = "cdeploy: build deadline exceeded";
/// A deployment with no task this long after its last change was never started (the
/// replica handling it stopped before RunTask answered).
const ORPHAN_AFTER: Duration = Duration::from_secs(120);

pub struct EcsDispatcher {
    client: Client,
    settings: EcsSettings,
    /// Prebuilt activations run here.
    local: Arc<LocalDispatcher>,
    lifecycle: Arc<Lifecycle>,
    /// Deployments this replica is starting or watching.
    watching: Mutex<HashSet<String>>,
    tracker: TaskTracker,
    stop: CancellationToken,
    /// This dispatcher, for the watchers `submit` spawns.
    me: std::sync::Weak<EcsDispatcher>,
}

impl EcsDispatcher {
    pub async fn start(
        settings: EcsSettings,
        local: Arc<LocalDispatcher>,
        lifecycle: Arc<Lifecycle>,
    ) -> Arc<Self> {
        let client = settings.client().await;
        let d = Arc::new_cyclic(|me| EcsDispatcher {
            client,
            settings,
            local,
            lifecycle,
            watching: Mutex::new(HashSet::new()),
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            me: me.clone(),
        });
        let me = d.clone();
        d.tracker.spawn(async move { me.reconcile_forever().await });
        d
    }
}

#[async_trait]
#[async_trait]
impl Dispatcher for EcsDispatcher {
    async fn submit(&self, job: Job) -> Result<(), DispatchError> {
        if self.stop.is_cancelled() {
            return Err(DispatchError::ShuttingDown);
        }
        if let JobKind::Activate { .. } = &job.kind {
            return self.local.submit(job).await;
        }
        // Claimed before RunTask, so the reconciler leaves it alone meanwhile.
        self.watching
            .lock()
            .expect("not poisoned")
            .insert(job.id.clone());
        let started = self.run_task(&job).await;
        self.watching.lock().expect("not poisoned").remove(&job.id);
        let task = started.map_err(|e| {
            tracing::warn!(deployment = %job.id, error = %e, "cannot start the build task");
            DispatchError::Rejected(e)
        })?;
        tracing::info!(deployment = %job.id, slug = %job.slug, task, "build task started");
        if let Err(e) = self.lifecycle.store.set_task(&job.id, &task).await {
            tracing::error!(deployment = %job.id, error = %e, "cannot record the build task");
        }
        // `submit` runs on an API request: the watcher lives on in the dispatcher.
        if let Some(me) = self.me.upgrade() {
            me.watch(job.id, job.slug, task, Duration::ZERO);
        }
        Ok(())
    }

    async fn vouch_claim(
        &self,
        d: &DeploymentRow,
        headers: &axum::http::HeaderMap,
        from: IpAddr,
    ) -> Result<(), ClaimRefused> {
        let ClaimFrom::Task { proxies } = &self.settings.claim_from else {
            return Ok(());
        };
        let Some(task) = &d.task else {
            // RunTask has not answered yet (the claim can't be older than its task).
            return Err(ClaimRefused::NotYet(
                "the build's task is not recorded yet".into(),
            ));
        };
        let from = ClaimFrom::caller(proxies, headers, from);
        let addresses = self.task_addresses(task).await?;
        // Exactly the task's own address: a subnet (an IPv6 /64 is a whole subnet) holds
        // other tasks, other builds among them.
        if addresses.contains(&from) {
            return Ok(());
        }
        if addresses.is_empty() {
            return Err(ClaimRefused::NotYet(format!(
                "the build task {task} has no network address yet"
            )));
        }
        Err(ClaimRefused::Elsewhere(format!(
            "the claim came from {from}, which is not an address of the build's task"
        )))
    }

    async fn cancel(&self, id: &str, slug: &str) -> bool {
        if self.local.cancel(id, slug).await {
            return true;
        }
        let task = match self.lifecycle.store.get_deployment(id).await {
            Ok(Some(DeploymentRow { task: Some(t), .. })) => t,
            _ => return false,
        };
        match self.lifecycle.bus.shared() {
            Some(bus) => {
                if let Err(e) = bus.request_cancel(id).await {
                    tracing::warn!(deployment = id, error = %e, "cannot mark the cancel in the log bus");
                }
            }
            None => tracing::warn!(deployment = id, "no shared log bus to mark the cancel in"),
        }
        self.stop_task(&task, CANCEL_REASON).await
    }

    async fn shutdown(&self, grace: Duration) {
        // Build tasks keep running: another replica, or this one once restarted, watches them.
        self.stop.cancel();
        self.tracker.close();
        self.local.shutdown(grace).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
    }

    /// ECS builds outlive this process: the reconciler picks them up, so nothing is
    /// marked failed here. (Prebuilt activations that a crash interrupted have no task
    /// and are failed by the reconciler after [`ORPHAN_AFTER`].)
    async fn recover(&self, _reason: &str) {}

    async fn forget_project(&self, slug: &str) {
        self.local.forget_project(slug).await;
    }
}
