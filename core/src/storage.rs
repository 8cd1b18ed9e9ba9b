//! The storage seam: content-addressed blobs, manifests, logs and route pointers.
//!
//! [`LocalStorage`] keeps them in a directory (embedded mode). Issue 3 adds S3 behind the
//! same trait. Keys are the [`crate::layout`] paths; backends refuse anything else.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

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
    #[error("storage backend error: {0}")]
    Backend(String),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Object storage as cdeploy uses it: whole-object reads and writes of immutable data,
/// plus the small mutable route pointers.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// The object, or `None` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;
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
    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// A human description for logs (`local:/var/lib/cdeploy/storage`).
    fn describe(&self) -> String;
    /// Whether the storage answers (checked at start-up, to fail fast on a wrong bucket).
    async fn check(&self) -> Result<()> {
        Ok(())
    }
}

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

/// Accepts only the layout's keys: relative, `/`-separated, no dot segments or odd bytes.
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidKey(key.to_string()))
    }
}

/// Storage in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Uses (and creates) `root`.
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(LocalStorage { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn io(key: &str) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
        move |source| StorageError::Io {
            key: key.to_string(),
            source,
        }
    }

    /// A unique temporary path on the same filesystem, for write-then-rename.
    fn temp_path(&self) -> PathBuf {
        self.root.join("tmp").join(crate::ids::random_id(20))
    }

    async fn install(&self, key: &str, tmp: &Path, dest: &Path) -> Result<()> {
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(Self::io(key))?;
        }
        if let Err(e) = tokio::fs::rename(tmp, dest).await {
            let _ = tokio::fs::remove_file(tmp).await;
            return Err(Self::io(key)(e));
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for LocalStorage {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(key)(e)),
        }
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let dest = self.path(key)?;
        let tmp = self.temp_path();
        tokio::fs::write(&tmp, &data).await.map_err(Self::io(key))?;
        self.install(key, &tmp, &dest).await
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        let dest = self.path(key)?;
        let tmp = self.temp_path();
        tokio::fs::copy(path, &tmp).await.map_err(Self::io(key))?;
        self.install(key, &tmp, &dest).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let path = self.path(key)?;
        tokio::fs::try_exists(&path).await.map_err(Self::io(key))
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(key)(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io(key)(e)),
        }
    }

    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn roundtrip_and_key_rules() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        assert_eq!(s.get("blobs/abc").await.unwrap(), None);
        s.put("blobs/abc", Bytes::from_static(b"hi")).await.unwrap();
        assert_eq!(
            s.get("blobs/abc").await.unwrap().unwrap(),
            Bytes::from_static(b"hi")
        );
        assert!(s.exists("blobs/abc").await.unwrap());
        assert_eq!(s.size("blobs/abc").await.unwrap(), Some(2));
        assert_eq!(s.size("blobs/nope").await.unwrap(), None);
        s.delete("blobs/abc").await.unwrap();
        s.delete("blobs/abc").await.unwrap();
        for bad in [
            "../x",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "a b",
            "routes/x\0.json",
            "",
        ] {
            assert!(
                matches!(s.get(bad).await, Err(StorageError::InvalidKey(_))),
                "{bad:?}"
            );
        }
    }
}
