//! [`RedisBus`], the log bus on Redis Streams (distributed mode): builders append to a
//! deployment's stream through the builder API (or directly, with a [`Producer`]); every
//! server replica reads the same stream, so a log started through one replica can be
//! followed through any other.
//!
//! Each subscriber gets its own tail (`XREAD BLOCK` on a dedicated connection) that
//! reconnects and resumes from the last `seq` it delivered when Redis goes away. Finished
//! logs are archived to storage, which keeps them after the stream's TTL.
//!
//! # Layout
//! * this file — [`RedisBus`]: the server's side, limits and archiving included.
//! * [`stream`] — the Streams client: keys, the append and restore scripts, tails, and
//!   where the Redis URL comes from.
//! * [`producer`] — [`Producer`], a builder's writer through outages, and [`Backoff`].

pub mod producer;
pub mod stream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use cdeploy_core::event::{Event, EventBody};
use cdeploy_storage::DynStorage;
use tokio::sync::broadcast;

pub use producer::{Backoff, Producer};
pub use stream::{Appended, LogStream};

use crate::{
    archive, read_archived, Admit, Budget, BusError, LogBus, LogLimits, LogState, Published,
    SharedLog, Subscription,
};

/// How long the server keeps retrying one of its own events while Redis is away.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(20);

pub struct RedisBus {
    stream: LogStream,
    storage: DynStorage,
    /// This process as a producer, for dedupe of retried appends.
    producer: String,
    sent: AtomicU64,
    /// The highest `seq` this process has seen per running deployment: appended with
    /// each event so a Redis that came back empty never hands out a `seq` twice.
    floors: Mutex<HashMap<String, u64>>,
    limits: LogLimits,
    /// Log used per running deployment, as seen by this replica (a builder's requests
    /// spread over replicas share the limit only roughly).
    budgets: Mutex<HashMap<String, Budget>>,
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

impl RedisBus {
    pub fn new(stream: LogStream, storage: DynStorage, limits: LogLimits) -> Self {
        RedisBus {
            stream,
            storage,
            producer: format!("server-{}", cdeploy_core::ids::random_id(12)),
            sent: AtomicU64::new(0),
            floors: Mutex::new(HashMap::new()),
            limits,
            budgets: Mutex::new(HashMap::new()),
        }
    }

    /// The event to store in place of `body` under the log limits (`None`: drop it).
    fn admit(&self, id: &str, body: EventBody) -> Option<EventBody> {
        let mut budgets = self.budgets.lock().expect("not poisoned");
        match budgets
            .entry(id.to_string())
            .or_default()
            .admit(&self.limits, &body)
        {
            Admit::Keep => Some(body),
            Admit::Truncate(notice) => Some(notice),
            Admit::Drop => None,
        }
    }

    fn saw(&self, id: &str, seq: u64) {
        let mut floors = self.floors.lock().expect("not poisoned");
        let f = floors.entry(id.to_string()).or_default();
        *f = (*f).max(seq);
    }

    fn floor(&self, id: &str) -> u64 {
        let floors = self.floors.lock().expect("not poisoned");
        floors.get(id).copied().unwrap_or(0)
    }

    /// What an append did, as a [`Published`]: a stored event raises this replica's
    /// floor and, when it ends the log, seals it; a retried append that had landed is
    /// the event it was stored as.
    async fn stored(&self, id: &str, appended: Appended, ts: &str, body: EventBody) -> Published {
        match appended {
            Appended::Ok(event) => {
                self.saw(id, event.seq);
                if event.is_terminal() {
                    self.seal(id).await;
                }
                Published::Stored(event)
            }
            Appended::Duplicate(seq) => Published::Stored(Event {
                seq,
                ts: ts.to_string(),
                body,
            }),
            Appended::Closed => Published::Closed,
        }
    }

    /// A live feed of events after `after`, fed by a tail of its own.
    fn tail(&self, id: &str, after: u64) -> broadcast::Receiver<Event> {
        let (tx, rx) = broadcast::channel(4096);
        let stream = self.stream.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let mut cursor = after;
            let mut backoff = Backoff::default();
            let mut tail = None;
            while tx.receiver_count() > 0 {
                let reader = match &mut tail {
                    Some(t) => t,
                    None => match stream.tail().await {
                        Ok(t) => tail.insert(t),
                        Err(e) => {
                            tracing::warn!(deployment = %id, error = %e, "cannot reach Redis to follow the log; retrying");
                            backoff.wait().await;
                            continue;
                        }
                    },
                };
                match reader.read(&id, cursor).await {
                    Ok(events) => {
                        backoff.reset();
                        for e in events {
                            cursor = e.seq;
                            let end = e.is_terminal();
                            if tx.send(e).is_err() || end {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(deployment = %id, error = %e, "lost Redis while following the log; resuming");
                        tail = None;
                        backoff.wait().await;
                    }
                }
            }
        });
        rx
    }
}

#[async_trait]
impl LogBus for RedisBus {
    async fn publish(&self, id: &str, body: EventBody) -> Published {
        let Some(body) = self.admit(id, body) else {
            return Published::OverLimit;
        };
        let n = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        let ts = cdeploy_core::now_rfc3339();
        let deadline = tokio::time::Instant::now() + PUBLISH_PATIENCE;
        let mut backoff = Backoff::default();
        loop {
            match self
                .stream
                .append(id, Some((&self.producer, n)), self.floor(id), &ts, &body)
                .await
            {
                Ok(appended) => return self.stored(id, appended, &ts, body).await,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(deployment = id, error = %e, "cannot append to the log in Redis; retrying");
                    backoff.wait().await;
                }
                Err(e) if body.terminal_status().is_some() => {
                    // The end of a log is never given up on: followers wait for it.
                    // Keep trying in the background (the stored status is already final).
                    tracing::error!(deployment = id, error = %e, "Redis is unreachable; the final log event will be appended once it is back");
                    let (stream, producer, floor) =
                        (self.stream.clone(), self.producer.clone(), self.floor(id));
                    let (id, body) = (id.to_string(), body.clone());
                    tokio::spawn(async move {
                        use backon::Retryable;
                        // 1 s doubling to 30 s, for as long as it takes.
                        let policy = backon::ExponentialBuilder::default()
                            .with_min_delay(Duration::from_secs(1))
                            .with_max_delay(Duration::from_secs(30))
                            .without_max_times();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let appended = (|| stream.append(&id, Some((&producer, n)), floor, &ts, &body))
                            .retry(policy)
                            .notify(|e, _| {
                                tracing::warn!(deployment = %id, error = %e, "still cannot append the final log event");
                            })
                            .await;
                        if appended.is_ok() {
                            tracing::info!(deployment = %id, "appended the delayed final log event");
                        }
                    });
                    return Published::Unavailable { retrying: true };
                }
                Err(e) => {
                    tracing::error!(deployment = id, error = %e, ?body, "giving up on a log event: Redis is unreachable");
                    return Published::Unavailable { retrying: false };
                }
            }
        }
    }

