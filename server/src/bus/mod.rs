//! The log bus: numbers each deployment's events, keeps their history, and fans them
//! out to live subscribers. [`MemoryBus`] is the embedded default; it appends every event
//! to `<data-dir>/logs/<id>.jsonl` as it happens (so a crash loses nothing) and archives
//! the whole log to storage (`deployments/<id>/log.jsonl`) after the terminal event.
//!
//! # Layout
//! * this file — the [`LogBus`] trait, its limits and errors, and [`MemoryBus`].
//! * [`redis`] — the Redis Streams bus shared by builders and server replicas.

pub mod redis;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cdeploy_core::event::{Event, EventBody};
use cdeploy_core::layout;
use cdeploy_storage::DynStorage;
use tokio::sync::broadcast;

/// A subscriber's start: everything after `after` so far, then live events (absent when
/// the deployment has already ended).
pub struct Subscription {
    pub backlog: Vec<Event>,
    pub live: Option<broadcast::Receiver<Event>>,
}

#[async_trait]
pub trait LogBus: Send + Sync + 'static {
    /// Appends an event. Returns `None` when the deployment's log is already closed by a
    /// terminal event (nothing may follow it).
    async fn publish(&self, id: &str, body: EventBody) -> Option<Event>;
    /// History after `after`, plus a live feed if the deployment is still running.
    async fn subscribe(&self, id: &str, after: u64) -> Subscription;
    /// History after `after` (used to fill gaps when a subscriber falls behind).
    async fn history(&self, id: &str, after: u64) -> Vec<Event>;
    /// Whether the bus can take events now (a deployment is not started otherwise).
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
    /// A cancel of a build running elsewhere is under way: its builder, stopped by
    /// SIGTERM, then reports `canceled` instead of an unexplained stop.
    async fn request_cancel(&self, _id: &str) -> Result<(), String> {
        Ok(())
    }
    /// The log has ended (its terminal event is in, written by whichever producer): keep
    /// a copy in storage. Buses that see every event archive on their own.
    async fn seal(&self, _id: &str) {}
    /// Appends an event a builder produced through the builder API: numbered by its
    /// producer (a retried request stores nothing twice), after `floor`, the highest
    /// `seq` the builder saw stored.
    async fn publish_from(
        &self,
        _id: &str,
        _producer: &str,
        _n: u64,
        _floor: u64,
        _ts: &str,
        _body: EventBody,
    ) -> Result<Option<Event>, BusError> {
        Err(BusError::Unsupported)
    }
    /// Writes back events the bus lost (with their numbers), for the builder API.
    async fn restore(&self, _id: &str, _events: &[Event]) -> Result<(), BusError> {
        Err(BusError::Unsupported)
    }
    /// Whether a cancel was requested, and whether the log is closed.
    async fn state(&self, _id: &str) -> Result<(bool, bool), BusError> {
        Err(BusError::Unsupported)
    }
}

/// Why a builder's event could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus holds less than the builder saw stored: it lost data (Redis restarted
    /// empty). The builder writes its log back, then retries.
    #[error("the log bus lost this deployment's log")]
    Lost,
    #[error("the log bus is unavailable: {0}")]
    Unavailable(String),
    #[error("this server's log bus (memory) does not take events from remote builders; run the Redis log bus")]
    Unsupported,
}

/// Writes a finished log to storage (`deployments/<id>/log.jsonl`), retrying for a while.
/// Returns whether it was stored.
pub async fn archive(storage: &DynStorage, id: &str, events: &[Event]) -> bool {
    let mut data = Vec::with_capacity(events.len() * 120);
    for e in events {
        serde_json::to_writer(&mut data, e).expect("events serialize");
        data.push(b'\n');
    }
    // One buffer; each retry clones a reference, not the log.
    let data = Bytes::from(data);
    let mut delay = Duration::from_millis(200);
    loop {
        match storage.put(&layout::log(id), data.clone()).await {
            Ok(()) => return true,
            Err(e) if delay < Duration::from_secs(30) => {
                tracing::warn!(deployment = %id, error = %e, "archiving the log failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                tracing::error!(deployment = %id, error = %e, "archiving the log failed");
                return false;
            }
        }
    }
}

/// The archived log of a deployment, if storage has one.
pub async fn read_archived(storage: &DynStorage, id: &str) -> Option<Vec<Event>> {
    match storage.get(&layout::log(id)).await {
        Ok(Some(data)) => Some(parse_jsonl(&data)),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(deployment = id, error = %e, "cannot read archived log");
            None
        }
    }
}

