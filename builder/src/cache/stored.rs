//! The same cache kept in storage, for builders whose disk ends with them (ECS tasks):
//! `node_modules` of the install folder as a zstd-compressed tar under `cache/<slug>/`,
//! restored before the install when the lockfile, Node.js, the package manager and the
//! install command are unchanged. zstd rather than gzip: a 10,000-file tree packs four
//! times and unpacks three times faster, and the entry is smaller.

use std::path::Path;

use bytes::Bytes;
use cdeploy_core::layout;
use cdeploy_storage::{Storage, StorageError};

use super::archive::{self, PackError};

/// Largest entry kept (a Next.js app's node_modules packs to ~100 MiB).
pub const MAX_ENTRY: u64 = 1024 << 20;

/// Why an entry could not be restored or saved.
#[derive(Debug, thiserror::Error)]
pub enum StoredError {
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot unpack it: {0}")]
    Unpack(std::io::Error),
    #[error(transparent)]
    Pack(#[from] PackError),
}

/// The storage key of a cache key made by `cache::key` (`<slug>--<hash>`).
pub fn storage_key(slug: &str, key: &str) -> String {
    layout::build_cache(slug, key.rsplit("--").next().unwrap_or(key))
}

/// What a restore took.
pub struct Restored {
    pub bytes: u64,
    pub fetch_secs: f64,
    pub unpack_secs: f64,
}

/// Restores the entry into `install_dir/node_modules`, owned by `owner` when given
/// (the build's uid). `Ok(None)`: no entry.
pub async fn restore(
    storage: &dyn Storage,
    key: &str,
    install_dir: &Path,
    owner: Option<u32>,
) -> Result<Option<Restored>, StoredError> {
    let started = std::time::Instant::now();
    let Some(data) = storage.get(key).await? else {
        return Ok(None);
    };
    let fetch_secs = started.elapsed().as_secs_f64();
    let bytes = data.len() as u64;
    let dir = install_dir.to_path_buf();
    let started = std::time::Instant::now();
    tokio::task::spawn_blocking(move || archive::unpack(&data, &dir, owner))
        .await?
        .map_err(StoredError::Unpack)?;
    Ok(Some(Restored {
        bytes,
        fetch_secs,
        unpack_secs: started.elapsed().as_secs_f64(),
    }))
}

/// Packs `install_dir/node_modules` and stores it; returns the packed size, or why
/// nothing was stored.
pub async fn save(
    storage: &dyn Storage,
    key: &str,
    install_dir: &Path,
) -> Result<u64, StoredError> {
    let dir = install_dir.to_path_buf();
    let packed = tokio::task::spawn_blocking(move || archive::pack(&dir, MAX_ENTRY)).await??;
    let size = packed.len() as u64;
    storage.put(key, Bytes::from(packed)).await?;
    Ok(size)
}
