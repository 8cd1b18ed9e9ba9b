//! The end of a standalone build's log, and the SIGTERM protocol. A builder stopped by
//! SIGTERM (its run canceled, see [`super`]) does not say `canceled` itself: a cancel
//! through cdeploy marks the log before ECS stops the task, and any other stop is for
//! the server's watcher to explain with ECS's reason. The builder waits for that, and
//! writes the end itself only if nobody does.

use std::sync::atomic::Ordering;
use std::time::Duration;

use cdeploy_core::event::{EventBody, Status};

use super::sinks::JobSink;
use crate::{env, EventSink};

/// How long a builder stopped by SIGTERM waits for the server to say why (ECS's stop
/// reason) before it ends the log itself. Within Fargate's default 30 s stop timeout.
const STOP_WAIT: Duration = Duration::from_secs(15);

/// Ends the log of a build stopped by SIGTERM, then waits for the log to take the last
/// events (bounded by `REDIS_FLUSH_TIMEOUT`).
pub async fn finish(sink: JobSink) {
    let secs = std::env::var(env::REDIS_FLUSH_TIMEOUT)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let unsent = match sink {
        JobSink::Stdout(_) => return,
        JobSink::Redis(r) => {
            if r.stopped.load(Ordering::SeqCst) {
                let cancel = r.stream.cancel_requested(&r.id).await.unwrap_or(false);
                let closed = || async { r.stream.closed(&r.id).await.unwrap_or(false) };
                if let Some(end) = stop_ending(cancel, closed).await {
                    r.producer.send(end);
                }
            }
            r.producer.finish(Duration::from_secs(secs)).await
        }
        JobSink::Api(a) => {
            if a.stopped.load(Ordering::SeqCst) {
                let cancel = a.client.state().await.is_ok_and(|s| s.cancel_requested);
                // A capability refused: the deployment has ended, so its log is closed.
                let closed = || async {
                    match a.client.state().await {
                        Ok(s) => s.closed,
                        Err(e) => e.status == Some(401),
                    }
                };
                if let Some(end) = stop_ending(cancel, closed).await {
                    a.sink.emit(end).await;
                }
            }
            a.sink.finish(Duration::from_secs(secs)).await
        }
    };
    if unsent > 0 {
        eprintln!("cdeploy-builder: the log did not take the last {unsent} events within {secs}s; they are lost");
    }
}

/// How a build stopped by SIGTERM ends its log: `canceled` for a cancel through cdeploy
/// (marked before ECS stops the task); for any other stop the server's watcher has
/// ECS's reason, so wait for it (`None` once it closed the log), and say so ourselves
/// if it never does.
async fn stop_ending<F, Fut>(cancel: bool, closed: F) -> Option<EventBody>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if cancel {
        return Some(EventBody::status(Status::Canceled));
    }
    let deadline = tokio::time::Instant::now() + STOP_WAIT;
    loop {
        if closed().await {
            return None;
        }
        if tokio::time::Instant::now() >= deadline {
            return Some(EventBody::failed(
                "the build task was stopped (SIGTERM) before the build finished",
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
