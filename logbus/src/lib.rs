//! The log bus: numbers each deployment's events, keeps their history, and fans them out
//! to live subscribers. Every producer (the server's lifecycle, a local build, a builder
//! on ECS through the builder API, a standalone builder on Redis) goes through it, so a
//! log is gap-free, in order, and ends with exactly one terminal event.
//!
//! # Layout
//! * this file — the [`LogBus`] trait every bus has, the [`SharedLog`] trait only a bus
//!   shared by several processes has, what a publish did ([`Published`]) and [`BusError`].
//! * [`limits`] — how much log one deployment may have ([`LogLimits`], [`Budget`]).
//! * [`archive`] — finished logs in storage (`deployments/<id>/log.jsonl`).
//! * [`memory`] — [`MemoryBus`], the embedded default: a local file per running log.
//! * [`redis`] — [`RedisBus`], shared by server replicas and builders, on Redis Streams;
//!   [`redis::stream`] is the Streams client a builder appends with.
//! * [`spec`] — which bus to run ([`BusSpec`], parsed once) and [`open`].

#![forbid(unsafe_code)]

pub mod archive;
pub mod limits;
pub mod memory;
pub mod redis;
pub mod spec;

use async_trait::async_trait;
use cdeploy_core::event::{Event, EventBody};
use tokio::sync::broadcast;

pub use archive::{archive, parse_jsonl, read_archived};
pub use limits::{Admit, Budget, LogLimits};
pub use memory::MemoryBus;
pub use redis::RedisBus;
pub use spec::{open, BusOptions, BusSpec};

/// A subscriber's start: everything after `after` so far, then live events (absent when
/// the deployment has already ended).
pub struct Subscription {
    pub backlog: Vec<Event>,
    pub live: Option<broadcast::Receiver<Event>>,
}

/// What became of a published event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Stored as this event (a retried append whose first attempt had landed gets the
    /// event it was stored as).
    Stored(Event),
    /// The log had already ended with a terminal event: nothing may follow it.
    Closed,
    /// Past the deployment's [`LogLimits`]: dropped (after the one notice that says so).
    OverLimit,
    /// The bus could not take it in time. A terminal event is still appended in the
    /// background once the bus is back (followers wait for it); any other is dropped.
    Unavailable { retrying: bool },
}

impl Published {
    /// The stored event, if it was stored.
    pub fn event(self) -> Option<Event> {
        match self {
            Published::Stored(e) => Some(e),
            _ => None,
        }
    }
}

/// The whereabouts of one deployment's log on a shared bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogState {
    /// A cancel was requested (the builder reports `canceled` when it is stopped).
    pub cancel_requested: bool,
    /// The log holds its terminal event.
    pub closed: bool,
}

/// Why the bus could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus holds less than the builder saw stored: it lost data (Redis restarted
    /// empty). The builder writes its log back, then retries.
    #[error("the log bus lost this deployment's log")]
    Lost,
    #[error("the log bus (Redis) is unreachable: {0}")]
    Unavailable(String),
    #[error("this server's log bus (memory) does not take events from remote builders; run the Redis log bus")]
    Unsupported,
}

/// Every log bus: append, read back, follow.
#[async_trait]
pub trait LogBus: Send + Sync + 'static {
    /// Appends an event, numbered by the bus.
    async fn publish(&self, id: &str, body: EventBody) -> Published;
    /// History after `after`, plus a live feed if the deployment is still running.
    async fn subscribe(&self, id: &str, after: u64) -> Subscription;
    /// History after `after` (used to fill gaps when a subscriber falls behind).
    async fn history(&self, id: &str, after: u64) -> Vec<Event>;
    /// Whether the bus can take events now (a deployment is not started otherwise).
    async fn check(&self) -> Result<(), BusError>;
    /// The operations of a bus shared with builders that run elsewhere; `None` for a
    /// bus only this process writes (the embedded [`MemoryBus`]).
    fn shared(&self) -> Option<&dyn SharedLog> {
        None
    }
}

/// What only a bus shared by several processes does: take events numbered by a remote
/// producer, take back what it lost, and carry a cancel to a builder it cannot signal.
#[async_trait]
pub trait SharedLog: Send + Sync {
    /// Appends an event a builder produced through the builder API: numbered by its
    /// producer (a retried request stores nothing twice), after `floor`, the highest
    /// `seq` the builder saw stored.
    async fn publish_from(
        &self,
        id: &str,
        producer: &str,
        n: u64,
        floor: u64,
        ts: &str,
        body: EventBody,
    ) -> Result<Published, BusError>;
    /// Writes back events the bus lost (with their numbers).
    async fn restore(&self, id: &str, events: &[Event]) -> Result<(), BusError>;
    /// Whether a cancel was requested, and whether the log is closed.
    async fn state(&self, id: &str) -> Result<LogState, BusError>;
    /// A cancel of a build running elsewhere is under way: its builder, stopped by
    /// SIGTERM, then reports `canceled` instead of an unexplained stop.
    async fn request_cancel(&self, id: &str) -> Result<(), BusError>;
    /// The log has ended (its terminal event is in, written by whichever producer):
    /// keep a copy in storage.
    async fn seal(&self, id: &str);
}
