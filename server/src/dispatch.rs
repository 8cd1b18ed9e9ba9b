//! Running deployments, behind the [`Dispatcher`] trait. [`LocalDispatcher`] runs them
//! as tasks of this process with a bounded queue and a configurable number of builds at
//! once (embedded mode); [`crate::ecs::EcsDispatcher`] runs builds as ECS Fargate tasks.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use cdeploy_builder::{BuildSpec, EventSink, Outcome};
use cdeploy_core::config::SiteConfig;
use cdeploy_core::event::{EventBody, Status, Step};
use cdeploy_core::publish::{self, OutputFiles};
use cdeploy_core::storage::DynStorage;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::lifecycle::{DeploymentSink, Lifecycle};

/// Work for a deployment.
pub enum JobKind {
    /// Fetch, install, build, upload, activate.
    Build(Box<BuildSpec>),
    /// Prebuilt output whose blobs are already stored: write the manifest and activate.
    Activate {
        files: OutputFiles,
        site: SiteConfig,
        url: String,
    },
}

pub struct Job {
    pub id: String,
    pub slug: String,
    pub kind: JobKind,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("the build queue is full ({0} deployments waiting); try again shortly")]
    QueueFull(usize),
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The build could not be started (the message says why, e.g. ECS's reason).
    #[error("{0}")]
    Rejected(String),
}

/// Where deployments' work runs.
#[async_trait]
pub trait Dispatcher: Send + Sync + 'static {
    /// Starts (or queues) a job. An error means it will not run; the deployment is
    /// marked failed by the caller.
    async fn submit(&self, job: Job) -> Result<(), DispatchError>;
    /// Cancels a queued or running deployment. Returns false if this dispatcher does not
    /// know it (the caller then marks it canceled itself).
    async fn cancel(&self, id: &str, slug: &str) -> bool;
    /// Stops taking jobs and waits (bounded) for the ones of this process to end.
    async fn shutdown(&self, grace: Duration);
    /// Whether builds run outside this process and outlive it: then neither start-up
    /// nor shutdown marks running deployments failed.
    fn remote(&self) -> bool {
        false
    }
}

pub struct LocalDispatcher {
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
        concurrency: usize,
        queue_size: usize,
    ) -> Arc<Self> {
        let (tx, mut rx) = mpsc::channel::<Job>(queue_size.max(1));
        let d = Arc::new(LocalDispatcher {
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
                me.lifecycle
                    .metrics
                    .builds_queued
                    .fetch_sub(1, Ordering::Relaxed);
                let token = me.shutdown.child_token();
                me.running
                    .lock()
                    .expect("not poisoned")
                    .insert(job.id.clone(), token.clone());
                let me2 = me.clone();
                let storage = storage.clone();
                me.tracker.spawn(async move {
                    me2.lifecycle
                        .metrics
                        .builds_running
                        .fetch_add(1, Ordering::Relaxed);
                    let id = job.id.clone();
                    run_job(job, storage, me2.lifecycle.clone(), token).await;
                    me2.running.lock().expect("not poisoned").remove(&id);
                    me2.lifecycle
                        .metrics
                        .builds_running
                        .fetch_sub(1, Ordering::Relaxed);
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
                self.lifecycle
                    .metrics
                    .builds_queued
                    .fetch_add(1, Ordering::Relaxed);
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
            self.lifecycle
                .metrics
                .builds_queued
                .fetch_sub(1, Ordering::Relaxed);
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
}

async fn run_job(
    job: Job,
    storage: DynStorage,
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
            tracing::info!(deployment = %job.id, slug = %job.slug, "build started");
            let outcome = cdeploy_builder::run(&spec, storage.as_ref(), &sink, cancel).await;
            tracing::info!(deployment = %job.id, slug = %job.slug, status = %outcome.status(), "build finished");
        }
        JobKind::Activate {
            ref files,
            ref site,
            ref url,
        } => {
            let outcome = activate(&job, storage, &sink, files, site, url.clone(), &cancel).await;
            sink.emit(outcome.status_event()).await;
        }
    }
}

/// Prebuilt output: everything is uploaded, only the manifest and route remain.
async fn activate(
    job: &Job,
    storage: DynStorage,
    sink: &DeploymentSink,
    files: &OutputFiles,
    site: &SiteConfig,
    url: String,
    cancel: &CancellationToken,
) -> Outcome {
    sink.emit(EventBody::status(Status::Uploading)).await;
    sink.emit(EventBody::system(
        Step::Activate,
        format!("Activating {} prebuilt files", files.len()),
    ))
    .await;
    if let Err(e) = publish::write_manifest(storage.as_ref(), &job.slug, &job.id, files, site).await
    {
        return Outcome::Failed(format!("cannot write the manifest: {e}"));
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
    if let Err(e) = publish::set_route(storage.as_ref(), &job.slug, &job.id).await {
        return Outcome::Failed(format!("cannot update the route: {e}"));
    }
    Outcome::Ready { url }
}
