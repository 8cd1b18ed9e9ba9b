//! Appending through Redis outages: [`Producer`], a build's one writer of its log, and
//! [`Backoff`], the wait between retries every Redis user here shares.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cdeploy_core::event::{Event, EventBody};
use tokio::sync::mpsc;

use super::stream::{Appended, LogStream};

/// Waits between retries while Redis is away: 100 ms, doubling up to 2 s, jittered, for
/// as long as it takes.
#[derive(Debug)]
pub struct Backoff(backon::ExponentialBackoff);

impl Default for Backoff {
    fn default() -> Self {
        use backon::BackoffBuilder;
        Backoff(Self::policy().build())
    }
}

impl Backoff {
    const MAX: Duration = Duration::from_secs(2);

    fn policy() -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Self::MAX)
            .with_jitter()
            .without_max_times()
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.0.next().unwrap_or(Self::MAX)).await;
    }

    /// After a success: the next failure waits briefly again.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Appends one producer's events in order, retrying through Redis outages, so a build
/// never waits on the bus and loses nothing a restart of Redis would take with it.
///
/// Every message carries `(producer, n)`: a retry whose first attempt did land is not
/// stored twice. The producer keeps the log it has seen (what was there when it started,
/// plus its own appends); when Redis comes back empty it writes that log back first.
pub struct Producer {
    tx: mpsc::UnboundedSender<(String, EventBody)>,
    task: tokio::task::JoinHandle<()>,
    unsent: Arc<AtomicU64>,
}

/// Called with every event once Redis has stored it.
pub type OnAppended = Box<dyn Fn(&Event) + Send + Sync>;

impl Producer {
    pub fn start(stream: LogStream, id: String, on_appended: OnAppended) -> Producer {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, EventBody)>();
        let unsent = Arc::new(AtomicU64::new(0));
        let pending = unsent.clone();
        let producer = format!("builder-{}", cdeploy_core::ids::random_id(12));
        let task = tokio::spawn(async move {
            let mut history: Option<Vec<Event>> = None;
            let mut floor = 0;
            let mut n = 0;
            let mut check = false;
            while let Some((ts, body)) = rx.recv().await {
                n += 1;
                let mut backoff = Backoff::default();
                loop {
                    let attempt = async {
                        let known = match &mut history {
                            Some(h) => h,
                            None => {
                                let h = stream.range_all(&id, 0).await?;
                                floor = h.last().map_or(0, |e| e.seq);
                                history.insert(h)
                            }
                        };
                        if check && stream.last_seq(&id).await?.unwrap_or(0) < floor {
                            tracing::warn!(deployment = %id, events = known.len(), "Redis lost this log (restarted without its data?); writing it back");
                            stream.restore(&id, known).await?;
                        }
                        stream
                            .append(&id, Some((&producer, n)), floor, &ts, &body)
                            .await
                    };
                    match attempt.await {
                        Ok(appended) => {
                            check = false;
                            let event = match appended {
                                Appended::Ok(e) => Some(e),
                                Appended::Duplicate(seq) => Some(Event {
                                    seq,
                                    ts: ts.clone(),
                                    body: body.clone(),
                                }),
                                Appended::Closed => {
                                    tracing::debug!(deployment = %id, "the log is closed; event dropped");
                                    None
                                }
                            };
                            if let Some(e) = event {
                                floor = floor.max(e.seq);
                                on_appended(&e);
                                history.get_or_insert_with(Vec::new).push(e);
                            }
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(deployment = %id, error = %e, "the log bus is unavailable; retrying");
                            check = true;
                            backoff.wait().await;
                        }
                    }
                }
                pending.fetch_sub(1, Ordering::SeqCst);
            }
        });
        Producer { tx, task, unsent }
    }

    pub fn send(&self, body: EventBody) {
        self.unsent.fetch_add(1, Ordering::SeqCst);
        if self.tx.send((cdeploy_core::now_rfc3339(), body)).is_err() {
            self.unsent.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits until every event is stored, at most `timeout`. Returns how many were not.
    pub async fn finish(self, timeout: Duration) -> u64 {
        let Producer { tx, task, unsent } = self;
        drop(tx);
        let abort = task.abort_handle();
        if tokio::time::timeout(timeout, task).await.is_err() {
            abort.abort();
        }
        unsent.load(Ordering::SeqCst)
    }
}
