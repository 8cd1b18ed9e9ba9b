//! Server apps' runtimes: a deployment's server, started in a sandbox on its first
//! request and stopped after `idle` without one.
//!
//! [`Runtimes::lease`] is all a proxy asks: the address of the deployment's running
//! server, started if it sleeps. Concurrent first requests wait for **one** start; a
//! cap on running servers stops the least recently used idle one to make room; a server
//! that crashes is restarted on a later request after a backoff (1 s, doubling to a
//! minute), and requests meanwhile get an error at once, never a hang. A server runs in
//! the same sandbox as builds (`cdeploy_builder::sandbox`: own namespaces, an
//! unprivileged uid, a read-only system, a network without the host's services or the
//! metadata address, a cgroup with memory and process limits), with its bundle mounted
//! read-only and nothing of the data dir or other projects in view. Only this host's
//! loopback reaches it: pasta forwards one port of it to the server's `PORT`, and no
//! sandbox can reach the host's loopback.
//!
//! # Layout
//! * this file — [`Runtimes`], [`RuntimeOptions`], [`Lease`], [`RuntimeError`], and the
//!   table of slots with the idle reaper.
//! * `slot` — one deployment's runtime: asleep, running or backing off after a crash;
//!   its single-flight start and its stop.
//! * `bundle` — a deployment's server files on this host, made once from storage
//!   (hard links to local blobs, or downloads).
//! * `process` — one start: the sandbox cell, the command, its output into the logs,
//!   the wait until it answers, the task that watches it until it ends.
//! * [`logs`] — what runtimes print, bounded per deployment, with followers.
//! * `settings` — [`RuntimeSettings`], the flags both binaries take, and opening a
//!   host's runtimes with their own sandbox.
#![forbid(unsafe_code)]

mod bundle;
pub mod logs;
mod process;
mod settings;
mod slot;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdeploy_builder::sandbox::Sandbox;
use cdeploy_builder::toolchain::Toolchains;
use cdeploy_core::server::ServerSpec;
use cdeploy_storage::DynStorage;

use slot::Slot;

pub use logs::{LogLine, Logs};
pub use process::INSIDE_PORT;
pub use settings::{Runtime, RuntimeSettings};

/// How runtimes run on this host.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Bundles, downloaded blobs and each running server's scratch folder.
    pub dir: PathBuf,
    /// A server without a request for this long is stopped.
    pub idle: Duration,
    /// Servers running at once on this host.
    pub max_running: usize,
    /// How long a starting server has to answer its health path.
    pub start_timeout: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            dir: PathBuf::from("runtimes"),
            idle: Duration::from_secs(300),
            max_running: 16,
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// Where a deployment's server gets its stored variables (the control plane's secrets
/// of its target that are marked for run time), read at each start.
#[async_trait::async_trait]
pub trait EnvSource: Send + Sync {
    async fn env(&self, deployment: &str) -> Result<Vec<(String, String)>, String>;
}

/// Names the platform sets for every server; a stored variable cannot replace them.
pub const RESERVED_ENV: &[&str] = &["PORT", "HOST", "HOSTNAME", "PATH", "HOME", "TMPDIR"];

/// Why a request cannot reach its deployment's server.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("the site's server could not start: {0}")]
    StartFailed(String),
    #[error("the site's server crashed ({why}); it is restarted in {retry_in}s")]
    Crashed { why: String, retry_in: u64 },
    #[error("{0} site servers are running on this host, all busy; try again shortly")]
    Busy(usize),
}

/// A request's hold on a running server: while any is held the server is not stopped
/// for idleness or to make room.
pub struct Lease {
    pub addr: SocketAddr,
    slot: Arc<Slot>,
    inner: Arc<Inner>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.slot.release(self.inner.now_ms());
    }
}

/// Every runtime of this host.
#[derive(Clone)]
pub struct Runtimes {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    storage: DynStorage,
    sandbox: &'static Sandbox,
    toolchains: Toolchains,
    opts: RuntimeOptions,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    logs: Arc<Logs>,
    /// Where starts and watches run (a multi-threaded runtime: not a proxy's serving
    /// thread, so a server outlives the connection that woke it).
    handle: tokio::runtime::Handle,
    epoch: Instant,
    /// Starts so far: numbers each start's scratch folder and cgroup.
    starts: AtomicU64,
    /// Stored variables for servers, once the control plane has given a source.
    env: std::sync::OnceLock<Arc<dyn EnvSource>>,
    /// Starts in progress, counted against the cap.
    starting: Mutex<usize>,
    /// Made bundle folders read it while they link blobs; removing a folder and the
    /// blobs nothing links any more writes it.
    bundles: tokio::sync::RwLock<()>,
}