/// How much log one deployment may have: past either bound its output is dropped, after
/// one explicit notice. Status events (and so the terminal one) always go through.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    pub max_events: u64,
    pub max_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_events: 100_000,
            max_bytes: 16 << 20,
        }
    }
}

/// What a deployment's log has used of its [`LogLimits`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Budget {
    events: u64,
    bytes: u64,
    truncated: bool,
}

/// What to do with an event under the limits.
pub enum Admit {
    Keep,
    /// The limit is reached: store this notice in its place; drop the rest.
    Truncate(EventBody),
    Drop,
}

impl Budget {
    pub fn admit(&mut self, limits: &LogLimits, body: &EventBody) -> Admit {
        let size = match body {
            EventBody::Status { .. } => return Admit::Keep,
            EventBody::Log { line, .. } => line.len() as u64 + 64,
            EventBody::Progress { .. } => 64,
        };
        if self.truncated {
            return Admit::Drop;
        }
        if self.events + 1 > limits.max_events || self.bytes + size > limits.max_bytes {
            self.truncated = true;
            return Admit::Truncate(EventBody::system(
                body.step().unwrap_or(cdeploy_core::event::Step::Build),
                format!(
                    "[log truncated] this deployment's log reached its limit of {} lines or {} MiB: later output is not kept (server settings max_log_lines, max_log_mb)",
                    limits.max_events,
                    limits.max_bytes >> 20
                ),
            ));
        }
        self.events += 1;
        self.bytes += size;
        Admit::Keep
    }

    /// The budget of a log read back from its events (after a restart).
    pub fn of(events: &[Event], limits: &LogLimits) -> Budget {
        let mut b = Budget::default();
        for e in events {
            let _ = b.admit(limits, &e.body);
        }
        b
    }
}

struct Channel {
    /// The last `seq` handed out.
    last: u64,
    closed: bool,
    budget: Budget,
    tx: broadcast::Sender<Event>,
    file: Option<std::fs::File>,
}

/// The embedded log bus. A running deployment's log lives in its local file, not in
/// memory: subscribers read their backlog from the file, then follow a bounded live
/// feed (a subscriber that falls behind refills from the file).
pub struct MemoryBus {
    channels: Mutex<HashMap<String, Channel>>,
    storage: DynStorage,
    log_dir: PathBuf,
    limits: LogLimits,
    /// How long a finished log stays in memory before readers go to storage.
    linger: Duration,
}