    async fn subscribe(&self, id: &str, after: u64) -> Subscription {
        match self.stream.last_seq(id).await {
            Ok(Some(_)) => match self.stream.range_all(id, after).await {
                Ok(backlog) => {
                    if let Some(last) = backlog.last() {
                        self.saw(id, last.seq);
                    }
                    // Nothing new can also mean the caller has seen the end already.
                    let ended = match backlog.last() {
                        Some(last) => last.is_terminal(),
                        None => self.stream.closed(id).await.unwrap_or(false),
                    };
                    let from = backlog.last().map_or(after, |e| e.seq);
                    let live = (!ended).then(|| self.tail(id, from));
                    Subscription { backlog, live }
                }
                Err(e) => {
                    tracing::warn!(deployment = id, error = %e, "cannot read the log from Redis");
                    Subscription {
                        backlog: Vec::new(),
                        live: Some(self.tail(id, after)),
                    }
                }
            },
            // Expired (or never in Redis): the archive has it, or events are yet to come.
            Ok(None) | Err(_) => match read_archived(&self.storage, id).await {
                Some(events) => Subscription {
                    backlog: events.into_iter().filter(|e| e.seq > after).collect(),
                    live: None,
                },
                None => Subscription {
                    backlog: Vec::new(),
                    live: Some(self.tail(id, after)),
                },
            },
        }
    }

    async fn history(&self, id: &str, after: u64) -> Vec<Event> {
        if let Ok(Some(_)) = self.stream.last_seq(id).await {
            if let Ok(events) = self.stream.range_all(id, after).await {
                return events;
            }
        }
        read_archived(&self.storage, id)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.seq > after)
            .collect()
    }

    async fn check(&self) -> Result<(), BusError> {
        self.stream.ping().await.map_err(unavailable)
    }

    fn shared(&self) -> Option<&dyn SharedLog> {
        Some(self)
    }
}

#[async_trait]
impl SharedLog for RedisBus {
    async fn request_cancel(&self, id: &str) -> Result<(), BusError> {
        self.stream.request_cancel(id).await.map_err(unavailable)
    }

    async fn publish_from(
        &self,
        id: &str,
        producer: &str,
        n: u64,
        floor: u64,
        ts: &str,
        body: EventBody,
    ) -> Result<Published, BusError> {
        // Less than the builder saw stored: Redis lost it; the builder writes it back.
        if floor > 0
            && self
                .stream
                .last_seq(id)
                .await
                .map_err(unavailable)?
                .unwrap_or(0)
                < floor
        {
            return Err(BusError::Lost);
        }
        let Some(body) = self.admit(id, body) else {
            return Ok(Published::OverLimit);
        };
        // Builders' producer names never meet the servers' own.
        let producer = format!("api:{producer}");
        let floor = floor.max(self.floor(id));
        let appended = self
            .stream
            .append(id, Some((&producer, n)), floor, ts, &body)
            .await
            .map_err(unavailable)?;
        Ok(self.stored(id, appended, ts, body).await)
    }

    async fn restore(&self, id: &str, events: &[Event]) -> Result<(), BusError> {
        self.stream.restore(id, events).await.map_err(unavailable)?;
        if let Some(last) = events.last() {
            self.saw(id, last.seq);
        }
        Ok(())
    }

    async fn state(&self, id: &str) -> Result<LogState, BusError> {
        Ok(LogState {
            cancel_requested: self
                .stream
                .cancel_requested(id)
                .await
                .map_err(unavailable)?,
            closed: self.stream.closed(id).await.map_err(unavailable)?,
        })
    }

    async fn seal(&self, id: &str) {
        self.floors.lock().expect("not poisoned").remove(id);
        self.budgets.lock().expect("not poisoned").remove(id);
        // In the background: nobody waits on the archive, and S3 may be slow or retrying.
        let (stream, storage, id) = (self.stream.clone(), self.storage.clone(), id.to_string());
        tokio::spawn(async move {
            match stream.range_all(&id, 0).await {
                Ok(events) if events.last().is_some_and(Event::is_terminal) => {
                    archive(&storage, &id, &events).await;
                }
                Ok(_) => tracing::warn!(
                    deployment = %id,
                    "not archiving a log without its terminal event"
                ),
                Err(e) => {
                    tracing::error!(deployment = %id, error = %e, "cannot read the log to archive it")
                }
            }
        });
    }
}
