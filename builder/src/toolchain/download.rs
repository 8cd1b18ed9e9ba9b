//! Fetching one package version into the toolchain directory: its tarball downloaded
//! (size-capped), checked against the registry's integrity and a corepack pin, unpacked
//! aside and moved into place whole, leased for the build; then older versions evicted
//! to keep the directory under its cap.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::files::{set_mode, unpack};
use super::integrity::{Hashes, IntegrityError};
use super::kept::{evict, lease, Lease};
use super::registry::dir_name;
use super::{Toolchains, COMPLETE};
use crate::BuildError;

/// Largest tarball fetched (Node.js is ~50 MB; Bun ~40 MB).
const MAX_TARBALL: u64 = 256 << 20;

/// Where a version's tarball is, and the registry's integrity for it.
struct Dist {
    tarball: String,
    integrity: Option<String>,
}

/// Why a version could not be fetched (after "cannot fetch <name>@<version>: ").
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Http(reqwest::Error),
    #[error("{url}: HTTP {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("the tarball is larger than {} MiB", MAX_TARBALL >> 20)]
    TooLarge,
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    #[error("{0}")]
    Task(tokio::task::JoinError),
    #[error("cannot unpack: {0}")]
    Unpack(std::io::Error),
    #[error("cannot move the unpacked package into place")]
    NotMoved,
    #[error("another builder evicted it at once: the toolchain directory is over its size cap with every other version in use (raise --toolchain-max-mb / TOOLCHAIN_MAX_MB)")]
    EvictedAtOnce,
}

impl Toolchains {
    /// The unpacked `name@version`, fetched and verified if not kept yet, and leased
    /// (into `leases`) for the build.
    pub(super) async fn fetch(
        &self,
        name: &str,
        version: &str,
        pinned: Option<&str>,
        leases: &mut Vec<Lease>,
    ) -> Result<PathBuf, BuildError> {
        let target = self.dir.join(dir_name(name)).join(version);
        if let Some(lease) = lease(&target) {
            leases.push(lease);
            return Ok(target);
        }
        let dist = self.dist(name, version).await?;
        let lease = self
            .install(&dist, version, pinned, &target)
            .await
            .map_err(|e| BuildError::failed(format!("cannot fetch {name}@{version}: {e}")))?;
        leases.push(lease);
        self.make_room().await;
        Ok(target)
    }

    /// The registry's `dist` of `name@version`.
    async fn dist(&self, name: &str, version: &str) -> Result<Dist, BuildError> {
        let doc = self.metadata(name).await?;
        let dist = doc
            .pointer(&format!(
                "/versions/{}/dist",
                version.replace('~', "~0").replace('/', "~1")
            ))
            .cloned()
            .ok_or_else(|| {
                BuildError::failed(format!(
                    "{name}@{version} does not exist in the npm registry {}",
                    self.registry
                ))
            })?;
        Ok(Dist {
            tarball: dist
                .get("tarball")
                .and_then(|t| t.as_str())
                .unwrap_or_default()
                .to_string(),
            integrity: dist
                .get("integrity")
                .and_then(|t| t.as_str())
                .map(String::from),
        })
    }

    /// Downloads, verifies and unpacks a version into `target`, and leases it.
    async fn install(
        &self,
        dist: &Dist,
        version: &str,
        pinned: Option<&str>,
        target: &Path,
    ) -> Result<Lease, FetchError> {
        let parent = target.parent().expect("a package folder has a parent");
        std::fs::create_dir_all(parent).map_err(FetchError::Io)?;
        set_mode(&self.dir, 0o711);
        set_mode(parent, 0o755);
        let file = self.download(dist, pinned, parent).await?;
        unpack_into_place(file.path(), version, target).await?;
        lease(target).ok_or(FetchError::EvictedAtOnce)
    }

    /// The tarball, in a temporary file in `dir`, checked.
    async fn download(
        &self,
        dist: &Dist,
        pinned: Option<&str>,
        dir: &Path,
    ) -> Result<tempfile::NamedTempFile, FetchError> {
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(FetchError::Io)?;
        let mut resp = self
            .client
            .get(&dist.tarball)
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .map_err(FetchError::Http)?;
        if !resp.status().is_success() {
            return Err(FetchError::Status {
                url: dist.tarball.clone(),
                status: resp.status(),
            });
        }
        let mut hashes = Hashes::new(dist.integrity.as_deref());
        let mut size = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(FetchError::Http)? {
            size += chunk.len() as u64;
            if size > MAX_TARBALL {
                return Err(FetchError::TooLarge);
            }
            hashes.update(&chunk);
            file.write_all(&chunk).map_err(FetchError::Io)?;
        }
        hashes.verify(pinned)?;
        Ok(file)
    }

    /// Something was added: makes room, sparing what builds (this one too) hold.
    async fn make_room(&self) {
        let (dir, max) = (self.dir.clone(), self.max_bytes);
        match tokio::task::spawn_blocking(move || evict(&dir, max)).await {
            Ok(evicted) => {
                for (what, bytes) in &evicted.removed {
                    tracing::info!(toolchain = %what, mib = bytes >> 20, "evicted the least recently used toolchain");
                }
                if evicted.total > max {
                    tracing::warn!(
                        mib = evicted.total >> 20,
                        max_mib = max >> 20,
                        "the toolchain directory is over its cap, with every version in use"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot evict toolchains"),
        }
    }
}

/// Unpacks `archive` beside `target` and moves it into place whole, marked complete
/// (with its version and size). Another build may have done the same meanwhile.
async fn unpack_into_place(archive: &Path, version: &str, target: &Path) -> Result<(), FetchError> {
    let parent = target.parent().expect("a package folder has a parent");
    let unpack_to = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(parent)
        .map_err(FetchError::Io)?;
    let (archive, dest) = (archive.to_path_buf(), unpack_to.path().to_path_buf());
    let bytes = tokio::task::spawn_blocking(move || unpack(&archive, &dest))
        .await
        .map_err(FetchError::Task)?
        .map_err(FetchError::Unpack)?;
    std::fs::write(
        unpack_to.path().join(COMPLETE),
        format!("{version}\n{bytes}\n"),
    )
    .map_err(FetchError::Io)?;
    set_mode(unpack_to.path(), 0o755);
    let unpacked = unpack_to.keep();
    if std::fs::rename(&unpacked, target).is_err() {
        // Another build unpacked the same version meanwhile.
        let _ = std::fs::remove_dir_all(&unpacked);
        if !target.join(COMPLETE).is_file() {
            return Err(FetchError::NotMoved);
        }
    }
    Ok(())
}