impl MemoryBus {
    pub fn new(
        storage: DynStorage,
        log_dir: PathBuf,
        limits: LogLimits,
    ) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(&log_dir)?;
        Ok(Arc::new(MemoryBus {
            channels: Mutex::new(HashMap::new()),
            storage,
            log_dir,
            limits,
            linger: Duration::from_secs(120),
        }))
    }

    fn local_file(&self, id: &str) -> PathBuf {
        self.log_dir.join(format!("{id}.jsonl"))
    }

    fn read_local(&self, id: &str) -> Vec<Event> {
        parse_jsonl(&std::fs::read(self.local_file(id)).unwrap_or_default())
    }

    fn open_channel(&self, id: &str) -> Channel {
        // A deployment may resume its log after a restart: continue its sequence.
        let history = self.read_local(id);
        let closed = history.last().is_some_and(Event::is_terminal);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.local_file(id))
            .map_err(
                |e| tracing::error!(deployment = id, error = %e, "cannot open the local log file"),
            )
            .ok();
        Channel {
            last: history.last().map_or(0, |e| e.seq),
            closed,
            budget: Budget::of(&history, &self.limits),
            tx: broadcast::channel(1024).0,
            file,
        }
    }

    /// Writes the finished log to storage (streamed from its file), then forgets it
    /// after a while.
    fn archive(self: &Arc<Self>, id: String) {
        let bus = self.clone();
        tokio::spawn(async move {
            let file = bus.local_file(&id);
            let mut delay = Duration::from_millis(200);
            let archived = loop {
                match bus.storage.put_file(&layout::log(&id), &file).await {
                    Ok(()) => break true,
                    Err(e) if delay < Duration::from_secs(30) => {
                        tracing::warn!(deployment = %id, error = %e, "archiving the log failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(e) => {
                        tracing::error!(deployment = %id, error = %e, "archiving the log failed");
                        break false;
                    }
                }
            };
            tokio::time::sleep(bus.linger).await;
            bus.channels.lock().expect("not poisoned").remove(&id);
            if archived {
                let _ = tokio::fs::remove_file(&file).await;
            }
        });
    }

    /// Events after `after` from the local file (a running or lingering log).
    async fn read_after(&self, id: &str, after: u64, upto: u64) -> Vec<Event> {
        let file = self.local_file(id);
        let data = tokio::fs::read(&file).await.unwrap_or_default();
        parse_jsonl(&data)
            .into_iter()
            .filter(|e| e.seq > after && e.seq <= upto)
            .collect()
    }
}

pub fn parse_jsonl(data: &[u8]) -> Vec<Event> {
    data.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}

#[async_trait]
impl LogBus for Arc<MemoryBus> {
    async fn publish(&self, id: &str, body: EventBody) -> Option<Event> {
        let (event, finished) = {
            let mut channels = self.channels.lock().expect("not poisoned");
            let ch = channels
                .entry(id.to_string())
                .or_insert_with(|| self.open_channel(id));
            if ch.closed {
                tracing::debug!(
                    deployment = id,
                    ?body,
                    "event after the terminal one dropped"
                );
                return None;
            }
            let body = match ch.budget.admit(&self.limits, &body) {
                Admit::Keep => body,
                Admit::Truncate(notice) => notice,
                Admit::Drop => return None,
            };
            ch.last += 1;
            let event = Event::new(ch.last, body);
            if let Some(f) = ch.file.as_mut() {
                let mut line = serde_json::to_vec(&event).expect("events serialize");
                line.push(b'\n');
                if let Err(e) = f.write_all(&line) {
                    tracing::error!(deployment = id, error = %e, "cannot append to the local log file");
                }
            }
            // No receivers is fine: nobody is watching.
            let _ = ch.tx.send(event.clone());
            let finished = event.is_terminal();
            if finished {
                ch.closed = true;
                ch.file = None;
            }
            (event, finished)
        };
        if finished {
            self.archive(id.to_string());
        }
        Some(event)
    }

    async fn subscribe(&self, id: &str, after: u64) -> Subscription {
        let known = {
            let channels = self.channels.lock().expect("not poisoned");
            // Taken under the lock: events up to `last` are in the file, later ones
            // reach the receiver, so none falls between backlog and live feed.
            channels
                .get(id)
                .map(|ch| (ch.last, (!ch.closed).then(|| ch.tx.subscribe())))
        };
        match known {
            Some((last, live)) => Subscription {
                backlog: self.read_after(id, after, last).await,
                live,
            },
            None => Subscription {
                backlog: self.history(id, after).await,
                live: None,
            },
        }
    }

