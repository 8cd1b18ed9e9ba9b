//! The builder as a process of its own (the `cdeploy-builder` binary): one build,
//! configured by environment (see [`crate::env`]).
//!
//! * **API mode** (ECS, the default there): `CDEPLOY_API`, `DEPLOYMENT_ID` and the one-time
//!   `BUILD_CLAIM`. The builder claims its build from the control plane and does
//!   everything through it (see [`crate::remote`]); it holds no credential.
//! * **Trusted mode** (run by hand): the seed's variables, with storage (`STORAGE_DIR` or
//!   `S3_*`) and optionally Redis (`REDIS_*`) written directly.
//!
//! Events are printed to stdout as JSON lines either way; exit code 0 means ready, 1 a
//! build that failed or was canceled, 2 a configuration that let no build start.
//!
//! # Layout
//! * this file — [`run`]: the two modes, the sandbox and workspace from the environment,
//!   exit codes.
//! * [`sinks`] — where events go: the builder API, Redis Streams, or stdout.
//! * [`stop`] — the end of the log, and what a builder stopped by SIGTERM writes there.
//! * [`storage`] — the storage a trusted builder writes directly (a directory or S3).

pub mod sinks;
pub mod stop;
pub mod storage;

use std::path::PathBuf;
use std::process::ExitCode;

use cdeploy_core::event::{EventBody, Step};
use cdeploy_storage::Storage;
use tokio_util::sync::CancellationToken;

use self::sinks::JobSink;
use self::storage::StorageSetupError;
use crate::sandbox::{Sandbox, SandboxError};
use crate::toolchain::Toolchains;
use crate::{env, remote, BuildSpec, DirectPublisher, EventSink, Outcome, Publisher, Workspace};

/// A configuration that lets no build start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Env(#[from] env::EnvError),
    #[error(transparent)]
    Storage(#[from] StorageSetupError),
    #[error("no sandbox for build commands: {0}; set {var}=1 to build without one", var = env::UNSAFE_NO_SANDBOX)]
    NoSandbox(SandboxError),
}

/// Runs the one build this process is for, in the mode its environment names.
pub async fn run() -> ExitCode {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (get(env::CDEPLOY_API), get(env::BUILD_CLAIM)) {
        (Some(api), Some(claim)) => api_mode(&api, &claim).await,
        (Some(_), None) | (None, Some(_)) => {
            eprintln!(
                "cdeploy-builder: set both {} and {} (API mode), or neither",
                env::CDEPLOY_API,
                env::BUILD_CLAIM
            );
            ExitCode::from(2)
        }
        (None, None) => trusted_mode().await,
    }
}

/// `DEPLOYMENT_ID`, when it is a deployment id.
fn deployment_id_from_env() -> Option<String> {
    std::env::var(env::DEPLOYMENT_ID)
        .ok()
        .filter(|id| cdeploy_core::ids::DeploymentId::parse(id).is_some())
}

/// Claims the build from the control plane and runs it through the builder API.
async fn api_mode(api: &str, claim: &str) -> ExitCode {
    let Some(id) = deployment_id_from_env() else {
        eprintln!(
            "cdeploy-builder: {} is missing or invalid",
            env::DEPLOYMENT_ID
        );
        return ExitCode::from(2);
    };
    // Without the claim there is no log to write to: the server sees the task stop
    // and fails the deployment with ECS's reason.
    let (client, spec) = match remote::claim(api, &id, claim).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cdeploy-builder: {e}");
            return ExitCode::from(2);
        }
    };
    let sink = JobSink::api(client.clone());
    let storage = remote::ApiStorage {
        client: client.clone(),
    };
    let publisher = remote::ApiPublisher { client };
    build(spec, &storage, &publisher, sink).await
}

