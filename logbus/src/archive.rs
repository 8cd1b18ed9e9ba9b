//! Finished logs in storage (`deployments/<id>/log.jsonl`, one event per line): a bus
//! archives a log after its terminal event, and reads it back once the log has left the
//! bus (a restart, a Redis stream past its TTL).

use std::time::Duration;

use bytes::Bytes;
use cdeploy_core::event::Event;
use cdeploy_core::layout;
use cdeploy_storage::DynStorage;

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

/// Events of a JSON-lines log; a line that does not parse (a torn last write) is skipped.
pub fn parse_jsonl(data: &[u8]) -> Vec<Event> {
    data.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}
