//! Where a standalone builder's events go: the control plane's builder API (API mode),
//! Redis Streams when a trusted builder is given one, else stdout. Events stored
//! through the API or Redis are printed to stdout too, as JSON lines, once stored.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use cdeploy_core::event::{Event, EventBody, Status};
use cdeploy_logbus::redis::stream::{self as logstream, LogStream};
use cdeploy_logbus::redis::Producer;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::{env, remote, EventSink};

/// The sink of a standalone build.
pub enum JobSink {
    Stdout(StdoutSink),
    Redis(Box<RedisSink>),
    Api(Box<ApiSinkState>),
}

/// Prints events as JSON lines, numbering them itself (this process is the only producer).
pub struct StdoutSink {
    seq: AtomicU64,
    out: Mutex<tokio::io::Stdout>,
}

/// Events through the builder API.
pub struct ApiSinkState {
    pub(super) sink: remote::ApiSink,
    pub(super) client: Arc<remote::Client>,
    /// SIGTERM ended the build: how to report it is decided in [`super::stop::finish`].
    pub(super) stopped: AtomicBool,
}

/// Events appended to the deployment's Redis stream.
pub struct RedisSink {
    pub(super) producer: Producer,
    pub(super) stream: LogStream,
    pub(super) id: String,
    /// SIGTERM ended the build: how to report it is decided in [`super::stop::finish`].
    pub(super) stopped: AtomicBool,
}

/// Why the log bus could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum LogBusError {
    /// The `REDIS_*` variables are invalid, or no client can be made for them (the
    /// message says which; URLs redacted).
    #[error(transparent)]
    Setup(#[from] logstream::SetupError),
    #[error("{url}: {source}")]
    Connect {
        /// Redacted.
        url: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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

#[async_trait]
impl EventSink for JobSink {
    async fn emit(&self, body: EventBody) {
        match self {
            JobSink::Stdout(s) => s.emit(body).await,
            JobSink::Redis(r) if body.terminal_status() == Some(Status::Canceled) => {
                r.stopped.store(true, Ordering::SeqCst)
            }
            JobSink::Redis(r) => r.producer.send(body),
            JobSink::Api(a) if body.terminal_status() == Some(Status::Canceled) => {
                a.stopped.store(true, Ordering::SeqCst)
            }
            JobSink::Api(a) => a.sink.emit(body).await,
        }
    }
}

/// Prints a stored event to stdout as a JSON line.
fn print_stored(e: &Event) {
    let mut line = serde_json::to_vec(e).expect("events serialize");
    line.push(b'\n');
    let _ = std::io::stdout().lock().write_all(&line);
}

impl JobSink {
    /// Events printed to stdout only.
    pub fn stdout() -> JobSink {
        JobSink::Stdout(StdoutSink {
            seq: AtomicU64::new(0),
            out: Mutex::new(tokio::io::stdout()),
        })
    }

    /// Events through the builder API, printed once stored.
    pub fn api(client: Arc<remote::Client>) -> JobSink {
        JobSink::Api(Box::new(ApiSinkState {
            sink: remote::ApiSink::start(client.clone(), Box::new(print_stored)),
            client,
            stopped: AtomicBool::new(false),
        }))
    }

    /// Redis when `REDIS_*` is set and the deployment is known, else stdout.
    pub fn from_env(deployment_id: Option<&str>) -> Result<JobSink, LogBusError> {
        let Some(url) = logstream::url_from_env(|k| std::env::var(k).ok()) else {
            return Ok(Self::stdout());
        };
        let url = url?;
        // Without a deployment id nobody could follow the log; the configuration error
        // that follows is printed instead.
        let Some(id) = deployment_id else {
            return Ok(Self::stdout());
        };
        let ca = std::env::var_os(env::REDIS_CA_CERT).map(std::path::PathBuf::from);
        let client = logstream::client(&url, ca.as_deref())?;
        let stream = LogStream::new(client).map_err(|e| LogBusError::Connect {
            url: logstream::redact(&url),
            source: Box::new(e),
        })?;
        Ok(JobSink::Redis(Box::new(RedisSink {
            producer: Producer::start(stream.clone(), id.to_string(), Box::new(print_stored)),
            stream,
            id: id.to_string(),
            stopped: AtomicBool::new(false),
        })))
    }
}
