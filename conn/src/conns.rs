//! The open connections of one process: admission at the cap, shedding the longest-idle
//! connection, each connection's deadline, and the pressure report.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::settings::{fd_budget, ConnSettings, DEFAULT_MAX_CONNECTIONS};

/// What one connection is doing, shared with its requests.
pub(crate) struct ConnState {
    /// Requests (HTTP/2 streams) being answered, response bodies included.
    pub(crate) active: AtomicUsize,
    /// Requests started on this connection.
    pub(crate) requests: AtomicU64,
    /// When `active` last dropped to 0 (or the accept), in ms since [`Conns::epoch`].
    pub(crate) idle_since: AtomicU64,
    /// When bytes last moved either way, in ms since [`Conns::epoch`].
    pub(crate) progress: AtomicU64,
    /// When the first byte of the next request head came while idle, in ms since
    /// [`Conns::epoch`] plus one (0: none since the last request began). HTTP/1.1 only.
    pub(crate) head_since: AtomicU64,
    /// The connection speaks HTTP/2 (seen on its first request): bytes read while idle
    /// are frames (pings, settings), not the start of a head, and its idle time is
    /// bounded by `idle_timeout` alone.
    pub(crate) http2: AtomicBool,
}

struct Entry {
    state: Arc<ConnState>,
    kill: CancellationToken,
}

/// The connections of one process (the embedded server shares one across the API and
/// the proxy: they share its descriptors).
pub struct Conns {
    pub(crate) settings: ConnSettings,
    cap: usize,
    table: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    pub(crate) epoch: Instant,
    /// [`coarse_ms`] at `epoch`.
    pub(crate) epoch_ms: u64,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    shed: AtomicU64,
    refused: AtomicU64,
    accept_errors: AtomicU64,
    last_report: Mutex<Option<Instant>>,
    last_error: Mutex<String>,
}

impl Conns {
    pub fn new(settings: ConnSettings) -> Arc<Self> {
        let budget = fd_budget();
        let cap = match settings.max_connections {
            0 => budget.min(DEFAULT_MAX_CONNECTIONS),
            n if n > budget => {
                tracing::warn!(
                    max_connections = n,
                    allowed = budget,
                    "the open-file limit allows fewer connections than configured; raise `ulimit -n`"
                );
                budget
            }
            n => n,
        };
        Arc::new(Conns {
            settings,
            cap,
            table: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            epoch: Instant::now(),
            epoch_ms: coarse_ms(),
            stats: Stats::default(),
        })
    }