/// The seed's variables: storage (and Redis) written directly.
async fn trusted_mode() -> ExitCode {
    // The contract: a terminal status every time, even when nothing could start.
    let spec = env::spec_from(|k| std::env::var(k).ok());
    // The deployment's log, even when the rest of the configuration is wrong.
    let log_id = match &spec {
        Ok(s) => Some(s.deployment_id.clone()),
        Err(_) => deployment_id_from_env(),
    };
    let sink = match JobSink::from_env(log_id.as_deref()) {
        Ok(sink) => sink,
        Err(e) => {
            eprintln!("cdeploy-builder: log bus: {e}");
            // Still say how it ended, where it can be seen.
            let sink = JobSink::stdout();
            sink.emit(EventBody::failed(format!("configuration: log bus: {e}")))
                .await;
            return ExitCode::from(2);
        }
    };
    let configured = match spec {
        Ok(spec) => storage::from_env()
            .await
            .map(|storage| (spec, storage))
            .map_err(ConfigError::from),
        Err(e) => Err(e.into()),
    };
    let (spec, storage) = match configured {
        Ok(c) => c,
        Err(e) => return misconfigured(sink, &e).await,
    };
    let publisher = DirectPublisher(storage.as_ref());
    build(spec, storage.as_ref(), &publisher, sink).await
}

/// A configuration error ends the build before it starts, in its log and on stderr.
async fn misconfigured(sink: JobSink, e: &ConfigError) -> ExitCode {
    sink.emit(EventBody::failed(format!("configuration: {e}")))
        .await;
    eprintln!("cdeploy-builder: {e}");
    stop::finish(sink).await;
    ExitCode::from(2)
}

/// The sandbox, the workspace and the build itself; then the log's end.
async fn build(
    spec: BuildSpec,
    storage: &dyn Storage,
    publisher: &dyn Publisher,
    sink: JobSink,
) -> ExitCode {
    let work_dir = dir_from_env(env::WORK_DIR).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("cdeploy-build-{}", spec.deployment_id))
    });
    let sandbox = match sandbox_from_env(&work_dir) {
        Ok(s) => s,
        Err(e) => return misconfigured(sink, &e).await,
    };
    if !sandbox.is_isolated() {
        sink.emit(EventBody::system(
            Step::Clone,
            format!(
                "warning: build commands run WITHOUT a sandbox ({}=1): {}",
                env::UNSAFE_NO_SANDBOX,
                sandbox.describe()
            ),
        ))
        .await;
    }
    let cache = dir_from_env(env::CACHE_DIR);
    let toolchains = match toolchains_from_env(cache.as_ref()) {
        Ok(t) => t,
        Err(e) => return misconfigured(sink, &e).await,
    };
    let ws = Workspace {
        work_dir,
        project_cache: cache
            .as_ref()
            .map(|c| c.join("projects").join(&spec.slug).join(spec.scope())),
        modules_cache: cache.as_ref().map(|c| c.join("modules")),
        storage_cache: cache.is_none(),
        path: sandbox.build_path(
            &std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        ),
        sandbox: &sandbox,
        toolchains: &toolchains,
    };
    let outcome = crate::run(&spec, &ws, storage, publisher, &sink, cancel_on_signal()).await;
    sandbox.release();
    stop::finish(sink).await;
    match outcome {
        Outcome::Ready { .. } => ExitCode::SUCCESS,
        Outcome::Failed(_) | Outcome::Canceled => ExitCode::FAILURE,
    }
}

/// A directory named by `var`, when set and not empty.
fn dir_from_env(var: &str) -> Option<PathBuf> {
    std::env::var(var)
        .ok()
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// The sandbox the environment asks for (probed in `work_dir`).
fn sandbox_from_env(work_dir: &std::path::Path) -> Result<Sandbox, ConfigError> {
    let opts = env::sandbox_options_from(|k| std::env::var(k).ok(), work_dir.join(".probe"))?;
    Sandbox::new(&opts).map_err(ConfigError::NoSandbox)
}

/// Where toolchains are kept: `TOOLCHAIN_DIR`, else under the cache directory, else a
/// temporary directory; with the size cap of `TOOLCHAIN_MAX_MB`.
fn toolchains_from_env(cache: Option<&PathBuf>) -> Result<Toolchains, ConfigError> {
    let max_mb = env::toolchain_max_mb(|k| std::env::var(k).ok())?;
    let dir = dir_from_env(env::TOOLCHAIN_DIR)
        .or_else(|| cache.map(|c| c.join("toolchains")))
        .unwrap_or_else(|| std::env::temp_dir().join("cdeploy-toolchains"));
    Ok(Toolchains::new(
        dir,
        std::env::var(env::NPM_REGISTRY).ok(),
        max_mb,
    ))
}

/// Canceled by SIGTERM (or ctrl-c).
fn cancel_on_signal() -> CancellationToken {
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        cdeploy_core::shutdown_signal().await;
        on_signal.cancel();
    });
    cancel
}
