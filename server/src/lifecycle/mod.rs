//! A deployment's life after it is created: every event goes through here, so the log,
//! the stored status, the production pointer and the proxy cache never disagree.
//!
//! # Layout
//! * this file — [`Lifecycle`] (events, status, production, aliases) and
//!   [`LivePublisher`], where the control plane's builds go live.
//! * `reuse` — a build skipped for an earlier deployment's output: its inputs recorded,
//!   the candidate checked and its manifest copied.

mod reuse;

pub use reuse::skipped_reason;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use cdeploy_builder::EventSink;
use cdeploy_core::event::{EventBody, Status};
use cdeploy_proxy::Proxy;

use crate::db::{Advance, Store};
use crate::metrics::Metrics;
use cdeploy_logbus::{LogBus, Published};
use cdeploy_storage::publish;

pub struct Lifecycle {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn LogBus>,
    pub proxy: Option<Arc<Proxy>>,
    pub metrics: Arc<Metrics>,
    /// Set while the server shuts down: builds it stops end `failed` with that reason,
    /// not `canceled` (nobody canceled them).
    pub shutting_down: AtomicBool,
    /// Commit statuses for deployments a forge's webhook made (when a forge token is set).
    pub statuses: Option<Arc<crate::statuses::StatusReporter>>,
    /// Sends deploy events to projects' endpoints (`None` in tests that need none).
    pub notifier: Option<Arc<crate::notify::Notifier>>,
}

impl Lifecycle {
    /// Records one event of a deployment. Status events update the database; a `ready`
    /// deployment that was promoted becomes the project's production deployment.
    pub async fn event(&self, id: &str, slug: &str, mut body: EventBody) -> Published {
        if let EventBody::Status {
            status: Status::Canceled,
            ..
        } = body
        {
            if self.shutting_down.load(Ordering::SeqCst) {
                body = EventBody::failed("the server shut down during the build; deploy again");
            }
        }
        if !self.record(id, &body).await {
            return Published::Closed; // already terminal: the log is closed too
        }
        let ready = matches!(
            &body,
            EventBody::Status {
                status: Status::Ready,
                ..
            }
        );
        // Production was decided at activation ([`Lifecycle::go_live`]), before this
        // event: whoever sees `ready` finds it serving. Caches learn it now.
        if ready {
            self.activated(slug, id).await;
        }
        self.bus.publish(id, body).await
    }

    /// The effects of an event a builder put in the log itself (ECS builds): the stored
    /// status, metrics, and a `ready` deployment becoming production. Idempotent, so
    /// every replica watching the deployment may apply it.
    pub async fn apply(&self, id: &str, slug: &str, body: &EventBody) {
        if self.record(id, body).await {
            if let EventBody::Status {
                status: Status::Ready,
                ..
            } = body
            {
                self.activated(slug, id).await;
            }
        }
    }

    /// Stores a status event's status. False when the deployment had already ended.
    async fn record(&self, id: &str, body: &EventBody) -> bool {
        let EventBody::Status { status, error, url } = body else {
            return true;
        };
        match self.store.set_status(id, *status, error.as_deref()).await {
            Ok(false) => return false,
            Ok(true) => {
                let reused = match (status, &self.statuses) {
                    (Status::Ready, Some(_)) => self.reused_from(id).await,
                    _ => None,
                };
                self.report_status(id, *status, url.clone(), error.clone(), reused);
                self.notify();
            }
            Err(e) => tracing::error!(deployment = id, error = %e, "cannot record the status"),
        }
        if status.is_terminal() {
            self.metrics.finished(*status);
        }
        true
    }

    /// Events were written to the outbox: the sender takes them now.
    pub fn notify(&self) {
        if let Some(n) = &self.notifier {
            n.wake();
        }
    }

    /// Sends a deployment's status to its commit on the forge, if a webhook made it.
    pub fn report_status(
        &self,
        id: &str,
        status: Status,
        url: Option<String>,
        error: Option<String>,
        unchanged_since: Option<String>,
    ) {
        if let Some(reporter) = &self.statuses {
            reporter.send(crate::statuses::Report {
                deployment: id.to_string(),
                status,
                url,
                error,
                unchanged_since,
            });
        }
    }

    /// The deployment whose output `id` took, if it did.
    async fn reused_from(&self, id: &str) -> Option<String> {
        match self.store.get_deployment(id).await {
            Ok(d) => d.and_then(|d| d.reused_from),
            Err(e) => {
                tracing::warn!(deployment = id, error = %e, "cannot read the deployment");
                None
            }
        }
    }

