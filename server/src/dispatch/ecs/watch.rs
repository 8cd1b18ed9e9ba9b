//! Watching: every replica keeps one watcher per running ECS build. It applies the
//! status events the builder writes to the log and asks DescribeTasks how the task is
//! doing; a task that stops without the builder's final event ends the deployment with
//! the stop reason. A deployment nobody started is failed.

use std::sync::Arc;
use std::time::Duration;

use cdeploy_core::event::{EventBody, Status};
use cdeploy_logbus::LogBus;
use tokio::sync::broadcast::error::RecvError;

use super::tasks::{age_of, sdk_error, Ending};
use super::{EcsDispatcher, CANCEL_REASON, ORPHAN_AFTER, TIMEOUT_REASON};

impl EcsDispatcher {
    /// Keeps a watcher on every running ECS build, and fails deployments nobody started.
    pub(super) async fn reconcile_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.poll);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.stop.cancelled() => return,
            }
            let running = match self.lifecycle.store.non_terminal_deployments().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list running deployments");
                    continue;
                }
            };
            for d in running {
                if self.local.knows(&d.id) || self.is_watching(&d.id) {
                    continue;
                }
                match &d.task {
                    Some(task) => self.watch(
                        d.id.clone(),
                        d.slug.clone(),
                        task.clone(),
                        age_of(&d.created_at),
                    ),
                    None if age_of(&d.updated_at) > ORPHAN_AFTER => {
                        self.lifecycle
                            .event(
                                &d.id,
                                &d.slug,
                                EventBody::failed(
                                    "no build task was started: the server handling this deployment stopped; deploy again",
                                ),
                            )
                            .await;
                    }
                    None => {}
                }
            }
        }
    }

    pub(super) fn is_watching(&self, id: &str) -> bool {
        self.watching.lock().expect("not poisoned").contains(id)
    }

    /// Watches a task until its deployment ends (at most one watcher per deployment here).
    pub(super) fn watch(self: &Arc<Self>, id: String, slug: String, task: String, age: Duration) {
        self.watching
            .lock()
            .expect("not poisoned")
            .insert(id.clone());
        let me = self.clone();
        let watched = &self.lifecycle.metrics.ecs_builds_watched;
        watched.inc();
        self.tracker.spawn(async move {
            let created = std::time::Instant::now()
                .checked_sub(age)
                .unwrap_or_else(std::time::Instant::now);
            tokio::select! {
                () = me.follow(&id, &slug, &task, created) => {}
                () = me.stop.cancelled() => {}
            }
            me.watching.lock().expect("not poisoned").remove(&id);
            me.lifecycle.metrics.ecs_builds_watched.dec();
        });
    }

    pub(super) async fn follow(
        &self,
        id: &str,
        slug: &str,
        task: &str,
        created: std::time::Instant,
    ) {
        let bus = &self.lifecycle.bus;
        let mut sub = bus.subscribe(id, 0).await;
        let mut last = 0;
        for e in &sub.backlog {
            last = e.seq;
            self.lifecycle.apply(id, slug, &e.body).await;
            if e.is_terminal() {
                seal(bus.as_ref(), id).await;
                return;
            }
        }
        let mut poll = tokio::time::interval(self.settings.poll);
        let mut stopped: Option<(tokio::time::Instant, Ending)> = None;
        loop {
            let next = async {
                match sub.live.as_mut() {
                    Some(live) => live.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = next => {
                    let events = match received {
                        Ok(e) if e.seq <= last => continue,
                        Ok(e) if e.seq == last + 1 => vec![e],
                        Ok(_) | Err(RecvError::Lagged(_)) => bus.history(id, last).await,
                        Err(RecvError::Closed) => {
                            sub = bus.subscribe(id, last).await;
                            std::mem::take(&mut sub.backlog)
                        }
                    };
                    for e in events {
                        last = e.seq;
                        self.lifecycle.apply(id, slug, &e.body).await;
                        if e.is_terminal() {
                            seal(bus.as_ref(), id).await;
                            return;
                        }
                    }
                }
                _ = poll.tick() => {
                    if stopped.is_none() && created.elapsed() > self.settings.deadline {
                        tracing::warn!(deployment = id, task, "build past its deadline; stopping the task");
                        self.stop_task(task, TIMEOUT_REASON).await;
                        stopped = Some((tokio::time::Instant::now(), Ending {
                            body: EventBody::failed(format!(
                                "the build did not finish within {}s (the task was stopped)",
                                self.settings.deadline.as_secs()
                            )),
                            urgent: true,
                        }));
                    }
                    if stopped.is_none() {
                        if let Some(ending) = self.task_ending(task).await {
                            tracing::info!(deployment = id, task, ?ending, "the build task is stopping");
                            stopped = Some((tokio::time::Instant::now(), ending));
                        }
                    }
                    let Some((since, ending)) = &stopped else { continue };
                    // A stop by ECS (not a cancel) is told at once, with ECS's reason: the
                    // builder, stopped by SIGTERM, waits for it. Otherwise the builder has
                    // its say first; this is the word for a builder that never spoke.
                    if ending.urgent || since.elapsed() >= self.settings.stop_grace {
                        if let Some(e) = bus.publish(id, ending.body.clone()).await.event() {
                            self.lifecycle.apply(id, slug, &e.body).await;
                            seal(bus.as_ref(), id).await;
                            return;
                        }
                    }
                }
            }
        }
    }

    /// How the deployment ends, once ECS stops (or is stopping) its task.
    pub(super) async fn task_ending(&self, task: &str) -> Option<Ending> {
        let out = match self
            .client
            .describe_tasks()
            .cluster(&self.settings.cluster)
            .tasks(task)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(task, error = %sdk_error(e), "DescribeTasks failed");
                return None;
            }
        };
        let Some(t) = out.tasks().first() else {
            let why = out
                .failures()
                .first()
                .and_then(|f| f.reason())
                .unwrap_or("unknown");
            return Some(Ending {
                body: EventBody::failed(format!("the build task {task} is gone from ECS ({why})")),
                urgent: false,
            });
        };
        let exited = t.last_status() == Some("STOPPED");
        if !exited && t.desired_status() != Some("STOPPED") {
            return None;
        }
        let reason = t
            .stopped_reason()
            .filter(|r| !r.is_empty())
            .unwrap_or("no reason given");
        if reason == CANCEL_REASON {
            return Some(Ending {
                body: EventBody::status(Status::Canceled),
                urgent: false,
            });
        }
        let container = t
            .containers()
            .iter()
            .find(|c| c.name() == Some(self.settings.container.as_str()));
        let mut detail = String::new();
        let container_exited = container.is_some_and(|c| c.last_status() == Some("STOPPED"));
        if let Some(code) = container
            .and_then(|c| c.exit_code())
            .filter(|_| container_exited)
        {
            detail.push_str(&format!(", exit code {code}"));
        }
        if let Some(r) = container.and_then(|c| c.reason()) {
            detail.push_str(&format!(", {r}"));
        }
        Some(Ending {
            body: EventBody::failed(format!(
                "the build task stopped before the build finished: {reason}{detail}"
            )),
            // Still stopping: its builder is alive and waiting to hear why.
            urgent: !exited,
        })
    }
}

/// Archives a finished log (the builder wrote its end into the shared bus itself).
async fn seal(bus: &dyn LogBus, id: &str) {
    match bus.shared() {
        Some(shared) => shared.seal(id).await,
        None => tracing::warn!(deployment = id, "no shared log bus to archive the log from"),
    }
}
