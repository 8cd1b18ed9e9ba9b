//! An API builder's log: events posted in order, in batches, through outages, and
//! written back when the log bus lost what it had stored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cdeploy_core::api::{self, ProducedEvent};
use cdeploy_core::event::{Event, EventBody};
use tokio::sync::mpsc;

use super::{CallError, Client};
use crate::EventSink;

/// Events in order through the API. Sending never waits: a background task posts
/// batches, retries through outages, and when the server says the log bus lost what it
/// had stored (Redis restarted empty) writes back the log it has seen, with the
/// original numbers, before going on.
pub struct ApiSink {
    tx: Mutex<Option<mpsc::Sender<(String, EventBody)>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    unsent: Arc<AtomicU64>,
}

/// Most events in one request.
const BATCH: usize = 200;

impl ApiSink {
    pub fn start(client: Arc<Client>, on_stored: Box<dyn Fn(&Event) + Send + Sync>) -> ApiSink {
        // Bounded: a build printing faster than the API takes its log waits for it.
        let (tx, rx) = mpsc::channel::<(String, EventBody)>(4096);
        let unsent = Arc::new(AtomicU64::new(0));
        let delivery = Delivery {
            client,
            producer: format!("builder-{}", cdeploy_core::ids::random_id(12)),
            on_stored,
            history: Vec::new(),
            n: 0,
            closed: false,
        };
        let task = tokio::spawn(delivery.run(rx, unsent.clone()));
        ApiSink {
            tx: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
            unsent,
        }
    }

    /// Waits until every event is stored, at most `timeout`. Returns how many were not.
    pub async fn finish(&self, timeout: Duration) -> u64 {
        drop(self.tx.lock().expect("not poisoned").take());
        let task = self.task.lock().expect("not poisoned").take();
        if let Some(task) = task {
            let abort = task.abort_handle();
            if tokio::time::timeout(timeout, task).await.is_err() {
                abort.abort();
            }
        }
        self.unsent.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl EventSink for ApiSink {
    async fn emit(&self, body: EventBody) {
        let tx = self.tx.lock().expect("not poisoned").clone();
        if let Some(tx) = tx {
            self.unsent.fetch_add(1, Ordering::SeqCst);
            if tx.send((cdeploy_core::now_rfc3339(), body)).await.is_err() {
                self.unsent.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// The background task of an [`ApiSink`]: posts batches in order, numbered by this
/// producer, until the log is closed.
struct Delivery {
    client: Arc<Client>,
    /// This builder's producer name: the server stores each numbered message once.
    producer: String,
    on_stored: Box<dyn Fn(&Event) + Send + Sync>,
    /// The log as stored so far, to write back if the log bus loses it.
    history: Vec<Event>,
    /// Messages numbered so far.
    n: u64,
    /// The log ended (its terminal event is stored, or the deployment is over): what
    /// comes after is dropped.
    closed: bool,
}

impl Delivery {
    async fn run(mut self, mut rx: mpsc::Receiver<(String, EventBody)>, pending: Arc<AtomicU64>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            let count = batch.len() as u64;
            if !self.closed {
                self.send(batch).await;
            }
            pending.fetch_sub(count, Ordering::SeqCst);
        }
    }

    /// Posts one batch until it is stored (or the deployment is over), writing the log
    /// back first when the log bus lost it.
    async fn send(&mut self, batch: Vec<(String, EventBody)>) {
        let events: Vec<ProducedEvent> = batch
            .into_iter()
            .map(|(ts, body)| {
                self.n += 1;
                ProducedEvent {
                    n: self.n,
                    ts,
                    body,
                }
            })
            .collect();
        let mut delay = Duration::from_millis(200);
        loop {
            let floor = self.history.last().map_or(0, |e| e.seq);
            let req = api::EventBatch {
                producer: self.producer.clone(),
                floor,
                events: events.clone(),
            };
            match self
                .client
                .post_json("publishing the log", "/events", &req)
                .await
            {
                Ok(body) => {
                    self.stored(&body);
                    return;
                }
                Err(e) if e.code == api::codes::LOG_LOST => {
                    tracing::warn!("the log bus lost this log; writing it back");
                    if let Err(e) = self.restore().await {
                        tracing::warn!(error = %e, "cannot restore the log yet");
                        tokio::time::sleep(delay).await;
                    }
                }
                // The deployment ended (its capability expired): nothing more will be
                // taken.
                Err(e) if e.status == Some(401) || e.status == Some(410) => {
                    tracing::warn!(error = %e, "the deployment is over; log events dropped");
                    self.closed = true;
                    return;
                }
                // Hand-written rather than a backon policy: besides "retry", a failure
                // here can mean "write the log back, then retry" or "stop for good",
                // and the wait belongs to the first only.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot publish log events; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Takes in what the server stored of a batch.
    fn stored(&mut self, body: &[u8]) {
        let stored: api::EventsStored = serde_json::from_slice(body).unwrap_or_default();
        for e in stored.events {
            (self.on_stored)(&e);
            self.closed |= e.is_terminal();
            self.history.push(e);
        }
    }

    /// Writes back the log stored so far, with its original numbers.
    async fn restore(&self) -> Result<Bytes, CallError> {
        let restore = api::EventRestore {
            events: self.history.clone(),
        };
        self.client
            .post_json("restoring the log", "/restore", &restore)
            .await
    }
}
