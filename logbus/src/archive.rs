//! Finished logs in storage (`deployments/<id>/log.jsonl`, one event per line): a bus
//! archives a log after its terminal event, and reads it back once the log has left the
//! bus (a restart, a Redis stream past its TTL).

use std::future::Future;
use std::time::Duration;

use backon::Retryable;
use bytes::Bytes;
use cdeploy_core::event::Event;
use cdeploy_core::layout;
use cdeploy_storage::{DynStorage, StorageError};

/// Stores a finished log with `put`, retrying on the archive policy: 200 ms doubling,
/// jittered, 8 retries (one to two minutes in all). Returns whether it was stored.
pub(crate) async fn with_retries<F, Fut>(id: &str, put: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), StorageError>>,
{
    let policy = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_times(8)
        .with_jitter();
    let stored = put
        .retry(policy)
        .notify(|e, after| {
            tracing::warn!(deployment = %id, error = %e, ?after, "archiving the log failed; retrying");
        })
        .await;
    match stored {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(deployment = %id, error = %e, "archiving the log failed");
            false
        }
    }
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
    let key = layout::log(id);
    with_retries(id, || storage.put(&key, data.clone())).await
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

/// Events of a JSON-lines log; a line that does not parse (a torn last write) is skipped.
pub fn parse_jsonl(data: &[u8]) -> Vec<Event> {
    data.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}
