//! The log bus: numbers each deployment's events, keeps their history, and fans them
//! out to live subscribers. [`MemoryBus`] is the embedded default; it appends every event
//! to `<data-dir>/logs/<id>.jsonl` as it happens (so a crash loses nothing) and archives
//! the whole log to storage (`deployments/<id>/log.jsonl`) after the terminal event.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cdeploy_core::event::{Event, EventBody};
use cdeploy_core::layout;
use cdeploy_core::storage::DynStorage;
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

struct Channel {
    history: Vec<Event>,
    closed: bool,
    tx: broadcast::Sender<Event>,
    file: Option<std::fs::File>,
}

pub struct MemoryBus {
    channels: Mutex<HashMap<String, Channel>>,
    storage: DynStorage,
    log_dir: PathBuf,
    /// How long a finished log stays in memory before readers go to storage.
    linger: Duration,
}

impl MemoryBus {
    pub fn new(storage: DynStorage, log_dir: PathBuf) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(&log_dir)?;
        Ok(Arc::new(MemoryBus {
            channels: Mutex::new(HashMap::new()),
            storage,
            log_dir,
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
            history,
            closed,
            tx: broadcast::channel(4096).0,
            file,
        }
    }

    /// Writes the finished log to storage, then forgets it after a while.
    fn archive(self: &Arc<Self>, id: String, events: Vec<Event>) {
        let bus = self.clone();
        tokio::spawn(async move {
            let archived = archive(&bus.storage, &id, &events).await;
            tokio::time::sleep(bus.linger).await;
            bus.channels.lock().expect("not poisoned").remove(&id);
            if archived {
                let _ = tokio::fs::remove_file(bus.local_file(&id)).await;
            }
        });
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
            let event = Event::new(ch.history.len() as u64 + 1, body);
            if let Some(f) = ch.file.as_mut() {
                let mut line = serde_json::to_vec(&event).expect("events serialize");
                line.push(b'\n');
                if let Err(e) = f.write_all(&line) {
                    tracing::error!(deployment = id, error = %e, "cannot append to the local log file");
                }
            }
            ch.history.push(event.clone());
            // No receivers is fine: nobody is watching.
            let _ = ch.tx.send(event.clone());
            let finished = event.is_terminal().then(|| {
                ch.closed = true;
                ch.file = None;
                ch.history.clone()
            });
            (event, finished)
        };
        if let Some(events) = finished {
            self.archive(id.to_string(), events);
        }
        Some(event)
    }

    async fn subscribe(&self, id: &str, after: u64) -> Subscription {
        {
            let channels = self.channels.lock().expect("not poisoned");
            if let Some(ch) = channels.get(id) {
                // Taken under the lock: no event can fall between backlog and live feed.
                let backlog = ch
                    .history
                    .iter()
                    .filter(|e| e.seq > after)
                    .cloned()
                    .collect();
                let live = (!ch.closed).then(|| ch.tx.subscribe());
                return Subscription { backlog, live };
            }
        }
        Subscription {
            backlog: self.history(id, after).await,
            live: None,
        }
    }

    async fn history(&self, id: &str, after: u64) -> Vec<Event> {
        let in_memory = {
            let channels = self.channels.lock().expect("not poisoned");
            channels.get(id).map(|ch| {
                ch.history
                    .iter()
                    .filter(|e| e.seq > after)
                    .cloned()
                    .collect::<Vec<_>>()
            })
        };
        if let Some(events) = in_memory {
            return events;
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
    use cdeploy_core::storage::LocalStorage;

    #[tokio::test]
    async fn sequences_replay_and_archive() {
        let dir = tempfile::tempdir().unwrap();
        let storage: DynStorage = Arc::new(LocalStorage::open(dir.path().join("s")).unwrap());
        let bus = MemoryBus::new(storage.clone(), dir.path().join("logs")).unwrap();
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
        let bus2 = MemoryBus::new(storage, dir.path().join("logs2")).unwrap();
        assert_eq!(bus2.history(id, 0).await.len(), 7);
    }

    #[tokio::test]
    async fn continues_a_crashed_log() {
        let dir = tempfile::tempdir().unwrap();
        let storage: DynStorage = Arc::new(LocalStorage::open(dir.path().join("s")).unwrap());
        let bus = MemoryBus::new(storage.clone(), dir.path().join("logs")).unwrap();
        bus.publish("d", EventBody::status(Status::Building)).await;
        bus.publish("d", EventBody::system(Step::Build, "half way"))
            .await;
        drop(bus);
        let bus = MemoryBus::new(storage, dir.path().join("logs")).unwrap();
        let e = bus
            .publish("d", EventBody::failed("server restarted"))
            .await
            .unwrap();
        assert_eq!(e.seq, 3);
        assert_eq!(bus.history("d", 0).await.len(), 3);
    }
}
