//! A deployment's life after it is created: every event goes through here, so the log,
//! the stored status, the production pointer and the proxy cache never disagree.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use cdeploy_builder::EventSink;
use cdeploy_core::event::{Event, EventBody, Status};
use cdeploy_proxy::Proxy;

use crate::bus::LogBus;
use crate::db::Store;
use crate::metrics::Metrics;

pub struct Lifecycle {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn LogBus>,
    pub proxy: Option<Arc<Proxy>>,
    pub metrics: Arc<Metrics>,
    /// Set while the server shuts down: builds it stops end `failed` with that reason,
    /// not `canceled` (nobody canceled them).
    pub shutting_down: AtomicBool,
}

impl Lifecycle {
    /// Records one event of a deployment. Status events update the database; a `ready`
    /// deployment that was promoted becomes the project's production deployment.
    pub async fn event(&self, id: &str, slug: &str, mut body: EventBody) -> Option<Event> {
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
            return None; // already terminal: the log is closed too
        }
        let ready = matches!(
            &body,
            EventBody::Status {
                status: Status::Ready,
                ..
            }
        );
        // Production first: whoever sees `ready` (the CLI, then `cdeploy ls`) must find
        // the deployment already serving and recorded as production.
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
        let EventBody::Status { status, error, .. } = body else {
            return true;
        };
        match self.store.set_status(id, *status, error.as_deref()).await {
            Ok(false) => return false,
            Ok(true) => {}
            Err(e) => tracing::error!(deployment = id, error = %e, "cannot record the status"),
        }
        if status.is_terminal() {
            self.metrics.finished(*status);
        }
        true
    }

    /// After `routes/<slug>.json` points at `id`.
    pub async fn activated(&self, slug: &str, id: &str) {
        if let Err(e) = self.store.set_production(slug, Some(id)).await {
            tracing::error!(slug, deployment = id, error = %e, "cannot record the production deployment");
        }
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