    /// Makes a just-built deployment production, unless one created after it already
    /// is (a build that started earlier but finished later stays a preview) or the
    /// project is being deleted. The database decides; the route pointer follows it, and
    /// is rewritten if another activation moved production while this one wrote.
    pub async fn go_live(
        &self,
        storage: &dyn cdeploy_storage::Storage,
        slug: &str,
        id: &str,
    ) -> Result<Advance, String> {
        let advance = self
            .store
            .advance_production(slug, id)
            .await
            .map_err(|e| format!("cannot record the production deployment: {e}"))?;
        if advance != Advance::Advanced {
            return Ok(advance);
        }
        let mut written = id.to_string();
        publish::set_route(storage, slug, &written)
            .await
            .map_err(|e| format!("cannot update the route: {e}"))?;
        for _ in 0..10 {
            let current = self
                .store
                .get_project(slug)
                .await
                .map_err(|e| format!("cannot read the project: {e}"))?
                .and_then(|p| p.production);
            match current {
                Some(cur) if cur != written => {
                    publish::set_route(storage, slug, &cur)
                        .await
                        .map_err(|e| format!("cannot update the route: {e}"))?;
                    written = cur;
                }
                _ => break,
            }
        }
        self.activated(slug, &written).await;
        Ok(Advance::Advanced)
    }

    /// [`Lifecycle::go_live`] for a just-activated deployment, saying in its log when a
    /// newer one keeps production. A project or deployment deleted meanwhile is an error.
    pub async fn promote_new(
        &self,
        storage: &dyn cdeploy_storage::Storage,
        slug: &str,
        id: &str,
    ) -> Result<(), ActivationError> {
        match self
            .go_live(storage, slug, id)
            .await
            .map_err(ActivationError::Failed)?
        {
            Advance::Advanced => {}
            Advance::Superseded => {
                self.event(
                    id,
                    slug,
                    EventBody::system(
                        cdeploy_core::event::Step::Activate,
                        "A deployment created after this one is production already: this one stays a preview (promote it to serve it)",
                    ),
                )
                .await;
            }
            Advance::Gone => return Err(ActivationError::Gone),
        }
        Ok(())
    }

    /// A just-activated preview: servable at its own URL (a project with previews only
    /// gets a route without production, which is what makes its previews servable), and
    /// its branch's alias moves to it unless a newer preview of the branch holds it.
    pub async fn preview_live(
        &self,
        storage: &dyn cdeploy_storage::Storage,
        slug: &str,
        id: &str,
    ) -> Result<(), ActivationError> {
        let fail = |what: &str, e: String| ActivationError::Failed(format!("{what}: {e}"));
        let Some(d) = self
            .store
            .get_deployment(id)
            .await
            .map_err(|e| fail("cannot read the deployment", e.to_string()))?
        else {
            return Err(ActivationError::Gone);
        };
        let project = self
            .store
            .get_project(slug)
            .await
            .map_err(|e| fail("cannot read the project", e.to_string()))?;
        let Some(project) = project.filter(|p| !p.deleting) else {
            return Err(ActivationError::Gone);
        };
        self.route_for_previews(storage, slug, project.production.is_none())
            .await?;
        if let Some(label) = d
            .branch
            .as_deref()
            .and_then(|b| cdeploy_core::ids::branch_label(b, slug))
        {
            self.move_alias(storage, slug, &label, &d).await?;
        }
        self.activated(slug, id).await;
        Ok(())
    }

    /// A project with previews only gets a route without production, which is what
    /// makes its previews servable.
    async fn route_for_previews(
        &self,
        storage: &dyn cdeploy_storage::Storage,
        slug: &str,
        no_production: bool,
    ) -> Result<(), ActivationError> {
        let fail = |what: &str, e: String| ActivationError::Failed(format!("{what}: {e}"));
        let route = cdeploy_storage::get_json::<cdeploy_core::manifest::Route>(
            storage,
            &cdeploy_core::layout::route(slug),
        )
        .await
        .map_err(|e| fail("cannot read the route", e.to_string()))?;
        if route.is_none() && no_production {
            publish::set_route(storage, slug, "")
                .await
                .map_err(|e| fail("cannot write the route", e.to_string()))?;
            // A first production deployment may have gone live meanwhile: its route wins.
            let production = self
                .store
                .get_project(slug)
                .await
                .map_err(|e| fail("cannot read the project", e.to_string()))?
                .and_then(|p| p.production);
            if let Some(p) = production {
                publish::set_route(storage, slug, &p)
                    .await
                    .map_err(|e| fail("cannot write the route", e.to_string()))?;
            }
        }
        Ok(())
    }

