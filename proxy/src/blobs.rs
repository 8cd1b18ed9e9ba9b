//! File contents: small files from the memory cache (filled once however many ask),
//! large ones and ranges streamed from storage, variants compressed on demand.

use bytes::Bytes;
use cdeploy_storage::{ByteRange, StorageError};

use crate::body::{streamed, Body};
use crate::site::Representation;
use crate::{Proxy, ProxyError};

/// Largest file kept in the memory cache; larger ones are streamed from storage, and
/// only the requested range is read.
pub const MAX_CACHED_BLOB: u64 = 4 * 1024 * 1024;

impl Proxy {
    /// A small blob's bytes, from memory when possible (concurrent misses share one read).
    pub(crate) async fn small_blob(&self, key: &str) -> Result<Bytes, ProxyError> {
        if let Some(data) = crate::hot::blob(self.id, key) {
            return Ok(data);
        }
        // Boxed, as every miss of the memo is (`Proxy::site_of`).
        let data = Box::pin(self.blobs.try_get_with_by_ref(key, async {
            let _permit = self.reads.acquire().await.expect("never closed");
            self.storage
                .get(key)
                .await?
                .ok_or_else(|| missing_blob(key))
        }))
        .await?;
        if let Some(kept) = crate::hot::keep_blob(self.id, key, &data) {
            self.send_from_file(key, kept);
        }
        Ok(data)
    }

    /// A large blob this thread keeps, when storage is a local folder: later responses
    /// that carry it send it from its file (`sendfile`), not copied out of memory. The
    /// file is opened in the background (this response does not wait), and declared on
    /// this thread only if the memo still holds this copy then. The file has the blob's
    /// bytes: the key is their hash.
    fn send_from_file(&self, key: &str, kept: Bytes) {
        if kept.len() < cdeploy_conn::MIN_SENDFILE {
            return;
        }
        let Some(path) = self.storage.local_file(key) else {
            return;
        };
        let (proxy, key) = (self.id, key.to_string());
        // On a serving thread's runtime this task runs on that thread, as its
        // connections do.
        tokio::spawn(async move {
            let len = kept.len() as u64;
            let opened =
                tokio::task::spawn_blocking(move || cdeploy_conn::SendFile::open(&path, len)).await;
            let Ok(Some(file)) = opened else {
                return;
            };
            let current = crate::hot::blob(proxy, &key);
            if current.is_some_and(|c| c.as_ptr() == kept.as_ptr()) {
                cdeploy_conn::send_from_file(&kept, file);
            }
        });
    }

    /// A cached blob (or a made variant, or its "not worth it" mark), without reading
    /// storage.
    async fn cached_blob(&self, key: &str) -> Option<Bytes> {
        if let Some(data) = crate::hot::blob(self.id, key) {
            return Some(data);
        }
        let data = Box::pin(self.blobs.get(key)).await?;
        crate::hot::keep_blob(self.id, key, &data);
        Some(data)
    }

    /// A large blob (or a range of it), streamed from storage.
    pub(crate) async fn blob_stream(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<Body, ProxyError> {
        let stream = Box::pin(async {
            let _permit = self.reads.acquire().await.expect("never closed");
            self.storage.get_stream(key, range).await
        })
        .await?;
        Ok(streamed(stream.ok_or_else(|| missing_blob(key))?))
    }

    /// A small file's variant made on demand (`None`: compressing does not pay, or no
    /// compression slot is free, or `cached_only` and it is not made yet: serve the
    /// identity). Kept in the blob cache under the variant's own key, so a page is
    /// compressed once while it is in memory, and concurrent misses share one compression.
    pub(crate) async fn compressed(
        &self,
        rep: &Representation,
        identity_key: &str,
        cached_only: bool,
    ) -> Result<Option<Bytes>, ProxyError> {
        let Some(enc) = rep.encoding else {
            return Ok(None);
        };
        if let Some(made) = self.cached_blob(&rep.key).await {
            // Empty stands for "not worth it": a compressed file is never empty.
            return Ok((!made.is_empty()).then_some(made));
        }
        if cached_only {
            return Ok(None);
        }
        let Ok(slot) = self.compressions.try_acquire() else {
            return Ok(None);
        };
        Box::pin(self.compress(rep, enc, identity_key, slot)).await
    }

    /// Makes and keeps a variant (the part of [`Proxy::compressed`] that runs once per
    /// content, boxed out of every request's future).
    async fn compress(
        &self,
        rep: &Representation,
        enc: cdeploy_core::manifest::Encoding,
        identity_key: &str,
        _slot: tokio::sync::SemaphorePermit<'_>,
    ) -> Result<Option<Bytes>, ProxyError> {
        let data = self.small_blob(identity_key).await?;
        let compressed = tokio::task::spawn_blocking(move || {
            cdeploy_storage::publish::compress_on_demand(enc, &data)
        })
        .await
        .map_err(|e| {
            ProxyError::Storage(StorageError::Backend(format!(
                "compression task failed: {e}"
            )))
        })?;
        self.blobs
            .insert(rep.key.clone(), compressed.clone().unwrap_or_default())
            .await;
        Ok(compressed)
    }

    /// Whether a made variant is known not to pay (so the identity is what is served).
    pub(crate) async fn known_incompressible(&self, rep: &Representation) -> bool {
        rep.on_demand
            && self
                .cached_blob(&rep.key)
                .await
                .is_some_and(|b| b.is_empty())
    }

    /// A representation's size without reading it (variants are not in the manifest).
    pub(crate) async fn blob_size(&self, key: &str) -> Result<Option<u64>, ProxyError> {
        if let Some(b) = self.cached_blob(key).await {
            return Ok(Some(b.len() as u64));
        }
        Ok(Box::pin(
            self.variant_sizes
                .try_get_with_by_ref(key, self.storage.size(key)),
        )
        .await?)
    }
}

fn missing_blob(key: &str) -> StorageError {
    StorageError::Corrupt {
        key: key.to_string(),
        message: "listed in a manifest but missing".into(),
    }
}
