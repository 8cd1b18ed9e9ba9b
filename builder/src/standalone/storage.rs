//! The storage a trusted builder (run by hand) writes directly: a local directory
//! (`STORAGE_DIR`) or S3 (`S3_BUCKET_NAME` and the other `S3_*` variables). An API
//! builder has none of its own: it goes through [`crate::remote::ApiStorage`]. The
//! variables name a [`StorageSpec`]; [`cdeploy_storage::open`] opens it.

use std::path::PathBuf;

use cdeploy_storage::{DynStorage, OpenError, Patience, SpecError, StorageSpec};

use crate::env;

/// Why no storage could be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageSetupError {
    #[error("{}={}: {source}", env::STORAGE_DIR, dir.display())]
    LocalDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// The `S3_*` variables name no valid bucket or prefix (the message says which).
    #[error("{0}")]
    S3(#[from] SpecError),
    /// A valid spec that still could not be opened.
    #[error(transparent)]
    Open(OpenError),
    #[error(
        "no storage configured: set {} or {}",
        env::STORAGE_DIR,
        env::S3_BUCKET_NAME
    )]
    NotConfigured,
}

/// Storage from `STORAGE_DIR`, or S3 from `S3_BUCKET_NAME` and the other `S3_*` variables.
pub async fn from_env() -> Result<DynStorage, StorageSetupError> {
    let spec = match std::env::var(env::STORAGE_DIR) {
        Ok(dir) => StorageSpec::Local(dir.into()),
        Err(_) => StorageSpec::s3_from_seed_env(|k| std::env::var(k).ok())
            .ok_or(StorageSetupError::NotConfigured)??,
    };
    cdeploy_storage::open(&spec, Patience::WRITER)
        .await
        .map_err(|e| match e {
            OpenError::Local { dir, source } => StorageSetupError::LocalDir { dir, source },
            e => StorageSetupError::Open(e),
        })
}
