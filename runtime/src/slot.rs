//! One deployment's runtime on this host: asleep, running, or backing off after its
//! server crashed or could not start. Starts are single-flight (a lock held for the
//! whole start, so concurrent first requests wait for one process); requests in flight
//! are counted, so neither the idle reaper nor the cap stops a server that is
//! answering.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdeploy_core::server::ServerSpec;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::process::{self, Exit, Launch};
use crate::{bundle, Inner, RuntimeError};

/// The longest wait before a crashed server is started again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A server that ran this long before crashing starts its backoff over.
const STABLE: Duration = Duration::from_secs(60);

enum State {
    Asleep,
    Running {
        addr: SocketAddr,
        stop: CancellationToken,
        exited: watch::Receiver<Option<Exit>>,
        /// Failures in a row before this start, and when it started (for the backoff).
        failures: u32,
        since: Instant,
    },
    Backoff {
        until: Instant,
        failures: u32,
        why: String,
    },
}

pub(crate) struct Slot {
    /// The project (slug) whose deployment it is: the cap is shared fairly by project.
    project: String,
    id: String,
    start: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    /// Requests holding a lease.
    active: AtomicUsize,
    /// When a lease was last taken or given back (ms since the host's epoch).
    last_used: AtomicU64,
}

impl Slot {
    pub(crate) fn new(project: &str, id: &str) -> Slot {
        Slot {
            project: project.to_string(),
            id: id.to_string(),
            start: tokio::sync::Mutex::new(()),
            state: Mutex::new(State::Asleep),
            active: AtomicUsize::new(0),
            last_used: AtomicU64::new(0),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn project(&self) -> &str {
        &self.project
    }

    /// When a lease was last taken or given back.
    pub(crate) fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Acquire)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn acquire(&self, now: u64) {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.last_used.store(now, Ordering::Release);
    }

    pub(crate) fn release(&self, now: u64) {
        self.last_used.store(now, Ordering::Release);
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// Where the server answers, when it runs (not when it is being stopped: a request
    /// then waits for a new start rather than reaching a server on its way out).
    pub(crate) fn running(&self) -> Option<SocketAddr> {
        match &*self.state() {
            State::Running {
                addr, exited, stop, ..
            } if exited.borrow().is_none() && !stop.is_cancelled() => Some(*addr),
            _ => None,
        }
    }

    /// How long nobody has held a lease (`None`: one is held now).
    pub(crate) fn idle_for(&self, now: u64) -> Option<u64> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(now.saturating_sub(self.last_used.load(Ordering::Acquire)))
    }

    /// Whether the table may drop this slot: asleep (or done backing off), nobody
    /// starting it.
    pub(crate) fn forgettable(&self) -> bool {
        let quiet = match &*self.state() {
            State::Asleep => true,
            State::Backoff { until, .. } => Instant::now() >= *until,
            State::Running { .. } => false,
        };
        quiet && self.start.try_lock().is_ok()
    }

    pub(crate) fn request_stop(&self) {
        if let State::Running { stop, .. } = &*self.state() {
            stop.cancel();
        }
    }

    /// Stops the server for good (its deployment is gone): a start in progress is
    /// waited for, then stopped too.
    pub(crate) async fn retire(&self) {
        let _one = self.start.lock().await;
        self.stop().await;
    }

    /// Stops the server and waits until it is gone.
    pub(crate) async fn stop(&self) {
        let exited = match &*self.state() {
            State::Running { stop, exited, .. } => {
                stop.cancel();
                exited.clone()
            }
            _ => return,
        };
        let mut exited = exited;
        let _ = exited.wait_for(|e| e.is_some()).await;
    }

    /// The running server's address, starting it if it sleeps (one start at a time).
    pub(crate) async fn ensure_running(
        self: &Arc<Self>,
        inner: &Arc<Inner>,
        spec: &ServerSpec,
        env: Vec<(String, String)>,
    ) -> Result<SocketAddr, RuntimeError> {
        let _one = self.start.lock().await;
        // A server on its way out (idle, evicted) is waited for, then settled.
        let leaving = match &*self.state() {
            State::Running { stop, exited, .. } if stop.is_cancelled() => Some(exited.clone()),
            _ => None,
        };
        if let Some(mut exited) = leaving {
            let _ = exited.wait_for(|e| e.is_some()).await;
        }
        let failures = match &*self.settled() {
            State::Running { addr, .. } => return Ok(*addr),
            State::Backoff {
                until,
                failures,
                why,
            } => {
                let now = Instant::now();
                if now < *until {
                    return Err(RuntimeError::Crashed {
                        why: why.clone(),
                        retry_in: (*until - now).as_secs().max(1),
                    });
                }
                *failures
            }
            _ => 0,
        };
        let room = inner.make_room(self).await?;
        let started = self.start(inner, spec, env).await;
        // The reservation goes once the server counts as running (or failed).
        let result = match started {
            Ok(started) => {
                let addr = started.addr;
                let exited = started.exited.clone();
                *self.state() = State::Running {
                    addr,
                    stop: started.stop,
                    exited: started.exited,
                    failures,
                    since: Instant::now(),
                };
                let me = self.clone();
                inner
                    .handle
                    .spawn(async move { me.after_exit(exited).await });
                Ok(addr)
            }
            Err(why) => {
                let wait = backoff(failures);
                inner.logs.push(
                    &self.id,
                    "system",
                    &format!(
                        "cdeploy: the server could not start: {why} (next try in {}s)",
                        wait.as_secs()
                    ),
                );
                *self.state() = State::Backoff {
                    until: Instant::now() + wait,
                    failures: failures + 1,
                    why: why.clone(),
                };
                Err(RuntimeError::StartFailed(why))
            }
        };
        drop(room);
        result
    }

    /// Waits for the server to end, then settles the state.
    async fn after_exit(self: Arc<Self>, mut exited: watch::Receiver<Option<Exit>>) {
        if exited.wait_for(|e| e.is_some()).await.is_ok() {
            drop(self.settled());
        }
    }

    /// The state, with a server that has ended settled: asleep when it was stopped,
    /// backing off when it crashed. Whoever looks first settles it.
    fn settled(&self) -> std::sync::MutexGuard<'_, State> {
        let mut state = self.state();
        let settled = match &*state {
            State::Running {
                exited,
                failures,
                since,
                ..
            } => exited.borrow().clone().map(|exit| {
                if exit.stopped {
                    return State::Asleep;
                }
                let failures = if since.elapsed() >= STABLE {
                    0
                } else {
                    *failures
                };
                State::Backoff {
                    until: Instant::now() + backoff(failures),
                    failures: failures + 1,
                    why: exit.why,
                }
            }),
            _ => None,
        };
        if let Some(new) = settled {
            *state = new;
        }
        state
    }

