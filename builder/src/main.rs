//! `cdeploy-builder`: one build, configured by environment (see `cdeploy_builder::env`).
//!
//! * **API mode** (ECS, the default there): `CDEPLOY_API`, `DEPLOYMENT_ID` and the one-time
//!   `BUILD_CLAIM`. The builder claims its build from the control plane and does
//!   everything through it (see `cdeploy_builder::remote`); it holds no credential.
//! * **Trusted mode** (run by hand): the seed's variables, with storage (`STORAGE_DIR` or
//!   `S3_*`) and optionally Redis (`REDIS_*`) written directly.
//!
//! Events are printed to stdout as JSON lines either way; exit code 0 means ready.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cdeploy_builder::sandbox::Sandbox;
use cdeploy_builder::{env, remote, DirectPublisher, EventSink, Outcome, Workspace};

use cdeploy_core::event::{Event, EventBody, Status, Step};
use cdeploy_core::logstream::{self, LogStream, Producer};
use cdeploy_core::s3::{Patience, S3Settings, S3Storage};
use cdeploy_core::storage::{DynStorage, LocalStorage};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Prints events as JSON lines, numbering them itself (this process is the only producer).
struct StdoutSink {
    seq: AtomicU64,
    out: Mutex<tokio::io::Stdout>,
}

#[async_trait]
impl EventSink for StdoutSink {
    async fn emit(&self, body: EventBody) {
        let event = Event::new(self.seq.fetch_add(1, Ordering::SeqCst) + 1, body);
        let mut line = serde_json::to_vec(&event).expect("events serialize");
        line.push(b'\n');
        let mut out = self.out.lock().await;
        let _ = out.write_all(&line).await;
        let _ = out.flush().await;
    }
}

/// Storage from `STORAGE_DIR`, or S3 from `S3_BUCKET_NAME` and the other `S3_*` variables.
async fn storage_from_env() -> Result<DynStorage, String> {
    if let Ok(dir) = std::env::var(env::STORAGE_DIR) {
        let s = LocalStorage::open(&dir).map_err(|e| format!("{}={dir}: {e}", env::STORAGE_DIR))?;
        return Ok(Arc::new(s));
    }
    match S3Settings::from_env(Patience::WRITER) {
        Some(settings) => Ok(Arc::new(S3Storage::connect(&settings?).await)),
        None => Err(format!(
            "no storage configured: set {} or {}",
            env::STORAGE_DIR,
            env::S3_BUCKET_NAME
        )),
    }
}

/// Events go to the control plane (API mode) or Redis when configured (and are printed
/// once stored), else stdout.
enum Sink {
    Stdout(StdoutSink),
    Redis(Box<RedisSink>),
    Api(Box<ApiSinkState>),
}

struct ApiSinkState {
    sink: remote::ApiSink,
    client: Arc<remote::Client>,
    /// SIGTERM ended the build: how to report it is decided in [`finish`].
    stopped: AtomicBool,
}

struct RedisSink {
    producer: Producer,
    stream: LogStream,
    id: String,
    /// SIGTERM ended the build: how to report it is decided in [`finish`].
    stopped: AtomicBool,
}

#[async_trait]
impl EventSink for Sink {
    async fn emit(&self, body: EventBody) {
        match self {
            Sink::Stdout(s) => s.emit(body).await,
            Sink::Redis(r) if body.terminal_status() == Some(Status::Canceled) => {
                r.stopped.store(true, Ordering::SeqCst)
            }
            Sink::Redis(r) => r.producer.send(body),
            Sink::Api(a) if body.terminal_status() == Some(Status::Canceled) => {
                a.stopped.store(true, Ordering::SeqCst)
            }
            Sink::Api(a) => a.sink.emit(body).await,
        }
    }
}

