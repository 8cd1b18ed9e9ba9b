//! The storage a trusted builder (run by hand) writes directly: a local directory
//! (`STORAGE_DIR`) or S3 (`S3_BUCKET_NAME` and the other `S3_*` variables). An API
//! builder has none of its own: it goes through [`crate::remote::ApiStorage`].

use std::sync::Arc;

use cdeploy_core::s3::{Patience, S3Settings, S3Storage};
use cdeploy_core::storage::{DynStorage, LocalStorage};

use crate::env;

/// Why no storage could be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageSetupError {
    #[error("{}={dir}: {source}", env::STORAGE_DIR)]
    LocalDir { dir: String, source: std::io::Error },
    /// The `S3_*` variables are incomplete or invalid (the message says which).
    #[error("{0}")]
    S3(String),
    #[error(
        "no storage configured: set {} or {}",
        env::STORAGE_DIR,
        env::S3_BUCKET_NAME
    )]
    NotConfigured,
}

/// Storage from `STORAGE_DIR`, or S3 from `S3_BUCKET_NAME` and the other `S3_*` variables.
pub async fn from_env() -> Result<DynStorage, StorageSetupError> {
    if let Ok(dir) = std::env::var(env::STORAGE_DIR) {
        let s = LocalStorage::open(&dir)
            .map_err(|source| StorageSetupError::LocalDir { dir, source })?;
        return Ok(Arc::new(s));
    }
    match S3Settings::from_env(Patience::WRITER) {
        Some(settings) => {
            let settings = settings.map_err(StorageSetupError::S3)?;
            Ok(Arc::new(S3Storage::connect(&settings).await))
        }
        None => Err(StorageSetupError::NotConfigured),
    }
}
