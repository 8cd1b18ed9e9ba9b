//! `cdeploy-builder`: one build, configured by environment (see `cdeploy_builder::env`).
//! Events go to the deployment's Redis stream when Redis is configured, and are printed
//! to stdout as JSON lines either way; exit code 0 means ready.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cdeploy_builder::sandbox::Sandbox;
use cdeploy_builder::{env, EventSink, Outcome, Workspace};

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

/// Events go to Redis when it is configured (and are printed once stored), else stdout.
enum Sink {
    Stdout(StdoutSink),
    Redis(Box<RedisSink>),
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
    // environment (storage and Redis settings) are not readable through /proc or ptrace
    // by anything but root.
    // SAFETY: prctl with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
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
        Err(e) => {
            sink.emit(EventBody::failed(format!("configuration: {e}")))
                .await;
            eprintln!("cdeploy-builder: {e}");
            finish(sink).await;
            return ExitCode::from(2);
        }
    };
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
        Err(e) => {
            sink.emit(EventBody::failed(format!("configuration: {e}")))
                .await;
            eprintln!("cdeploy-builder: {e}");
            finish(sink).await;
            return ExitCode::from(2);
        }
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
    let ws = Workspace {
        work_dir,
        project_cache: cache.as_ref().map(|c| c.join("projects").join(&spec.slug)),
        modules_cache: cache.as_ref().map(|c| c.join("modules")),
        path: sandbox.build_path(
            &std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        ),
        sandbox: &sandbox,
    };
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        cdeploy_core::shutdown_signal().await;
        on_signal.cancel();
    });
    let outcome = cdeploy_builder::run(&spec, &ws, storage.as_ref(), &sink, cancel).await;
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

/// Ends the log of a build stopped by SIGTERM, then waits for Redis to take the last
/// events (bounded by `REDIS_FLUSH_TIMEOUT`).
async fn finish(sink: Sink) {
    let Sink::Redis(r) = sink else {
        return;
    };
    if r.stopped.load(Ordering::SeqCst) {
        // A cancel through cdeploy is marked in the log bus before ECS stops the task;
        // any other stop is explained by the server's watcher, which has ECS's reason.
        let end = if r.stream.cancel_requested(&r.id).await.unwrap_or(false) {
            Some(EventBody::status(Status::Canceled))
        } else {
            let deadline = tokio::time::Instant::now() + STOP_WAIT;
            loop {
                if r.stream.closed(&r.id).await.unwrap_or(false) {
                    break None;
                }
                if tokio::time::Instant::now() >= deadline {
                    break Some(EventBody::failed(
                        "the build task was stopped (SIGTERM) before the build finished",
                    ));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        };
        if let Some(end) = end {
            r.producer.send(end);
        }
    }
    let secs = std::env::var(env::REDIS_FLUSH_TIMEOUT)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let unsent = r.producer.finish(Duration::from_secs(secs)).await;
    if unsent > 0 {
        eprintln!("cdeploy-builder: Redis did not take the last {unsent} log events within {secs}s; they are lost");
    }
}