fn sink_from_env(deployment_id: Option<&str>) -> Result<Sink, String> {
    let stdout = || {
        Sink::Stdout(StdoutSink {
            seq: AtomicU64::new(0),
            out: Mutex::new(tokio::io::stdout()),
        })
    };
    let Some(url) = logstream::url_from_env(|k| std::env::var(k).ok()) else {
        return Ok(stdout());
    };
    let url = url?;
    // Without a deployment id nobody could follow the log; the configuration error that
    // follows is printed instead.
    let Some(id) = deployment_id else {
        return Ok(stdout());
    };
    let ca = std::env::var_os(env::REDIS_CA_CERT).map(std::path::PathBuf::from);
    let client = logstream::client(&url, ca.as_deref())?;
    let stream = LogStream::new(client).map_err(|e| format!("{}: {e}", logstream::redact(&url)))?;
    let print: logstream::OnAppended = Box::new(|e: &Event| {
        let mut line = serde_json::to_vec(e).expect("events serialize");
        line.push(b'\n');
        let _ = std::io::stdout().lock().write_all(&line);
    });
    Ok(Sink::Redis(Box::new(RedisSink {
        producer: Producer::start(stream.clone(), id.to_string(), print),
        stream,
        id: id.to_string(),
        stopped: AtomicBool::new(false),
    })))
}

#[tokio::main]
async fn main() -> ExitCode {
    // Build commands run as another uid; non-dumpable, this process's memory and
    // environment are not readable through /proc or ptrace by anything but root.
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        eprintln!("cdeploy-builder: cannot make this process non-dumpable: {e}");
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colors only on a terminal: a log file or a log service gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
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

/// Claims the build from the control plane and runs it through the builder API.
async fn api_mode(api: &str, claim: &str) -> ExitCode {
    let id = match std::env::var(env::DEPLOYMENT_ID)
        .ok()
        .filter(|id| cdeploy_core::ids::DeploymentId::parse(id).is_some())
    {
        Some(id) => id,
        None => {
            eprintln!(
                "cdeploy-builder: {} is missing or invalid",
                env::DEPLOYMENT_ID
            );
            return ExitCode::from(2);
        }
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
    let print: Box<dyn Fn(&Event) + Send + Sync> = Box::new(|e: &Event| {
        let mut line = serde_json::to_vec(e).expect("events serialize");
        line.push(b'\n');
        let _ = std::io::stdout().lock().write_all(&line);
    });
    let sink = Sink::Api(Box::new(ApiSinkState {
        sink: remote::ApiSink::start(client.clone(), print),
        client: client.clone(),
        stopped: AtomicBool::new(false),
    }));
    let storage = remote::ApiStorage {
        client: client.clone(),
    };
    let publisher = remote::ApiPublisher { client };
    build(spec, &storage, &publisher, sink).await
}

/// The seed's variables: storage (and Redis) written directly.
async fn trusted_mode() -> ExitCode {
    // The contract: a terminal status every time, even when nothing could start.
    let spec = env::spec_from(|k| std::env::var(k).ok()).map_err(|e| e.to_string());
    // The deployment's log, even when the rest of the configuration is wrong.
    let log_id = match &spec {
        Ok(s) => Some(s.deployment_id.clone()),
        Err(_) => std::env::var(env::DEPLOYMENT_ID)
            .ok()
            .filter(|id| cdeploy_core::ids::DeploymentId::parse(id).is_some()),
    };
    let sink = match sink_from_env(log_id.as_deref()) {
        Ok(sink) => sink,
        Err(e) => {
            eprintln!("cdeploy-builder: log bus: {e}");
            // Still say how it ended, where it can be seen.
            let sink = sink_from_env(None).expect("stdout needs no configuration");
            sink.emit(EventBody::failed(format!("configuration: log bus: {e}")))
                .await;
            return ExitCode::from(2);
        }
    };
    let configured = match spec {
        Ok(spec) => storage_from_env().await.map(|storage| (spec, storage)),
        Err(e) => Err(e),
    };
    let (spec, storage) = match configured {
        Ok(c) => c,
        Err(e) => return misconfigured(sink, &e).await,
    };
    let publisher = DirectPublisher(storage.as_ref());
    build(spec, storage.as_ref(), &publisher, sink).await
}

/// A configuration error ends the build before it starts, in its log and on stderr.
async fn misconfigured(sink: Sink, e: &str) -> ExitCode {
    sink.emit(EventBody::failed(format!("configuration: {e}")))
        .await;
    eprintln!("cdeploy-builder: {e}");
    finish(sink).await;
    ExitCode::from(2)
}

/// The sandbox, the workspace and the build itself; then the log's end.
async fn build(
    spec: cdeploy_builder::BuildSpec,
    storage: &dyn cdeploy_core::storage::Storage,
    publisher: &dyn cdeploy_builder::Publisher,
    sink: Sink,
) -> ExitCode {
    let work_dir = std::env::var(env::WORK_DIR)
        .ok()
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("cdeploy-build-{}", spec.deployment_id))
        });
    let sandbox = env::sandbox_options_from(|k| std::env::var(k).ok(), work_dir.join(".probe"))
        .map_err(|e| e.to_string())
        .and_then(|opts| {
            Sandbox::new(&opts).map_err(|e| {
                format!(
                    "no sandbox for build commands: {e}; set {}=1 to build without one",
                    env::UNSAFE_NO_SANDBOX
                )
            })
        });
    let sandbox = match sandbox {
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
    let cache = std::env::var(env::CACHE_DIR)
        .ok()
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    let toolchain_max_mb = match env::toolchain_max_mb(|k| std::env::var(k).ok()) {
        Ok(mb) => mb,
        Err(e) => return misconfigured(sink, &e.to_string()).await,
    };
    let toolchains = cdeploy_builder::toolchain::Toolchains::new(
        std::env::var(env::TOOLCHAIN_DIR)
            .ok()
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| cache.as_ref().map(|c| c.join("toolchains")))
            .unwrap_or_else(|| std::env::temp_dir().join("cdeploy-toolchains")),
        std::env::var(env::NPM_REGISTRY).ok(),
        toolchain_max_mb,
    );
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
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        cdeploy_core::shutdown_signal().await;
        on_signal.cancel();
    });
    let outcome = cdeploy_builder::run(&spec, &ws, storage, publisher, &sink, cancel).await;
    sandbox.release();
    finish(sink).await;
    match outcome {
        Outcome::Ready { .. } => ExitCode::SUCCESS,
        Outcome::Failed(_) | Outcome::Canceled => ExitCode::FAILURE,
    }
}

