//! [`MemoryBus`], the embedded log bus: it appends every event to
//! `<data-dir>/logs/<id>.jsonl` as it happens (so a crash loses nothing), feeds live
//! subscribers from a bounded channel, and archives the whole log to storage
//! (`deployments/<id>/log.jsonl`) after the terminal event.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cdeploy_core::event::{Event, EventBody};
use cdeploy_core::layout;
use cdeploy_storage::DynStorage;
use tokio::sync::broadcast;

use crate::{
    parse_jsonl, read_archived, Admit, Budget, BusError, LogBus, LogLimits, Published, Subscription,
};

struct Channel {
    /// The last `seq` handed out.
    last: u64,
    closed: bool,
    budget: Budget,
    /// The live feed; dropped with the terminal event. Its buffer holds the newest 1,024
    /// events (a megabyte or more of log lines): a finished log lingering for readers
    /// must not keep it, or every build finishing at once holds one each (subscribers
    /// still draining it keep it until they are done).
    tx: Option<broadcast::Sender<Event>>,
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
            tx: (!closed).then(|| broadcast::channel(1024).0),
            file,
        }
    }

    /// Writes the finished log to storage (streamed from its file), then forgets it
    /// after a while.
    fn archive(self: &Arc<Self>, id: String) {
        let bus = self.clone();
        tokio::spawn(async move {
            let file = bus.local_file(&id);
            let key = layout::log(&id);
            let archived =
                crate::archive::with_retries(&id, || bus.storage.put_file(&key, &file)).await;
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

#[async_trait]
impl LogBus for Arc<MemoryBus> {
    async fn publish(&self, id: &str, body: EventBody) -> Published {
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
                return Published::Closed;
            }
            let body = match ch.budget.admit(&self.limits, &body) {
                Admit::Keep => body,
                Admit::Truncate(notice) => notice,
                Admit::Drop => return Published::OverLimit,
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
            if let Some(tx) = &ch.tx {
                let _ = tx.send(event.clone());
            }
            let finished = event.is_terminal();
            if finished {
                ch.closed = true;
                ch.file = None;
                ch.tx = None;
            }
            (event, finished)
        };
        if finished {
            self.archive(id.to_string());
        }
        Published::Stored(event)
    }

    async fn subscribe(&self, id: &str, after: u64) -> Subscription {
        let known = {
            let channels = self.channels.lock().expect("not poisoned");
            // Taken under the lock: events up to `last` are in the file, later ones
            // reach the receiver, so none falls between backlog and live feed.
            channels
                .get(id)
                .map(|ch| (ch.last, ch.tx.as_ref().map(|tx| tx.subscribe())))
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

    async fn check(&self) -> Result<(), BusError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdeploy_core::event::{Status, Step};
    use cdeploy_storage::LocalStorage;

    /// Local storage in `dir/name`.
    fn local(dir: &std::path::Path, name: &str) -> DynStorage {
        Arc::new(LocalStorage::open(dir.join(name)).unwrap())
    }

    #[tokio::test]
    async fn sequences_replay_and_archive() {
        let dir = tempfile::tempdir().unwrap();
        let storage = local(dir.path(), "s");
        let bus = MemoryBus::new(
            storage.clone(),
            dir.path().join("logs"),
            LogLimits::default(),
        )
        .unwrap();
        let id = "dep1";
        bus.publish(id, EventBody::status(Status::Queued))
            .await
            .event()
            .unwrap();
        let mut sub = bus.subscribe(id, 0).await;
        assert_eq!(sub.backlog.len(), 1);
        for i in 0..5 {
            bus.publish(id, EventBody::system(Step::Build, format!("line {i}")))
                .await
                .event()
                .unwrap();
        }
        let end = bus
            .publish(id, EventBody::failed("boom"))
            .await
            .event()
            .unwrap();
        assert_eq!(end.seq, 7);
        assert_eq!(
            bus.publish(id, EventBody::system(Step::Build, "late"))
                .await,
            Published::Closed
        );
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
        let storage = local(dir.path(), "s");
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
            .event()
            .unwrap();
        assert_eq!(e.seq, 3);
        assert_eq!(bus.history("d", 0).await.len(), 3);
    }

    #[tokio::test]
    async fn a_flood_is_cut_with_a_notice_and_still_ends() {
        let dir = tempfile::tempdir().unwrap();
        let storage = local(dir.path(), "s");
        let limits = LogLimits {
            max_events: 10,
            max_bytes: 1 << 20,
        };
        let bus = MemoryBus::new(storage, dir.path().join("logs"), limits).unwrap();
        bus.publish("d", EventBody::status(Status::Building)).await;
        let mut over = 0;
        for i in 0..1000 {
            let published = bus
                .publish("d", EventBody::system(Step::Build, format!("line {i}")))
                .await;
            over += usize::from(published == Published::OverLimit);
        }
        assert_eq!(over, 1000 - 11, "10 lines and the notice are stored");
        let end = bus
            .publish("d", EventBody::failed("done"))
            .await
            .event()
            .unwrap();
        let all = bus.history("d", 0).await;
        assert_eq!(all.len(), 13, "status, 10 lines, the notice, the end");
        assert_eq!(end.seq, 13);
        let notice = serde_json::to_string(&all[11]).unwrap();
        assert!(notice.contains("[log truncated]"), "{notice}");
        assert!(all.last().unwrap().is_terminal());
        // Bytes count too.
        let bus = MemoryBus::new(
            local(dir.path(), "s2"),
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