    /// The effective cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.table.lock().expect("not poisoned").len()
    }

    /// Connections closed to make room, and refused because all were busy.
    pub fn shed_and_refused(&self) -> (u64, u64) {
        (
            self.stats.shed.load(Ordering::Relaxed),
            self.stats.refused.load(Ordering::Relaxed),
        )
    }

    /// Milliseconds since `epoch`, read off the coarse clock (every request reads it
    /// several times).
    pub(crate) fn now_ms(&self) -> u64 {
        ms_since(self.epoch_ms)
    }

    /// Enters a new connection in the table: its id, its shared state, and the token
    /// that closes it when it is shed.
    pub(crate) fn register(&self) -> (u64, Arc<ConnState>, CancellationToken) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(self.now_ms()),
            progress: AtomicU64::new(self.now_ms()),
            head_since: AtomicU64::new(0),
            http2: AtomicBool::new(false),
        });
        let kill = CancellationToken::new();
        self.table.lock().expect("not poisoned").insert(
            id,
            Entry {
                state: state.clone(),
                kill: kill.clone(),
            },
        );
        (id, state, kill)
    }

    pub(crate) fn remove(&self, id: u64) {
        self.table.lock().expect("not poisoned").remove(&id);
    }

    /// Closes the connection idle the longest. False when every connection is busy.
    pub(crate) fn shed_one(&self) -> bool {
        let mut table = self.table.lock().expect("not poisoned");
        let victim = table
            .iter()
            .filter(|(_, e)| e.state.active.load(Ordering::Acquire) == 0)
            // Idle the longest; between equals, the one accepted first.
            .min_by_key(|(id, e)| (e.state.idle_since.load(Ordering::Relaxed), **id))
            .map(|(id, _)| *id);
        match victim {
            Some(id) => {
                if let Some(e) = table.remove(&id) {
                    e.kill.cancel();
                }
                self.stats.shed.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Makes room for one more connection; false when it must be refused.
    pub(crate) fn admit(&self) -> bool {
        if self.open() < self.cap || self.shed_one() {
            return true;
        }
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        self.report();
        false
    }

    pub(crate) fn accept_failed(&self, e: &std::io::Error) {
        self.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
        *self.stats.last_error.lock().expect("not poisoned") = e.to_string();
        self.report();
    }

    /// One warning per 10 s at most, with the counts since the last one.
    fn report(&self) {
        let mut last = self.stats.last_report.lock().expect("not poisoned");
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return;
        }
        *last = Some(Instant::now());
        let shed = self.stats.shed.load(Ordering::Relaxed);
        let refused = self.stats.refused.load(Ordering::Relaxed);
        let errors = self.stats.accept_errors.load(Ordering::Relaxed);
        let last_error = self.stats.last_error.lock().expect("not poisoned").clone();
        tracing::warn!(
            open = self.open(),
            cap = self.cap,
            shed_total = shed,
            refused_total = refused,
            accept_errors_total = errors,
            last_accept_error = %last_error,
            "connection pressure: closing the longest-idle connections to serve new ones"
        );
    }

    /// Whether a running request has moved no byte for `idle_timeout`.
    fn stalled(&self, state: &ConnState) -> bool {
        state.active.load(Ordering::Acquire) > 0
            && self
                .now_ms()
                .saturating_sub(state.progress.load(Ordering::Relaxed))
                >= self.settings.idle_timeout.as_millis() as u64
    }

    /// When the connection must close if it stays as it is (`None`: a request runs):
    /// the first request head must be complete `header_timeout` after accept; a later
    /// one `idle_timeout` after the previous response, and `header_timeout` after its
    /// first byte (bytes trickling in extend neither).
    fn deadline(&self, state: &ConnState) -> Option<Instant> {
        if state.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |ms: u64| self.epoch + Duration::from_millis(ms);
        let idle_since = at(state.idle_since.load(Ordering::Relaxed));
        if state.requests.load(Ordering::Relaxed) == 0 {
            return Some(idle_since + self.settings.header_timeout);
        }
        let idle = idle_since + self.settings.idle_timeout;
        Some(match state.head_since.load(Ordering::Relaxed) {
            0 => idle,
            head => idle.min(at(head - 1) + self.settings.header_timeout),
        })
    }

    /// When to look at the connection again: its deadline, or while a request runs, when
    /// it stalls if no byte moves. Between requests, at most `header_timeout` on: a head
    /// that begins meanwhile brings its own deadline closer.
    pub(crate) fn next_check(&self, state: &ConnState) -> Instant {
        match self.deadline(state) {
            Some(deadline) if state.head_since.load(Ordering::Relaxed) == 0 => {
                deadline.min(Instant::now() + self.settings.header_timeout)
            }
            Some(deadline) => deadline,
            None => {
                let progress = state.progress.load(Ordering::Relaxed);
                self.epoch + Duration::from_millis(progress) + self.settings.idle_timeout
            }
        }
    }

    /// Whether the connection must close now: past its deadline, or stalled.
    pub(crate) fn expired(&self, state: &ConnState) -> bool {
        self.deadline(state).is_some_and(|d| d <= Instant::now()) || self.stalled(state)
    }
}

/// The kernel's coarse monotonic clock in milliseconds: its tick (1 to 4 ms) is
/// precision enough for timeouts counted in seconds, and reading it costs no timer read.
pub fn coarse_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    (t.tv_sec as u64) * 1000 + (t.tv_nsec as u64) / 1_000_000
}

/// Milliseconds since `epoch_ms` (a [`coarse_ms`] reading) on the coarse clock.
pub(crate) fn ms_since(epoch_ms: u64) -> u64 {
    coarse_ms().saturating_sub(epoch_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::ActiveGuard;

    #[test]
    fn idle_connections_are_shed_oldest_first_and_busy_ones_never() {
        let conns = Conns::new(ConnSettings {
            max_connections: 3,
            ..Default::default()
        });
        assert_eq!(conns.cap(), 3);
        let (a, sa, ka) = conns.register();
        std::thread::sleep(Duration::from_millis(5));
        let (_b, sb, kb) = conns.register();
        let (_c, _sc, kc) = conns.register();
        // `a` is busy: `b` is the longest idle.
        let busy = ActiveGuard::new(sa.clone(), &conns);
        assert!(conns.admit());
        assert!(kb.is_cancelled() && !ka.is_cancelled() && !kc.is_cancelled());
        assert!(conns.deadline(&sa).is_none());
        drop(busy);
        assert!(conns.deadline(&sa).is_some());
        // Everything busy: the newcomer is refused.
        let _g1 = ActiveGuard::new(sa, &conns);
        let _g2 = ActiveGuard::new(_sc, &conns);
        let (_d, sd, _kd) = conns.register();
        let _g3 = ActiveGuard::new(sd, &conns);
        assert!(!conns.admit());
        assert_eq!(conns.shed_and_refused(), (1, 1));
        // A running request that moves no byte for the idle timeout is stalled.
        let quick = Conns::new(ConnSettings {
            max_connections: 2,
            idle_timeout: Duration::from_millis(20),
            ..Default::default()
        });
        let (_q, sq, _kq) = quick.register();
        assert!(!quick.stalled(&sq), "idle is not stalled");
        let _busy = ActiveGuard::new(sq.clone(), &quick);
        assert!(!quick.stalled(&sq));
        std::thread::sleep(Duration::from_millis(30));
        assert!(quick.stalled(&sq), "no progress for the idle timeout");
        sq.progress.store(quick.now_ms(), Ordering::Relaxed);
        assert!(!quick.stalled(&sq), "bytes moved");
        conns.remove(a);
        let _ = sb;
    }
}