    /// The branch's alias moves to `d` unless a newer preview of the branch holds it.
    async fn move_alias(
        &self,
        storage: &dyn cdeploy_storage::Storage,
        slug: &str,
        label: &str,
        d: &crate::db::DeploymentRow,
    ) -> Result<(), ActivationError> {
        let fail = |what: &str, e: String| ActivationError::Failed(format!("{what}: {e}"));
        let id = d.id.as_str();
        self.store
            .set_alias(slug, label, id, &d.created_at)
            .await
            .map_err(|e| fail("cannot record the branch alias", e.to_string()))?;
        let current = self
            .store
            .alias(slug, label)
            .await
            .map_err(|e| fail("cannot read the branch alias", e.to_string()))?
            .unwrap_or_else(|| id.to_string());
        cdeploy_storage::put_json(
            storage,
            &cdeploy_core::layout::alias(slug, label),
            &cdeploy_core::manifest::Alias {
                deployment: current.clone(),
            },
        )
        .await
        .map_err(|e| fail("cannot write the branch alias", e.to_string()))?;
        if current != id {
            self.event(
                id,
                slug,
                EventBody::system(
                    cdeploy_core::event::Step::Activate,
                    format!("A newer preview of branch {label} holds its alias: this one is at its own URL only"),
                ),
            )
            .await;
        }
        if let Some(proxy) = &self.proxy {
            proxy.invalidate_alias(slug, label).await;
        }
        Ok(())
    }

    /// After `routes/<slug>.json` points at `id` (or `id` became servable): caches
    /// forget what they knew.
    pub async fn activated(&self, slug: &str, id: &str) {
        if let Some(proxy) = &self.proxy {
            proxy.invalidate_route(slug).await;
            // Someone may have asked for its preview while it was building.
            proxy.invalidate_deployment(id).await;
        }
    }
}

/// The [`EventSink`] a build writes to.
pub struct DeploymentSink {
    pub lifecycle: Arc<Lifecycle>,
    pub id: String,
    pub slug: String,
}

#[async_trait]
impl EventSink for DeploymentSink {
    async fn emit(&self, body: EventBody) {
        self.lifecycle.event(&self.id, &self.slug, body).await;
    }
}

/// Why a deployment could not go live.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("the project (or this deployment) was deleted while this deployment was being built")]
    Gone,
    #[error("{0}")]
    Failed(String),
}

/// Where the control plane's builds go live: the manifest, then production through
/// [`Lifecycle::go_live`].
pub struct LivePublisher {
    pub lifecycle: Arc<Lifecycle>,
    pub storage: cdeploy_storage::DynStorage,
    /// Most files, and summed bytes (per path), of one deployment.
    pub max_files: usize,
    pub max_bytes: u64,
}

impl LivePublisher {
    /// Checks the output's limits, writes the manifest, and (when the spec says so)
    /// makes the deployment production.
    pub async fn publish(
        &self,
        spec: &cdeploy_builder::BuildSpec,
        files: &cdeploy_storage::publish::OutputFiles,
        site: &cdeploy_core::config::SiteConfig,
        rules: &cdeploy_core::rules::RulesConfig,
        server: Option<&cdeploy_core::server::ServerOutput>,
    ) -> Result<cdeploy_core::manifest::Site, ActivationError> {
        let (server_files, server_bytes) = server.map(|s| s.totals()).unwrap_or_default();
        let count = files.len() + server_files;
        let total: u64 = files.values().map(|(_, size)| size).sum::<u64>() + server_bytes;
        let what = if server.is_some() {
            "the output and the server's bundle"
        } else {
            "the output"
        };
        if count > self.max_files {
            return Err(ActivationError::Failed(format!(
                "{what} have {count} files; at most {} per deployment (server setting max_files)",
                self.max_files
            )));
        }
        if total > self.max_bytes {
            return Err(ActivationError::Failed(format!(
                "{what} add up to {} MiB; at most {} MiB per deployment (server setting max_deployment_mb)",
                total.div_ceil(1 << 20),
                self.max_bytes >> 20
            )));
        }
        if let Some(why) = server.and_then(|s| s.validate().err()) {
            return Err(ActivationError::Failed(format!("the server app: {why}")));
        }
        let manifest = publish::write_manifest(
            self.storage.as_ref(),
            (&spec.slug, &spec.deployment_id, spec.preview()),
            files,
            (site, rules),
            server,
        )
        .await
        .map_err(|e| ActivationError::Failed(e.to_string()))?;
        if spec.promote {
            self.lifecycle
                .promote_new(self.storage.as_ref(), &spec.slug, &spec.deployment_id)
                .await?;
        } else {
            self.lifecycle
                .preview_live(self.storage.as_ref(), &spec.slug, &spec.deployment_id)
                .await?;
        }
        Ok(manifest.site)
    }
}
