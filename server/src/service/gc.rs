//! Retention and garbage collection.
//!
//! **Retention**: per project, the newest `keep_deployments` deployments, the one in
//! production, every one still running and every one younger than `keep_days` are
//! kept; the others are deleted (manifest, source map, log, database row).
//!
//! **Blobs** are collected by mark and sweep: every blob a kept deployment's manifest,
//! source map or server bundle names is live; the rest are deleted, but only when older than the grace
//! period *and* not referenced by an upload check within it. The last condition is what
//! makes GC safe against deployments in progress across replicas: every check of a blob
//! (`files/missing`, a deployment's file list, an upload, a local build's upload) first
//! *touches* its row in `blob_state`, and GC *claims* a blob by flipping the same row to
//! `deleting` only if it was not touched within the grace period. Both are single-row
//! upserts, so they serialize: a check after a claim sees `deleting` and treats the
//! blob as missing (the client uploads it again once the deletion is done); a claim
//! after a check sees the fresh touch and keeps the blob.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cdeploy_core::layout;
use cdeploy_core::manifest::Manifest;
use cdeploy_core::server::ServerBundle;
use cdeploy_storage::{
    get_json, ByteRange, ByteStream, DynStorage, Listed, Result as StorageResult, Storage,
};

use crate::db::{DeploymentRow, Store};

pub use crate::config::{Retention, AUDIT_KEEP};

/// What a run did (or, dry, would do).
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub deployments_kept: usize,
    pub deployments_deleted: Vec<String>,
    pub blobs_kept: usize,
    pub blobs_deleted: usize,
    pub bytes_freed: u64,
    /// Objects under `deployments/` with no deployment row (a project deleted while a
    /// late build wrote), deleted.
    pub orphans_deleted: usize,
}

/// One run of retention and mark-and-sweep.
pub async fn run(
    store: &dyn Store,
    storage: &DynStorage,
    retention: Retention,
    dry_run: bool,
) -> anyhow::Result<Report> {
    let started_us = chrono::Utc::now().timestamp_micros();
    let mut gc = Run {
        store,
        storage,
        retention,
        dry_run,
        started: started_us.div_euclid(1_000_000),
        report: Report {
            dry_run,
            ..Default::default()
        },
    };
    let kept = gc.apply_retention().await?;
    gc.delete_orphans(&kept).await?;
    let live = gc.mark(&kept).await?;
    // Touches are kept to the microsecond: with a grace of 0, whatever an upload touched
    // before this run began may go, and nothing it touches from now on.
    let grace_us = i64::try_from(retention.grace.as_micros()).unwrap_or(i64::MAX);
    let cutoff_us = started_us.saturating_sub(grace_us);
    gc.sweep(&live, cutoff_us).await?;
    if !dry_run {
        store.prune_blob_touches(cutoff_us).await?;
        let oldest = chrono::Utc::now().timestamp_micros()
            - i64::try_from(retention.audit_for.as_micros()).unwrap_or(i64::MAX);
        store.prune_audit(oldest).await?;
    }
    Ok(gc.report)
}

/// A run under way.
struct Run<'a> {
    store: &'a dyn Store,
    storage: &'a DynStorage,
    retention: Retention,
    dry_run: bool,
    /// When the run started (seconds since the epoch).
    started: i64,
    report: Report,
}

