//! Prometheus metrics, in the text exposition format.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use cdeploy_core::event::Status;

#[derive(Default)]
pub struct Metrics {
    pub deployments_created: AtomicU64,
    ready: AtomicU64,
    failed: AtomicU64,
    canceled: AtomicU64,
    pub builds_running: AtomicI64,
    pub builds_queued: AtomicI64,
    /// ECS build tasks this replica is watching (every replica watches every one).
    pub ecs_builds_watched: AtomicI64,
    pub blobs_uploaded: AtomicU64,
    pub blob_bytes_uploaded: AtomicU64,
}

impl Metrics {
    pub fn finished(&self, status: Status) {
        let counter = match status {
            Status::Ready => &self.ready,
            Status::Failed => &self.failed,
            Status::Canceled => &self.canceled,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP cdeploy_deployments_created_total Deployments created."
        );
        let _ = writeln!(out, "# TYPE cdeploy_deployments_created_total counter");
        let _ = writeln!(
            out,
            "cdeploy_deployments_created_total {}",
            g(&self.deployments_created)
        );
        let _ = writeln!(
            out,
            "# HELP cdeploy_deployments_finished_total Deployments that reached a terminal state."
        );
        let _ = writeln!(out, "# TYPE cdeploy_deployments_finished_total counter");
        for (status, v) in [
            ("ready", &self.ready),
            ("failed", &self.failed),
            ("canceled", &self.canceled),
        ] {
            let _ = writeln!(
                out,
                "cdeploy_deployments_finished_total{{status=\"{status}\"}} {}",
                g(v)
            );
        }
        let _ = writeln!(out, "# HELP cdeploy_builds_running Builds running now.");
        let _ = writeln!(out, "# TYPE cdeploy_builds_running gauge");
        let _ = writeln!(
            out,
            "cdeploy_builds_running {}",
            self.builds_running.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP cdeploy_builds_queued Builds waiting for a slot."
        );
        let _ = writeln!(out, "# TYPE cdeploy_builds_queued gauge");
        let _ = writeln!(
            out,
            "cdeploy_builds_queued {}",
            self.builds_queued.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP cdeploy_ecs_builds_watched ECS build tasks running now (as this replica sees them)."
        );
        let _ = writeln!(out, "# TYPE cdeploy_ecs_builds_watched gauge");
        let _ = writeln!(
            out,
            "cdeploy_ecs_builds_watched {}",
            self.ecs_builds_watched.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP cdeploy_blobs_uploaded_total Blobs stored from uploads (PUT /v1/files/<sha256> and POST /v1/files/batch)."
        );
        let _ = writeln!(out, "# TYPE cdeploy_blobs_uploaded_total counter");
        let _ = writeln!(
            out,
            "cdeploy_blobs_uploaded_total {}",
            g(&self.blobs_uploaded)
        );
        let _ = writeln!(out, "# TYPE cdeploy_blob_bytes_uploaded_total counter");
        let _ = writeln!(
            out,
            "cdeploy_blob_bytes_uploaded_total {}",
            g(&self.blob_bytes_uploaded)
        );
        out
    }
}
