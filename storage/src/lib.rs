//! cdeploy's storage: content-addressed blobs, manifests, logs and route pointers, in a
//! local directory (embedded mode), an S3 bucket (distributed mode) or, read-only, at a
//! public HTTP origin (a proxy in front of a public bucket).
//!
//! Every backend implements one [`Storage`] trait, and [`open`] is the one way to get
//! one: it takes a [`StorageSpec`], parsed once from `--storage` (`DIR`,
//! `s3://bucket[/prefix]` or `https://public-bucket-url`), so no caller parses a storage
//! string or builds a backend itself. Keys are the [`cdeploy_core::layout`] paths;
//! backends refuse anything else. Publishing lives here too: it only writes through the
//! trait, and core keeps no I/O backend.
//!
//! # Layout
//! * this file — the [`Storage`] trait, its error, and reading/writing JSON objects.
//! * [`keys`] — which keys exist ([`check_key`]) and the blob rule: bytes under
//!   `blobs/<sha256>` always have that hash ([`check_blob`]).
//! * [`spec`] — [`StorageSpec`], the typed `--storage` value, and [`open`], the one
//!   factory of every backend.
//! * [`local`] — [`LocalStorage`], a directory with atomic writes.
//! * [`s3`] — the S3 backend: its settings (bucket names, `S3_*` variables, patience)
//!   and, with the `aws` feature, the `Storage` implementation.
//! * `aws` (feature `aws`) — the AWS SDK configuration every AWS client uses (S3 here,
//!   ECS in the server) with its one rustls-on-ring HTTP client, and AWS errors in words.
//! * [`http`] — [`http::HttpOrigin`], a read-only origin at a public URL prefix.
//! * [`publish`] — turning uploaded blobs into a live deployment: compressed variants,
//!   the manifest, the route pointer.
//! * [`mime`] — content types as served, and which of them compress.
//!
//! # Features
//! * `aws` — the S3 backend and the AWS SDK (off by default: the binaries turn it on
//!   with their own `aws` feature). Without it an `s3://` spec still parses, and [`open`]
//!   refuses it saying how to get a build that has it.
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

#[cfg(feature = "aws")]
pub mod aws;
pub mod http;
pub mod keys;
pub mod local;
pub mod mime;
pub mod publish;
pub mod s3;
pub mod spec;

pub use keys::{blob_hash_of, check_blob, check_key};
pub use local::LocalStorage;
pub use s3::Patience;
pub use spec::{open, OpenError, SpecError, StorageSpec};

/// What a storage call ran into; the messages name the key.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid storage key {0:?}")]
    InvalidKey(String),
    #[error("storage I/O error on {key}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt object {key}: {message}")]
    Corrupt { key: String, message: String },
    /// A write under `blobs/<sha256>` whose bytes have another hash: refused.
    #[error("refused to store {key}: the content hashes to {actual}")]
    HashMismatch { key: String, actual: String },
    #[error("storage backend error: {0}")]
    Backend(String),
}

/// The result of a storage call.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// An object's bytes as they arrive, in chunks of at most a few hundred KiB.
pub type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Inclusive byte range `start..=end` of an object (`end` < size).
pub type ByteRange = (u64, u64);

/// One stored object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// Last write, in seconds since the Unix epoch.
    pub modified: i64,
}

/// A whole object, or one range of it, read as a stream.
pub fn stream_of(data: Bytes) -> ByteStream {
    Box::pin(futures_util::stream::iter([Ok(data)]))
}

/// Object storage as cdeploy uses it: whole-object reads and writes of immutable data,
/// plus the small mutable route pointers.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// The object, or `None` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;
    /// The object, or bytes `range` of it, as a stream: only that range is read (a
    /// ranged GET, a seek), and never all at once. The caller checked the range
    /// against the object's size. `None` when it does not exist.
    async fn get_stream(&self, key: &str, range: Option<ByteRange>) -> Result<Option<ByteStream>> {
        // Backends without partial reads: the whole object, sliced.
        let Some(data) = self.get(key).await? else {
            return Ok(None);
        };
        Ok(Some(stream_of(match range {
            Some((a, b)) => {
                let end = (b as usize).min(data.len().saturating_sub(1));
                data.slice((a as usize).min(end)..=end)
            }
            None => data,
        })))
    }
    /// The file that holds a content-addressed blob's bytes as they are, when the
    /// backend is a local folder: the proxy sends large contents from it without copying
    /// them. `None` for other backends and other keys.
    fn local_file(&self, key: &str) -> Option<std::path::PathBuf> {
        let _ = key;
        None
    }
    /// Writes an object atomically: readers see the old or the new content, never a part.
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;
    /// Writes an object from a local file without holding it all in memory where possible.
    async fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        let data = tokio::fs::read(path)
            .await
            .map_err(|source| StorageError::Io {
                key: key.to_string(),
                source,
            })?;
        self.put(key, Bytes::from(data)).await
    }
    async fn exists(&self, key: &str) -> Result<bool>;
    /// The object's size in bytes, or `None` when it does not exist (no content read).
    async fn size(&self, key: &str) -> Result<Option<u64>>;
    /// [`Storage::size`] of many objects, in order: what a deployment of thousands of
    /// files asks at every step.
    async fn sizes(&self, keys: &[String]) -> Result<Vec<Option<u64>>> {
        use futures_util::StreamExt;
        // Owned keys: futures borrowing the slice trip over higher-ranked lifetimes.
        futures_util::stream::iter(keys.to_vec())
            .map(|k| async move { self.size(&k).await })
            .buffered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }
    /// [`Storage::put`] of many objects.
    async fn put_many(&self, items: Vec<(String, Bytes)>) -> Result<()> {
        use futures_util::StreamExt;
        futures_util::stream::iter(items)
            .map(|(k, data)| async move { self.put(&k, data).await })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }
    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Every object whose key starts with `prefix` (garbage collection).
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        Err(StorageError::Backend(format!(
            "{} cannot list objects (under {prefix})",
            self.describe()
        )))
    }
    /// A human description for logs (`local:/var/lib/cdeploy/storage`).
    fn describe(&self) -> String;
    /// Whether the storage answers (checked at start-up, to fail fast on a wrong bucket).
    async fn check(&self) -> Result<()> {
        Ok(())
    }
}

/// A shared handle on whichever backend [`open`] chose.
pub type DynStorage = Arc<dyn Storage>;

/// Reads and parses a JSON object.
pub async fn get_json<T: DeserializeOwned>(storage: &dyn Storage, key: &str) -> Result<Option<T>> {
    match storage.get(key).await? {
        None => Ok(None),
        Some(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StorageError::Corrupt {
                    key: key.to_string(),
                    message: e.to_string(),
                })
        }
    }
}

/// Serializes and writes a JSON object.
pub async fn put_json<T: Serialize + ?Sized>(
    storage: &dyn Storage,
    key: &str,
    value: &T,
) -> Result<()> {
    let data = serde_json::to_vec(value).map_err(|e| StorageError::Backend(e.to_string()))?;
    storage.put(key, Bytes::from(data)).await
}