    /// One start: the bundle on this host, the Node.js version, the process.
    async fn start(
        &self,
        inner: &Arc<Inner>,
        spec: &ServerSpec,
        mut env: Vec<(String, String)>,
    ) -> Result<process::Started, String> {
        // Unique in this process, not only in this slot: a slot forgotten while asleep
        // comes back, and a folder or cgroup of a stopped start may still be going away.
        let seq = inner.starts.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        inner.logs.push(
            &self.id,
            "system",
            &format!(
                "cdeploy: starting the server (`{}` on Node.js {})",
                spec.command.join(" "),
                spec.node
            ),
        );
        spec.validate()?;
        let dir = &inner.opts.dir;
        let reading = inner.bundles.read().await;
        let bundle = bundle::materialize(
            inner.storage.as_ref(),
            (&dir.join("bundles"), &dir.join("blobs")),
            &self.id,
            spec,
        )
        .await?;
        drop(reading);
        let (node, lease) = inner
            .toolchains
            .node_exact(&spec.node)
            .await
            .map_err(|e| e.to_string())?;
        let port = process::INSIDE_PORT.to_string();
        let mut base = vec![
            ("PORT".to_string(), port),
            ("HOSTNAME".to_string(), "0.0.0.0".to_string()),
            ("HOST".to_string(), "0.0.0.0".to_string()),
            ("NODE_ENV".to_string(), "production".to_string()),
            ("CDEPLOY_DEPLOYMENT_ID".to_string(), self.id.clone()),
        ];
        if let Some(source) = inner.env.get() {
            let stored = source.env(&self.id).await?;
            let values: Vec<String> = stored.iter().map(|(_, v)| v.clone()).collect();
            inner.logs.mask(&self.id, &values);
            base.extend(
                stored
                    .into_iter()
                    .filter(|(k, _)| !crate::RESERVED_ENV.contains(&k.as_str())),
            );
        }
        base.append(&mut env);
        let launched = process::start(Launch {
            sandbox: inner.sandbox,
            id: &self.id,
            spec,
            bundle: &bundle,
            node_dir: &node.dir,
            scratch: dir.join("run").join(format!("{}-{seq}", self.id)),
            env: base,
            logs: inner.logs.clone(),
            timeout: inner.opts.start_timeout,
            keep: Box::new(lease),
        })
        .await;
        if launched.is_ok() {
            inner.logs.push(
                &self.id,
                "system",
                &format!(
                    "cdeploy: the server answered GET {} {} ms after the first request",
                    spec.health,
                    started.elapsed().as_millis()
                ),
            );
        }
        launched
    }
}

/// The wait after the `failures`-th failure in a row: 1 s, doubling, at most a minute.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute() {
        let secs: Vec<u64> = (0..9).map(|f| backoff(f).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn leases_keep_a_slot_busy() {
        let s = Slot::new("p", "d");
        s.acquire(100);
        assert_eq!(s.idle_for(5_000), None);
        s.release(200);
        assert_eq!(s.idle_for(5_000), Some(4_800));
        assert!(s.forgettable());
    }
}