impl Run<'_> {
    fn grace(&self) -> i64 {
        self.retention.grace.as_secs() as i64
    }

    /// Retention (1): deletes the deployments past it; answers the kept ones.
    async fn apply_retention(&mut self) -> anyhow::Result<Vec<DeploymentRow>> {
        let projects: BTreeMap<String, Option<String>> = self
            .store
            .list_projects()
            .await?
            .into_iter()
            .map(|p| (p.slug, p.production))
            .collect();
        let mut by_project: BTreeMap<String, Vec<DeploymentRow>> = BTreeMap::new();
        for d in self.store.all_deployments().await? {
            by_project.entry(d.slug.clone()).or_default().push(d);
        }
        // What a branch alias serves stays, however old.
        let aliased: HashSet<String> = self.store.aliased().await?.into_iter().collect();
        let mut kept: Vec<DeploymentRow> = Vec::new();
        for (slug, mut rows) in by_project {
            rows.reverse(); // newest first
            let production = projects.get(&slug).cloned().flatten();
            for (i, d) in rows.into_iter().enumerate() {
                let age = chrono::DateTime::parse_from_rfc3339(&d.created_at)
                    .map(|t| self.started - t.timestamp())
                    .unwrap_or(0);
                let keep = i < self.retention.keep_deployments
                    || production.as_deref() == Some(d.id.as_str())
                    || aliased.contains(&d.id)
                    || !d.status.is_terminal()
                    || age < self.retention.keep_for.as_secs() as i64;
                if keep {
                    kept.push(d);
                } else {
                    self.delete_deployment(d.id).await?;
                }
            }
        }
        self.report.deployments_kept = kept.len();
        Ok(kept)
    }

    async fn delete_deployment(&mut self, id: String) -> anyhow::Result<()> {
        if !self.dry_run {
            for key in [
                layout::manifest(&id),
                layout::source_map(&id),
                layout::server_bundle(&id),
                layout::log(&id),
            ] {
                self.storage.delete(&key).await?;
            }
            self.store.delete_deployment(&id).await?;
        }
        self.report.deployments_deleted.push(id);
        Ok(())
    }

    /// Orphans (2): deployment objects (no row), past the grace period.
    async fn delete_orphans(&mut self, kept: &[DeploymentRow]) -> anyhow::Result<()> {
        let kept_ids: HashSet<&str> = kept.iter().map(|d| d.id.as_str()).collect();
        let deleted_ids: HashSet<String> =
            self.report.deployments_deleted.iter().cloned().collect();
        for obj in self.storage.list("deployments/").await? {
            let id = obj.key.split('/').nth(1).unwrap_or("");
            if kept_ids.contains(id)
                || deleted_ids.contains(id)
                || obj.modified > self.started - self.grace()
            {
                continue;
            }
            // Re-check: a deployment created since the listing has a row now.
            if self.store.get_deployment(id).await?.is_some() {
                continue;
            }
            if !self.dry_run {
                self.storage.delete(&obj.key).await?;
            }
            self.report.orphans_deleted += 1;
        }
        Ok(())
    }

    /// Mark (3): what kept deployments reference. A deployment created after this point
    /// touches every blob it names first, which the sweep respects.
    async fn mark(&self, kept: &[DeploymentRow]) -> anyhow::Result<HashSet<String>> {
        let storage = self.storage.as_ref();
        let mut live: HashSet<String> = HashSet::new();
        for d in kept {
            if let Some(m) = get_json::<Manifest>(storage, &layout::manifest(&d.id)).await? {
                live.extend(m.files.into_values().map(|f| f.hash));
            }
            if let Some(map) =
                get_json::<BTreeMap<String, String>>(storage, &layout::source_map(&d.id)).await?
            {
                live.extend(map.into_values());
            }
            if let Some(bundle) =
                get_json::<ServerBundle>(storage, &layout::server_bundle(&d.id)).await?
            {
                live.extend(bundle.files.into_values().map(|f| f.hash));
            }
        }
        Ok(live)
    }

    /// Sweep (4): a blob with its precompressed variants, unless live, young, or
    /// touched by an upload since `cutoff_us`.
    async fn sweep(&mut self, live: &HashSet<String>, cutoff_us: i64) -> anyhow::Result<()> {
        let mut blobs: BTreeMap<String, Vec<Listed>> = BTreeMap::new();
        for obj in self.storage.list("blobs/").await? {
            let name = obj.key.trim_start_matches("blobs/");
            let hash = name.split('.').next().unwrap_or(name).to_string();
            blobs.entry(hash).or_default().push(obj);
        }
        for (hash, objects) in blobs {
            let newest = objects.iter().map(|o| o.modified).max().unwrap_or(0);
            if live.contains(&hash) || newest > self.started - self.grace() {
                self.report.blobs_kept += 1;
                continue;
            }
            let bytes: u64 = objects.iter().map(|o| o.size).sum();
            if self.dry_run {
                self.report.blobs_deleted += 1;
                self.report.bytes_freed += bytes;
                continue;
            }
            if !self.store.claim_blob_for_deletion(&hash, cutoff_us).await? {
                self.report.blobs_kept += 1;
                continue;
            }
            // Variants first: the blob itself goes last, so a half-done deletion never
            // leaves variants of a missing blob.
            let mut result = Ok(());
            for obj in objects.iter().rev() {
                if let Err(e) = self.storage.delete(&obj.key).await {
                    result = Err(e);
                    break;
                }
            }
            self.store.release_blob(&hash).await?;
            result?;
            self.report.blobs_deleted += 1;
            self.report.bytes_freed += bytes;
        }
        Ok(())
    }
}

