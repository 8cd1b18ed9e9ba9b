//! [`LocalDispatcher`]: deployments run as tasks of this process, with a bounded queue
//! and a configurable number of builds at once, each in the sandbox; prebuilt uploads
//! are activated here in every mode.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cdeploy_builder::sandbox::Sandbox;
use cdeploy_builder::{EventSink, Outcome, Workspace};
use cdeploy_core::config::SiteConfig;
use cdeploy_core::event::{EventBody, Status, Step};
use cdeploy_core::rules::RulesConfig;
use cdeploy_storage::publish::{self, OutputFiles};
use cdeploy_storage::DynStorage;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{DispatchError, Dispatcher, Job, JobKind};
use crate::lifecycle::{DeploymentSink, Lifecycle};

/// How the local dispatcher runs builds on this machine.
pub struct LocalBuilds {
    pub sandbox: Sandbox,
    /// Work directories, one per build, removed when it ends.
    pub build_dir: PathBuf,
    /// `projects/<slug>`: a project's package-manager caches, visible to its builds
    /// only; `modules/`: node_modules kept between builds, never visible to builds.
    pub cache_dir: PathBuf,
    /// Where Node.js and package managers come from.
    pub toolchains: cdeploy_builder::toolchain::Toolchains,
    /// `PATH` of build commands.
    pub path: String,
    /// Most files, and summed bytes, of one build's output.
    pub max_files: usize,
    pub max_bytes: u64,
}

impl LocalBuilds {
    /// `scope`: the build's cache scope; the package managers' store is its own.
    fn workspace(&self, id: &str, slug: &str, scope: &str) -> Workspace<'_> {
        Workspace {
            work_dir: self.build_dir.join(id),
            project_cache: Some(self.cache_dir.join("projects").join(slug).join(scope)),
            modules_cache: Some(self.cache_dir.join("modules")),
            storage_cache: false,
            path: self.path.clone(),
            sandbox: &self.sandbox,
            toolchains: &self.toolchains,
        }
    }
}

pub struct LocalDispatcher {
    /// `None`: this dispatcher only activates prebuilt uploads (builds run on ECS).
    builds: Option<Arc<LocalBuilds>>,
    tx: mpsc::Sender<Job>,
    queue_size: usize,
    queued: Mutex<HashSet<String>>,
    running: Mutex<HashMap<String, CancellationToken>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    lifecycle: Arc<Lifecycle>,
}

impl LocalDispatcher {
    pub fn start(
        lifecycle: Arc<Lifecycle>,
        storage: DynStorage,
        builds: Option<LocalBuilds>,
        concurrency: usize,
        queue_size: usize,
    ) -> Arc<Self> {
        let builds = builds.map(Arc::new);
        let (tx, mut rx) = mpsc::channel::<Job>(queue_size.max(1));
        let d = Arc::new(LocalDispatcher {
            builds: builds.clone(),
            tx,
            queue_size,
            queued: Mutex::new(HashSet::new()),
            running: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            lifecycle,
        });
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        let me = d.clone();
        d.tracker.spawn(async move {
            loop {
                // A slot first, then a job: while every slot is busy, jobs wait in the
                // channel, whose capacity is exactly the configured queue size.
                let permit = tokio::select! {
                    p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
                    () = me.shutdown.cancelled() => break,
                };
                let job = tokio::select! {
                    job = rx.recv() => match job { Some(j) => j, None => break },
                    () = me.shutdown.cancelled() => break,
                };
                if !me.queued.lock().expect("not poisoned").remove(&job.id) {
                    continue; // canceled while queued
                }
                me.lifecycle.metrics.builds_queued.dec();
                let token = me.shutdown.child_token();
                me.running
                    .lock()
                    .expect("not poisoned")
                    .insert(job.id.clone(), token.clone());
                let me2 = me.clone();
                let storage = storage.clone();
                let builds = builds.clone();
                me.tracker.spawn(async move {
                    me2.lifecycle.metrics.builds_running.inc();
                    let id = job.id.clone();
                    run_job(
                        job,
                        storage,
                        builds.as_deref(),
                        me2.lifecycle.clone(),
                        token,
                    )
                    .await;
                    me2.running.lock().expect("not poisoned").remove(&id);
                    me2.lifecycle.metrics.builds_running.dec();
                    drop(permit);
                });
            }
        });
        d
    }

    /// Whether a deployment is queued or running here.
    pub fn knows(&self, id: &str) -> bool {
        self.queued.lock().expect("not poisoned").contains(id)
            || self.running.lock().expect("not poisoned").contains_key(id)
    }
}

