//! Prometheus metrics (`GET /metrics`), kept and encoded by prometheus-client.

use std::sync::atomic::Ordering;

use cdeploy_core::event::Status;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

pub struct Metrics {
    registry: Registry,
    pub deployments_created: Counter,
    finished: Family<StatusLabel, Counter>,
    pub builds_running: Gauge,
    pub builds_queued: Gauge,
    /// ECS build tasks this replica is watching (every replica watches every one).
    pub ecs_builds_watched: Gauge,
    pub blobs_uploaded: Counter,
    pub blob_bytes_uploaded: Counter,
    connections_open: Gauge,
    connections_shed: Counter,
    connections_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("cdeploy"),
            deployments_created: Counter::default(),
            finished: Family::default(),
            builds_running: Gauge::default(),
            builds_queued: Gauge::default(),
            ecs_builds_watched: Gauge::default(),
            blobs_uploaded: Counter::default(),
            blob_bytes_uploaded: Counter::default(),
            connections_open: Gauge::default(),
            connections_shed: Counter::default(),
            connections_refused: Counter::default(),
        };
        let registry = &mut m.registry;
        // Counters are exposed with `_total` appended.
        registry.register(
            "deployments_created",
            "Deployments created",
            m.deployments_created.clone(),
        );
        registry.register(
            "deployments_finished",
            "Deployments that reached a terminal state",
            m.finished.clone(),
        );
        registry.register(
            "builds_running",
            "Builds running now",
            m.builds_running.clone(),
        );
        registry.register(
            "builds_queued",
            "Builds waiting for a slot",
            m.builds_queued.clone(),
        );
        registry.register(
            "ecs_builds_watched",
            "ECS build tasks running now (as this replica sees them)",
            m.ecs_builds_watched.clone(),
        );
        registry.register(
            "blobs_uploaded",
            "Blobs stored from uploads (PUT /v1/files/<sha256> and POST /v1/files/batch)",
            m.blobs_uploaded.clone(),
        );
        registry.register(
            "blob_bytes_uploaded",
            "Bytes of the blobs stored from uploads",
            m.blob_bytes_uploaded.clone(),
        );
        registry.register(
            "connections_open",
            "Open connections (API and embedded proxy)",
            m.connections_open.clone(),
        );
        registry.register(
            "connections_shed",
            "Idle connections closed to admit new ones at the cap",
            m.connections_shed.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused at the cap because all were busy",
            m.connections_refused.clone(),
        );
        for status in ["ready", "failed", "canceled"] {
            // Present from the start, at 0, as scrapers expect of a known label set.
            let _ = m.finished.get_or_create(&StatusLabel {
                status: status.into(),
            });
        }
        m
    }
}

impl Metrics {
    pub fn finished(&self, status: Status) {
        let status = match status {
            Status::Ready => "ready",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
            _ => return,
        };
        self.finished
            .get_or_create(&StatusLabel {
                status: status.into(),
            })
            .inc();
    }

    /// The exposition (OpenMetrics text), with the connection layer's figures as of now:
    /// `open` connections, and the totals it counted of connections `shed` and `refused`.
    pub fn render(&self, open: u64, shed: u64, refused: u64) -> String {
        self.connections_open.set(open as i64);
        // The connection layer keeps these totals itself; the registry shows them.
        self.connections_shed.inner().store(shed, Ordering::Relaxed);
        self.connections_refused
            .inner()
            .store(refused, Ordering::Relaxed);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_are_those_scrapers_know() {
        let m = Metrics::default();
        m.deployments_created.inc();
        m.finished(Status::Ready);
        m.finished(Status::Ready);
        m.builds_running.inc();
        m.blobs_uploaded.inc_by(3);
        let text = m.render(7, 2, 1);
        for line in [
            "cdeploy_deployments_created_total 1",
            "cdeploy_deployments_finished_total{status=\"ready\"} 2",
            "cdeploy_deployments_finished_total{status=\"failed\"} 0",
            "cdeploy_builds_running 1",
            "cdeploy_blobs_uploaded_total 3",
            "cdeploy_connections_open 7",
            "cdeploy_connections_shed_total 2",
            "cdeploy_connections_refused_total 1",
            "# TYPE cdeploy_builds_queued gauge",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
        }
    }
}