/// A start's place under the cap, given back when dropped.
pub(crate) struct Reservation<'a>(&'a Mutex<usize>);

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut n = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
    }
}

impl std::fmt::Debug for Runtimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtimes")
            .field("dir", &self.inner.opts.dir)
            .field("running", &self.running())
            .finish()
    }
}

impl Runtimes {
    /// Runtimes of this host, with their own sandbox (the runtime's limits). Call from
    /// the multi-threaded runtime that should run them.
    pub fn new(
        storage: DynStorage,
        sandbox: Sandbox,
        toolchains: Toolchains,
        opts: RuntimeOptions,
    ) -> std::io::Result<Runtimes> {
        use std::os::unix::fs::PermissionsExt;
        for (sub, mode) in [
            ("", 0o711),
            ("bundles", 0o711),
            ("blobs", 0o700),
            ("run", 0o711),
        ] {
            let dir = opts.dir.join(sub);
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
        }
        // Scratch folders of a previous process: its servers are gone.
        for entry in std::fs::read_dir(opts.dir.join("run"))?.flatten() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
        sandbox.reap();
        let inner = Arc::new(Inner {
            storage,
            // One per process, for as long as it runs: a running server's cell
            // borrows it from tasks that outlive any caller.
            sandbox: Box::leak(Box::new(sandbox)),
            toolchains,
            opts,
            slots: Mutex::new(HashMap::new()),
            logs: Arc::new(Logs::default()),
            handle: tokio::runtime::Handle::current(),
            epoch: Instant::now(),
            starts: AtomicU64::new(0),
            env: std::sync::OnceLock::new(),
            starting: Mutex::new(0),
            bundles: tokio::sync::RwLock::new(()),
        });
        inner.handle.spawn(sweep(Arc::downgrade(&inner)));
        let reaper = Arc::downgrade(&inner);
        inner.handle.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                match reaper.upgrade() {
                    Some(inner) => inner.reap(),
                    None => return,
                }
            }
        });
        Ok(Runtimes { inner })
    }

    /// The running server of deployment `id` of project `project`, started (once,
    /// whoever asks at the same time) if it sleeps. `env` is what the server gets besides
    /// `PORT` and the basics.
    pub async fn lease(
        &self,
        (project, id): (&str, &str),
        spec: &ServerSpec,
        env: Vec<(String, String)>,
    ) -> Result<Lease, RuntimeError> {
        let slot = self.inner.slot(project, id);
        slot.acquire(self.inner.now_ms());
        let lease = |addr| Lease {
            addr,
            slot: slot.clone(),
            inner: self.inner.clone(),
        };
        if let Some(addr) = slot.running() {
            return Ok(lease(addr));
        }
        let (inner, s, spec) = (self.inner.clone(), slot.clone(), spec.clone());
        let started = self
            .inner
            .handle
            .spawn(async move { s.ensure_running(&inner, &spec, env).await })
            .await;
        match started {
            Ok(Ok(addr)) => Ok(lease(addr)),
            Ok(Err(e)) => {
                drop(lease(SocketAddr::from(([127, 0, 0, 1], 0))));
                Err(e)
            }
            Err(e) => {
                drop(lease(SocketAddr::from(([127, 0, 0, 1], 0))));
                Err(RuntimeError::StartFailed(format!(
                    "the start was lost: {e}"
                )))
            }
        }
    }

    /// Deployment `id` is gone: its server (if it runs) is stopped and its folder on
    /// this host removed, with the blobs no other deployment's folder links.
    pub async fn forget(&self, id: &str) {
        self.inner.forget(id).await;
    }

    /// Whether deployment `id`'s server runs now.
    pub fn is_running(&self, id: &str) -> bool {
        let slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.get(id).is_some_and(|s| s.running().is_some())
    }

    /// Where servers' stored variables come from (set once; later calls are ignored).
    pub fn set_env_source(&self, source: Arc<dyn EnvSource>) {
        let _ = self.inner.env.set(source);
    }

    /// Servers running now.
    pub fn running(&self) -> usize {
        self.inner.running_slots().len()
    }

    pub fn logs(&self) -> &Logs {
        &self.inner.logs
    }

    /// Writes a line of cdeploy's own into a deployment's runtime log (a request and
    /// its answer, with its id).
    pub fn note(&self, id: &str, line: &str) {
        self.inner.logs.push(id, "system", line);
    }
}

/// How often a host looks for folders of deployments deleted elsewhere (a replica is not
/// told), and how old an unlinked blob must be to go.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
const BLOB_SETTLE: Duration = Duration::from_secs(600);

