//! Storage as an API builder sees it: its uploaded source, its blobs and its build
//! cache entry, each through the builder API; nothing else exists for it.

use async_trait::async_trait;
use bytes::Bytes;
use cdeploy_core::api;
use cdeploy_core::layout;
use cdeploy_storage::{blob_hash_of, Result as StorageResult, Storage, StorageError};
use std::sync::Arc;

use super::{CallError, Client};

/// The entry of a build cache key (`cache/<slug>/<entry>.tar.zst`); the server puts it
/// under the slug of the build's own project, whatever the key says.
fn cache_entry_of(key: &str) -> Option<&str> {
    let entry = key
        .strip_prefix("cache/")?
        .rsplit('/')
        .next()?
        .strip_suffix(".tar.zst")?;
    cdeploy_core::layout::is_cache_entry(entry).then_some(entry)
}

/// Storage as an API builder may use it: its own source map and source blobs to read,
/// blobs to upload. Nothing else exists for it.
pub struct ApiStorage {
    pub client: Arc<Client>,
}

impl ApiStorage {
    fn unsupported(key: &str) -> StorageError {
        StorageError::Backend(format!("{key} is not available to a builder"))
    }

    fn backend(e: CallError) -> StorageError {
        StorageError::Backend(e.message)
    }
}

#[async_trait]
impl Storage for ApiStorage {
    async fn get(&self, key: &str) -> StorageResult<Option<Bytes>> {
        let path = if key == layout::source_map(&self.client.id) {
            "/source".to_string()
        } else if let Some(entry) = cache_entry_of(key) {
            format!("/cache/{entry}")
        } else if let Some(hash) = blob_hash_of(key) {
            format!("/files/{hash}")
        } else {
            return Err(Self::unsupported(key));
        };
        match self
            .client
            .call("reading the source", |http, url| http.get(url), &path)
            .await
        {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(Self::backend(e)),
        }
    }

    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()> {
        if let Some(entry) = cache_entry_of(key) {
            return self
                .client
                .call(
                    "saving the build cache",
                    |http, url| http.put(url).body(data.clone()),
                    &format!("/cache/{entry}"),
                )
                .await
                .map(|_| ())
                .map_err(Self::backend);
        }
        let hash = blob_hash_of(key).ok_or_else(|| Self::unsupported(key))?;
        self.client
            .call(
                "uploading",
                |http, url| http.put(url).body(data.clone()),
                &format!("/files/{hash}"),
            )
            .await
            .map(|_| ())
            .map_err(Self::backend)
    }

    async fn exists(&self, key: &str) -> StorageResult<bool> {
        let hash = blob_hash_of(key).ok_or_else(|| Self::unsupported(key))?;
        let body = self
            .client
            .post_json(
                "checking stored files",
                "/files/missing",
                &api::MissingRequest {
                    hashes: vec![hash.to_string()],
                },
            )
            .await
            .map_err(Self::backend)?;
        let missing: api::MissingResponse = serde_json::from_slice(&body)
            .map_err(|e| StorageError::Backend(format!("checking stored files: {e}")))?;
        Ok(missing.missing.is_empty())
    }

    async fn size(&self, key: &str) -> StorageResult<Option<u64>> {
        Err(Self::unsupported(key))
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        Err(Self::unsupported(key))
    }

    fn describe(&self) -> String {
        format!(
            "the control plane's builder API ({})",
            self.client.bases.join(",")
        )
    }
}