/// Runs GC every `interval` until `shutdown`.
pub fn start_periodic(
    store: Arc<dyn Store>,
    storage: DynStorage,
    retention: Retention,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.cancelled() => return,
            }
            match run(store.as_ref(), &storage, retention, false).await {
                Ok(r) => tracing::info!(
                    deployments_deleted = r.deployments_deleted.len(),
                    blobs_deleted = r.blobs_deleted,
                    bytes_freed = r.bytes_freed,
                    "garbage collection done"
                ),
                Err(e) => tracing::warn!(error = %e, "garbage collection failed; next run later"),
            }
        }
    });
}

/// The storage local builds upload through: every blob it is asked about or given is
/// touched first (see the module docs), and one being collected reads as missing.
pub struct TouchingStorage {
    pub inner: DynStorage,
    pub store: Arc<dyn Store>,
}

impl TouchingStorage {
    /// Touches a blob key's hash; true when GC is deleting it right now.
    async fn touch(&self, key: &str) -> StorageResult<bool> {
        let Some(hash) = cdeploy_storage::blob_hash_of(key) else {
            return Ok(false);
        };
        self.store
            .touch_blobs(&[hash.to_string()])
            .await
            .map(|d| !d.is_empty())
            .map_err(|e| cdeploy_storage::StorageError::Backend(e.to_string()))
    }

    /// Waits (up to 10 s) until GC is done deleting a blob about to be written.
    async fn settle(&self, key: &str) -> StorageResult<()> {
        for _ in 0..100 {
            if !self.touch(key).await? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(cdeploy_storage::StorageError::Backend(format!(
            "{key} is being garbage-collected; retry"
        )))
    }
}

#[async_trait]
impl Storage for TouchingStorage {
    async fn get(&self, key: &str) -> StorageResult<Option<Bytes>> {
        self.inner.get(key).await
    }
    async fn get_stream(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<Option<ByteStream>> {
        self.inner.get_stream(key, range).await
    }
    fn local_file(&self, key: &str) -> Option<std::path::PathBuf> {
        self.inner.local_file(key)
    }
    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()> {
        self.settle(key).await?;
        self.inner.put(key, data).await
    }
    async fn put_file(&self, key: &str, path: &std::path::Path) -> StorageResult<()> {
        self.settle(key).await?;
        self.inner.put_file(key, path).await
    }
    async fn exists(&self, key: &str) -> StorageResult<bool> {
        Ok(!self.touch(key).await? && self.inner.exists(key).await?)
    }
    async fn size(&self, key: &str) -> StorageResult<Option<u64>> {
        if self.touch(key).await? {
            return Ok(None);
        }
        self.inner.size(key).await
    }
    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> StorageResult<Vec<Listed>> {
        self.inner.list(prefix).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn check(&self) -> StorageResult<()> {
        self.inner.check().await
    }
}