/// Every [`SWEEP_EVERY`]: each made folder whose deployment's manifest is no longer in
/// storage is forgotten (unless none of them is there: see below).
async fn sweep(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(inner.opts.dir.join("bundles")) else {
            continue;
        };
        let ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .filter(|id| cdeploy_core::ids::DeploymentId::parse(id).is_some())
            .collect();
        let mut gone = Vec::new();
        for id in &ids {
            let key = cdeploy_core::layout::manifest(id);
            if let Ok(false) = inner.storage.exists(&key).await {
                gone.push(id);
            }
        }
        // Every one missing is more likely storage answering wrongly (another bucket,
        // an origin refusing reads) than every deployment deleted: nothing is removed.
        if gone.len() == ids.len() {
            if !gone.is_empty() {
                tracing::warn!(folders = gone.len(), "storage has none of the deployments this host ran: not removing their server files");
            }
            continue;
        }
        for id in gone {
            inner.forget(id).await;
        }
    }
}

impl Inner {
    async fn forget(&self, id: &str) {
        if cdeploy_core::ids::DeploymentId::parse(id).is_none() {
            return;
        }
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.remove(id)
        };
        if let Some(slot) = slot {
            slot.retire().await;
        }
        let _writing = self.bundles.write().await;
        let dir = &self.opts.dir;
        let (bundles, blobs, id) = (dir.join("bundles"), dir.join("blobs"), id.to_string());
        let pruned = tokio::task::spawn_blocking(move || {
            bundle::prune((&bundles, &blobs), &id, BLOB_SETTLE).map(|n| (id, n))
        })
        .await;
        match pruned {
            Ok(Ok((id, (blobs, bytes)))) => {
                tracing::info!(deployment = %id, blobs, bytes, "a deleted deployment's server files removed");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot remove a deleted deployment's server files")
            }
            Err(e) => {
                tracing::warn!(error = %e, "removing a deleted deployment's server files failed")
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn slot(&self, project: &str, id: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Slot::new(project, id)))
            .clone()
    }

    fn running_slots(&self) -> Vec<Arc<Slot>> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .values()
            .filter(|s| s.running().is_some())
            .cloned()
            .collect()
    }

    /// Stops servers idle past the limit; forgets slots asleep and unused for long.
    fn reap(&self) {
        let now = self.now_ms();
        let idle = self.opts.idle.as_millis() as u64;
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|_, slot| {
            if slot.idle_for(now).is_some_and(|t| t >= idle) {
                if slot.running().is_some() {
                    slot.request_stop();
                    return true;
                }
                // Asleep with nobody waiting: the next request makes a new slot.
                return !slot.forgettable();
            }
            true
        });
    }

    /// Room for one more server, reserved until the reservation is dropped (a start in
    /// progress counts against the cap, so concurrent starts cannot pass it). At the cap
    /// the least recently used idle server is stopped; with none idle, the least recently
    /// used server of the project running the most (when that is another project with
    /// more than one), busy or not: one tenant's held requests cannot lock others out.
    async fn make_room(&self, starting: &Slot) -> Result<Reservation<'_>, RuntimeError> {
        loop {
            let running = self.running_slots();
            {
                let mut reserved = self.starting.lock().unwrap_or_else(|e| e.into_inner());
                if running.len() + *reserved < self.opts.max_running {
                    *reserved += 1;
                    return Ok(Reservation(&self.starting));
                }
            }
            let Some((victim, why)) = self.victim(&running, starting) else {
                return Err(RuntimeError::Busy(running.len()));
            };
            self.logs.push(victim.id(), "system", why);
            victim.stop().await;
        }
    }

    /// The server to stop for a start at the cap, and why.
    fn victim(&self, running: &[Arc<Slot>], starting: &Slot) -> Option<(Arc<Slot>, &'static str)> {
        let now = self.now_ms();
        let idle = running
            .iter()
            .filter(|s| s.id() != starting.id())
            .filter_map(|s| s.idle_for(now).map(|t| (t, s)))
            .max_by_key(|(t, _)| *t)
            .map(|(_, s)| s.clone());
        if let Some(v) = idle {
            return Some((
                v,
                "cdeploy: stopping this server to make room for another (the least recently used)",
            ));
        }
        let mut per_project: HashMap<&str, Vec<&Arc<Slot>>> = HashMap::new();
        for s in running {
            per_project.entry(s.project()).or_default().push(s);
        }
        let (hog, servers) = per_project.into_iter().max_by_key(|(_, v)| v.len())?;
        if hog == starting.project() || servers.len() < 2 {
            return None;
        }
        let v = servers.into_iter().min_by_key(|s| s.last_used())?.clone();
        Some((v, "cdeploy: stopping this busy server: its project runs the most servers on this host and another needs room"))
    }
}