    async fn history(&self, id: &str, after: u64) -> Vec<Event> {
        let last = {
            let channels = self.channels.lock().expect("not poisoned");
            channels.get(id).map(|ch| ch.last)
        };
        if let Some(last) = last {
            return self.read_after(id, after, last).await;
        }
        let events = match read_archived(&self.storage, id).await {
            Some(events) => events,
            None => self.read_local(id),
        };
        events.into_iter().filter(|e| e.seq > after).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdeploy_core::event::{Status, Step};
    use cdeploy_storage::LocalStorage;

    #[tokio::test]
    async fn sequences_replay_and_archive() {
        let dir = tempfile::tempdir().unwrap();
        let storage: DynStorage = Arc::new(LocalStorage::open(dir.path().join("s")).unwrap());
        let bus = MemoryBus::new(
            storage.clone(),
            dir.path().join("logs"),
            LogLimits::default(),
        )
        .unwrap();
        let id = "dep1";
        bus.publish(id, EventBody::status(Status::Queued))
            .await
            .unwrap();
        let mut sub = bus.subscribe(id, 0).await;
        assert_eq!(sub.backlog.len(), 1);
        for i in 0..5 {
            bus.publish(id, EventBody::system(Step::Build, format!("line {i}")))
                .await
                .unwrap();
        }
        let end = bus.publish(id, EventBody::failed("boom")).await.unwrap();
        assert_eq!(end.seq, 7);
        assert!(bus
            .publish(id, EventBody::system(Step::Build, "late"))
            .await
            .is_none());
        let live = sub.live.as_mut().unwrap();
        for seq in 2..=7 {
            assert_eq!(live.recv().await.unwrap().seq, seq);
        }
        let resumed = bus.subscribe(id, 3).await;
        assert_eq!(
            resumed.backlog.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![4, 5, 6, 7]
        );
        assert!(resumed.live.is_none());
        // After a restart (new bus), history comes from the archive in storage.
        for _ in 0..50 {
            if storage.exists(&layout::log(id)).await.unwrap() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let bus2 = MemoryBus::new(storage, dir.path().join("logs2"), LogLimits::default()).unwrap();
        assert_eq!(bus2.history(id, 0).await.len(), 7);
    }

    #[tokio::test]
    async fn continues_a_crashed_log() {
        let dir = tempfile::tempdir().unwrap();
        let storage: DynStorage = Arc::new(LocalStorage::open(dir.path().join("s")).unwrap());
        let bus = MemoryBus::new(
            storage.clone(),
            dir.path().join("logs"),
            LogLimits::default(),
        )
        .unwrap();
        bus.publish("d", EventBody::status(Status::Building)).await;
        bus.publish("d", EventBody::system(Step::Build, "half way"))
            .await;
        drop(bus);
        let bus = MemoryBus::new(storage, dir.path().join("logs"), LogLimits::default()).unwrap();
        let e = bus
            .publish("d", EventBody::failed("server restarted"))
            .await
            .unwrap();
        assert_eq!(e.seq, 3);
        assert_eq!(bus.history("d", 0).await.len(), 3);
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;
    use cdeploy_core::event::{Status, Step};
    use cdeploy_storage::LocalStorage;

    #[tokio::test]
    async fn a_flood_is_cut_with_a_notice_and_still_ends() {
        let dir = tempfile::tempdir().unwrap();
        let storage: DynStorage = Arc::new(LocalStorage::open(dir.path().join("s")).unwrap());
        let limits = LogLimits {
            max_events: 10,
            max_bytes: 1 << 20,
        };
        let bus = MemoryBus::new(storage, dir.path().join("logs"), limits).unwrap();
        bus.publish("d", EventBody::status(Status::Building)).await;
        for i in 0..1000 {
            bus.publish("d", EventBody::system(Step::Build, format!("line {i}")))
                .await;
        }
        let end = bus.publish("d", EventBody::failed("done")).await.unwrap();
        let all = bus.history("d", 0).await;
        assert_eq!(all.len(), 13, "status, 10 lines, the notice, the end");
        assert_eq!(end.seq, 13);
        let notice = serde_json::to_string(&all[11]).unwrap();
        assert!(notice.contains("[log truncated]"), "{notice}");
        assert!(all.last().unwrap().is_terminal());
        // Bytes count too.
        let bus = MemoryBus::new(
            Arc::new(LocalStorage::open(dir.path().join("s2")).unwrap()),
            dir.path().join("logs2"),
            LogLimits {
                max_events: 1000,
                max_bytes: 1000,
            },
        )
        .unwrap();
        for _ in 0..100 {
            bus.publish("e", EventBody::system(Step::Build, "x".repeat(100)))
                .await;
        }
        assert!(bus.history("e", 0).await.len() < 10);
    }
}