#[async_trait]
impl Dispatcher for LocalDispatcher {
    /// Queues a job; refuses when the queue is full rather than waiting.
    async fn submit(&self, job: Job) -> Result<(), DispatchError> {
        if self.shutdown.is_cancelled() {
            return Err(DispatchError::ShuttingDown);
        }
        let id = job.id.clone();
        self.queued.lock().expect("not poisoned").insert(id.clone());
        match self.tx.try_send(job) {
            Ok(()) => {
                self.lifecycle.metrics.builds_queued.inc();
                Ok(())
            }
            Err(e) => {
                self.queued.lock().expect("not poisoned").remove(&id);
                Err(match e {
                    mpsc::error::TrySendError::Full(_) => DispatchError::QueueFull(self.queue_size),
                    mpsc::error::TrySendError::Closed(_) => DispatchError::ShuttingDown,
                })
            }
        }
    }

    async fn cancel(&self, id: &str, slug: &str) -> bool {
        if self.queued.lock().expect("not poisoned").remove(id) {
            self.lifecycle.metrics.builds_queued.dec();
            self.lifecycle
                .event(id, slug, EventBody::status(Status::Canceled))
                .await;
            return true;
        }
        let token = self.running.lock().expect("not poisoned").get(id).cloned();
        match token {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    /// Stops taking jobs, cancels running ones and waits (bounded) for them to report.
    async fn shutdown(&self, grace: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("builds still running after {grace:?}; they will be marked failed on the next start");
        }
    }

    /// Marks every deployment still `queued`, `building` or `uploading` failed (no
    /// process of a previous run works on it), kills whatever processes of its builds a
    /// crashed server left (through the sandbox's cgroups: nothing a build could write
    /// is trusted) and removes their work directories.
    async fn recover(&self, reason: &str) {
        if let Some(b) = &self.builds {
            let b = b.clone();
            let reaped = tokio::task::spawn_blocking(move || b.sandbox.reap())
                .await
                .unwrap_or(0);
            if reaped > 0 {
                tracing::warn!(
                    groups = reaped,
                    "killed the build processes a previous run left behind"
                );
            }
        }
        let stuck = match self.lifecycle.store.non_terminal_deployments().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot list unfinished deployments");
                return;
            }
        };
        for d in stuck {
            if self.knows(&d.id) {
                continue;
            }
            if let Some(b) = &self.builds {
                let _ = tokio::fs::remove_dir_all(b.build_dir.join(&d.id)).await;
            }
            tracing::warn!(deployment = %d.id, slug = %d.slug, status = %d.status, "marking an orphaned deployment failed");
            let was = d.status;
            self.lifecycle
                .event(
                    &d.id,
                    &d.slug,
                    EventBody::failed(format!("{reason} (it was {was})")),
                )
                .await;
        }
    }

    async fn forget_project(&self, slug: &str) {
        let Some(b) = &self.builds else { return };
        let cache = b.cache_dir.clone();
        let slug = slug.to_string();
        let _ = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(cache.join("projects").join(&slug));
            cdeploy_builder::cache::forget(&cache.join("modules"), &slug);
        })
        .await;
    }
}

/// Creates the missing parents of `dir` passable (0711): those this server creates on
/// the way (e.g. /var/lib/cdeploy/<hash>) must let the unprivileged build uid through;
/// existing ones are left as they are (and checked by [`prepare_dirs`]), but for
/// `/var/lib/cdeploy`, this server's own default root, which releases before this one
/// could leave closed.
pub fn create_passable_parents(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let own = Path::new("/var/lib/cdeploy");
    if dir.starts_with(own) {
        if let Ok(meta) = std::fs::metadata(own) {
            if meta.permissions().mode() & 0o001 == 0 {
                std::fs::set_permissions(own, std::fs::Permissions::from_mode(0o711)).map_err(
                    |e| anyhow::anyhow!("cannot set the mode of {}: {e}", own.display()),
                )?;
            }
        }
    }
    let missing: Vec<&Path> = dir
        .ancestors()
        .skip(1)
        .take_while(|p| !p.exists())
        .collect();
    for p in missing.into_iter().rev() {
        std::fs::create_dir_all(p)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", p.display()))?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| anyhow::anyhow!("cannot set the mode of {}: {e}", p.display()))?;
    }
    Ok(())
}