/// How long a builder stopped by SIGTERM waits for the server to say why (ECS's stop
/// reason) before it ends the log itself. Within Fargate's default 30 s stop timeout.
const STOP_WAIT: Duration = Duration::from_secs(15);

/// Ends the log of a build stopped by SIGTERM, then waits for the log to take the last
/// events (bounded by `REDIS_FLUSH_TIMEOUT`).
async fn finish(sink: Sink) {
    let secs = std::env::var(env::REDIS_FLUSH_TIMEOUT)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let unsent = match sink {
        Sink::Stdout(_) => return,
        Sink::Redis(r) => {
            if r.stopped.load(Ordering::SeqCst) {
                let cancel = r.stream.cancel_requested(&r.id).await.unwrap_or(false);
                let closed = || async { r.stream.closed(&r.id).await.unwrap_or(false) };
                if let Some(end) = stop_ending(cancel, closed).await {
                    r.producer.send(end);
                }
            }
            r.producer.finish(Duration::from_secs(secs)).await
        }
        Sink::Api(a) => {
            if a.stopped.load(Ordering::SeqCst) {
                let cancel = a.client.state().await.is_ok_and(|s| s.cancel_requested);
                // A capability refused: the deployment has ended, so its log is closed.
                let closed = || async {
                    match a.client.state().await {
                        Ok(s) => s.closed,
                        Err(e) => e.status == Some(401),
                    }
                };
                if let Some(end) = stop_ending(cancel, closed).await {
                    a.sink.emit(end).await;
                }
            }
            a.sink.finish(Duration::from_secs(secs)).await
        }
    };
    if unsent > 0 {
        eprintln!("cdeploy-builder: the log did not take the last {unsent} events within {secs}s; they are lost");
    }
}

/// How a build stopped by SIGTERM ends its log: `canceled` for a cancel through cdeploy
/// (marked before ECS stops the task); for any other stop the server's watcher has
/// ECS's reason, so wait for it (`None` once it closed the log), and say so ourselves
/// if it never does.
async fn stop_ending<F, Fut>(cancel: bool, closed: F) -> Option<EventBody>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if cancel {
        return Some(EventBody::status(Status::Canceled));
    }
    let deadline = tokio::time::Instant::now() + STOP_WAIT;
    loop {
        if closed().await {
            return None;
        }
        if tokio::time::Instant::now() >= deadline {
            return Some(EventBody::failed(
                "the build task was stopped (SIGTERM) before the build finished",
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
