//! `cdeploy-builder`: one build, configured by environment (see `cdeploy_builder::env`).
//! Events are printed to stdout as JSON lines; exit code 0 means ready.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use cdeploy_builder::{env, EventSink, Outcome};
use cdeploy_core::event::{Event, EventBody};
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

fn storage_from_env() -> Result<DynStorage, String> {
    if let Ok(dir) = std::env::var(env::STORAGE_DIR) {
        let s = LocalStorage::open(&dir).map_err(|e| format!("{}={dir}: {e}", env::STORAGE_DIR))?;
        return Ok(Arc::new(s));
    }
    if std::env::var_os(env::S3_BUCKET_NAME).is_some() {
        return Err("S3 storage is not available in this build of cdeploy-builder yet (distributed mode); set STORAGE_DIR".into());
    }
    Err(format!("no storage configured: set {}", env::STORAGE_DIR))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    if std::env::var_os(env::REDIS_URL).is_some() || std::env::var_os(env::REDIS_HOST).is_some() {
        eprintln!("cdeploy-builder: the Redis log bus is not available in this build yet; events go to stdout");
    }
    let sink = StdoutSink {
        seq: AtomicU64::new(0),
        out: Mutex::new(tokio::io::stdout()),
    };
    // The contract: a terminal status every time, even when nothing could start.
    let configured = env::spec_from(|k| std::env::var(k).ok())
        .map_err(|e| e.to_string())
        .and_then(|spec| storage_from_env().map(|storage| (spec, storage)));
    let (spec, storage) = match configured {
        Ok(c) => c,
        Err(e) => {
            sink.emit(EventBody::failed(format!("configuration: {e}")))
                .await;
            eprintln!("cdeploy-builder: {e}");
            return ExitCode::from(2);
        }
    };
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        cdeploy_core::shutdown_signal().await;
        on_signal.cancel();
    });
    match cdeploy_builder::run(&spec, storage.as_ref(), &sink, cancel).await {
        Outcome::Ready { .. } => ExitCode::SUCCESS,
        Outcome::Failed(_) | Outcome::Canceled => ExitCode::FAILURE,
    }
}