/// Creates the build and cache directories with the permissions builds need: the uid
/// builds run as may pass through them (o+x) but list nothing, and the kept
/// node_modules are the server's alone. Checks that every parent lets that uid through.
pub fn prepare_dirs(
    build_dir: &Path,
    cache_dir: &Path,
    toolchain_dir: &Path,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let set = |dir: &Path, mode: u32| -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| anyhow::anyhow!("cannot set the mode of {}: {e}", dir.display()))
    };
    for dir in [build_dir, cache_dir, toolchain_dir] {
        create_passable_parents(dir)?;
    }
    set(build_dir, 0o711)?;
    set(cache_dir, 0o711)?;
    set(&cache_dir.join("projects"), 0o711)?;
    set(&cache_dir.join("modules"), 0o700)?;
    // Fetched toolchains: mounted read-only into builds, which need to pass through.
    set(toolchain_dir, 0o711)?;
    // SAFETY: geteuid has no preconditions.
    if rustix::process::geteuid().is_root() {
        for dir in [build_dir, cache_dir, toolchain_dir] {
            for parent in dir.ancestors().skip(1) {
                let Ok(meta) = std::fs::metadata(parent) else {
                    continue;
                };
                if meta.permissions().mode() & 0o001 == 0 {
                    anyhow::bail!(
                        "builds run as an unprivileged uid that cannot pass through {} (mode {:o}): \
                         put --build-dir and --cache-dir where every parent is o+x (e.g. /var/lib/cdeploy), \
                         or chmod o+x {}",
                        parent.display(),
                        meta.permissions().mode() & 0o777,
                        parent.display()
                    );
                }
            }
        }
    }
    Ok(())
}

async fn run_job(
    job: Job,
    storage: DynStorage,
    builds: Option<&LocalBuilds>,
    lifecycle: Arc<Lifecycle>,
    cancel: CancellationToken,
) {
    let sink = DeploymentSink {
        lifecycle,
        id: job.id.clone(),
        slug: job.slug.clone(),
    };
    match job.kind {
        JobKind::Build(spec) => {
            let Some(builds) = builds else {
                sink.emit(EventBody::failed("this server does not run builds itself"))
                    .await;
                return;
            };
            tracing::info!(deployment = %job.id, slug = %job.slug, "build started");
            if !builds.sandbox.is_isolated() {
                sink.emit(EventBody::system(
                    Step::Clone,
                    "warning: this server runs builds WITHOUT a sandbox (--unsafe-no-sandbox): the build can read and change what the server can",
                ))
                .await;
            }
            let ws = builds.workspace(&job.id, &job.slug, &spec.scope());
            let publisher = crate::lifecycle::LivePublisher {
                lifecycle: sink.lifecycle.clone(),
                storage: storage.clone(),
                max_files: builds.max_files,
                max_bytes: builds.max_bytes,
            };
            let outcome =
                cdeploy_builder::run(&spec, &ws, storage.as_ref(), &publisher, &sink, cancel).await;
            tracing::info!(deployment = %job.id, slug = %job.slug, status = %outcome.status(), "build finished");
        }
        JobKind::Activate {
            promote,
            ref files,
            ref site,
            ref rules,
            ref url,
        } => {
            let outcome = activate(
                &job,
                storage,
                &sink,
                (files, site, rules),
                url.clone(),
                promote,
                &cancel,
            )
            .await;
            sink.emit(outcome.status_event()).await;
        }
    }
}

/// Prebuilt output: everything is uploaded, only the manifest and route remain.
async fn activate(
    job: &Job,
    storage: DynStorage,
    sink: &DeploymentSink,
    (files, site, rules): (&OutputFiles, &SiteConfig, &RulesConfig),
    url: String,
    promote: bool,
    cancel: &CancellationToken,
) -> Outcome {
    sink.emit(EventBody::status(Status::Uploading)).await;
    sink.emit(EventBody::system(
        Step::Activate,
        format!("Activating {} prebuilt files", files.len()),
    ))
    .await;
    if let Err(e) = publish::write_manifest(
        storage.as_ref(),
        (&job.slug, &job.id, !promote),
        files,
        (site, rules),
        None,
    )
    .await
    {
        return Outcome::Failed(e.to_string());
    }
    let (total, total_bytes) = (
        files.len() as u64,
        files.values().map(|(_, size)| *size).sum(),
    );
    sink.emit(EventBody::Progress {
        step: Step::Activate,
        done: total,
        total,
        bytes: total_bytes,
        total_bytes,
    })
    .await;
    if cancel.is_cancelled() {
        return Outcome::Canceled;
    }
    let live = if promote {
        sink.lifecycle
            .promote_new(storage.as_ref(), &job.slug, &job.id)
            .await
    } else {
        sink.lifecycle
            .preview_live(storage.as_ref(), &job.slug, &job.id)
            .await
    };
    if let Err(e) = live {
        return Outcome::Failed(e.to_string());
    }
    Outcome::Ready { url }
}
