//! What a build reads, hashed part by part, and the digest over the parts: two builds
//! of a project's target with the same digest make the same output, so the second is
//! skipped and takes the first's (issue: builds skipped by content).
//!
//! The parts: the project's folder (`[build] root`) and the folders of the workspace
//! packages it depends on, whole; the files (not subfolders) of every folder above
//! those, up to the repository's root (the lockfile, the root package.json,
//! cdeploy.toml, shared tsconfig and npm settings live there); the request's build and
//! site settings and variables; the version of the target's stored variables (from the
//! control plane); Node.js and the package manager as resolved; the target; and this
//! builder's version.
//!
//! Any doubt means the build runs: no lockfile beside a package.json, a workspace that
//! cannot be followed for certain, submodules, Git LFS, or a symlink out of what is
//! compared. Whatever the build reads beyond the parts (the network, the time) is not
//! compared: such a project sets `[build] skip_unchanged = false`.
//!
//! # Layout
//! * this file — [`collect`]: which folders and files, and the parts' digest.
//! * `workspace` — a workspace's packages and those a project depends on.
//! * `trees` — the hashes: git tree and blob ids of the clone, or the uploaded map's.
//! * `tests` — what changes a digest and what does not, on real git repositories.

mod trees;
mod workspace;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cdeploy_core::api::BuildInputs;
use cdeploy_core::manifest::SourceMap;
use cdeploy_core::plan::LOCKFILES;
use cdeploy_storage::Storage;
use sha2::Digest;

use crate::{BuildSpec, SourceSpec};
use trees::Trees;

/// What a build's inputs are read from.
pub(crate) struct Source<'a> {
    pub spec: &'a BuildSpec,
    pub storage: &'a dyn Storage,
    pub checkout: &'a Path,
    pub project_dir: &'a Path,
    /// Where the install runs (the workspace root holding the lockfile, or the project).
    pub install_dir: &'a Path,
    /// Node.js and the package manager as resolved (`Toolchain::key`), empty without.
    pub toolchain: &'a str,
}

/// The names of the parts that are not files ([`settings_parts`]).
const RESERVED: &[&str] = &[
    "settings",
    "variables",
    "stored variables",
    "toolchain",
    "target",
    "builder",
];

/// Most parts one build's inputs name (the builder API's limit too): more builds.
const MAX_PARTS: usize = 10_000;

/// The folders hashed whole and those whose own files are hashed (repository-relative,
/// `""` for the root).
#[derive(Debug, Default, PartialEq, Eq)]
struct Scope {
    folders: BTreeSet<String>,
    files_of: BTreeSet<String>,
}

/// The build's inputs, or why they cannot be told apart (then it builds).
pub(crate) async fn collect(src: &Source<'_>, secrets: &str) -> Result<BuildInputs, String> {
    let checkout = src
        .checkout
        .canonicalize()
        .map_err(|e| format!("cannot read the checkout: {e}"))?;
    // Reads the checkout's folders (bounded): off the async workers.
    let dirs = (
        checkout.clone(),
        src.project_dir.to_path_buf(),
        src.install_dir.to_path_buf(),
    );
    let scope = tokio::task::spawn_blocking(move || scope(&dirs.0, &dirs.1, &dirs.2))
        .await
        .map_err(|e| format!("cannot read the workspace: {e}"))??;
    let trees = match &src.spec.source {
        SourceSpec::Git { .. } => Trees::Git {
            checkout: checkout.clone(),
        },
        SourceSpec::Upload { source_map_key } => Trees::Uploaded {
            map: cdeploy_storage::get_json::<SourceMap>(src.storage, source_map_key)
                .await
                .map_err(|e| format!("cannot read the source map: {e}"))?
                .ok_or("the source map is gone")?,
        },
    };
    let folders: Vec<String> = scope.folders.iter().cloned().collect();
    trees.check_links(&checkout, &folders).await?;
    let mut parts = BTreeMap::new();
    for folder in &scope.folders {
        let name = if folder.is_empty() {
            "./".to_string()
        } else {
            format!("{folder}/")
        };
        parts.insert(name, trees.folder(folder).await?);
    }
    for folder in &scope.files_of {
        for f in trees.files_of(folder).await? {
            if f.link && !scope.compares(&checkout, &f.path) {
                return Err(format!(
                    "{} is a symlink to a place whose changes are not compared",
                    f.path
                ));
            }
            // A file named like a part that is not a file keeps its own name.
            let name = if RESERVED.contains(&f.path.as_str()) {
                format!("./{}", f.path)
            } else {
                f.path
            };
            parts.insert(name, f.hash);
        }
    }
    if parts.len() > MAX_PARTS {
        return Err(format!(
            "more than {MAX_PARTS} files and folders would be compared"
        ));
    }
    parts.extend(settings_parts(src.spec, src.toolchain, secrets));
    Ok(BuildInputs {
        digest: digest(&parts),
        parts,
        commit: trees.commit().await,
        reuse: false,
    })
}

/// The parts that are not files: settings, variables, stored variables' version,
/// toolchain, target and builder.
fn settings_parts(spec: &BuildSpec, toolchain: &str, secrets: &str) -> BTreeMap<String, String> {
    let sha = |bytes: &[u8]| hex::encode(sha2::Sha256::digest(bytes));
    // How the build runs, not what it makes: `--force` and the dependency cache.
    let build = cdeploy_core::config::BuildConfig {
        cache: None,
        skip_unchanged: None,
        ..spec.build.clone()
    };
    // Production's URL (CDEPLOY_URL) is the same for every build of it, so an output
    // may hold it: another domain is another output. A preview's names its deployment.
    let url = (!spec.preview()).then_some(spec.url.as_str());
    let settings = serde_json::json!({ "build": build, "site": spec.site, "url": url });
    // A preview's branch URL (set by the control plane over any the request gave)
    // names its branch; outputs that embed it are not reused (the control plane
    // checks), so the variable itself is no input. Production gets none but the
    // request's own, which is compared.
    let vars: BTreeMap<&String, &String> = spec
        .env
        .iter()
        .filter(|(k, _)| !(spec.preview() && k.as_str() == "CDEPLOY_BRANCH_URL"))
        .collect();
    let target = if spec.preview() {
        "preview"
    } else {
        "production"
    };
    BTreeMap::from([
        ("settings".to_string(), sha(settings.to_string().as_bytes())),
        (
            "variables".to_string(),
            sha(serde_json::to_string(&vars).expect("serializes").as_bytes()),
        ),
        ("stored variables".to_string(), secrets.to_string()),
        ("toolchain".to_string(), toolchain.to_string()),
        ("target".to_string(), target.to_string()),
        ("builder".to_string(), env!("CARGO_PKG_VERSION").to_string()),
    ])
}

/// SHA-256 over the parts' names and hashes, in name order.
fn digest(parts: &BTreeMap<String, String>) -> String {
    let mut h = sha2::Sha256::new();
    for (name, hash) in parts {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(hash.as_bytes());
        h.update([b'\n']);
    }
    hex::encode(h.finalize())
}

/// Which folders and files the build reads, or why that cannot be told.
fn scope(checkout: &Path, project_dir: &Path, install_dir: &Path) -> Result<Scope, String> {
    let canonical = |p: &Path| p.canonicalize().map_err(|e| e.to_string());
    let (project_dir, install_dir) = (canonical(project_dir)?, canonical(install_dir)?);
    if checkout.join(".gitmodules").exists() {
        return Err("the repository has submodules".into());
    }
    if project_dir.join("package.json").exists()
        && !LOCKFILES.iter().any(|l| install_dir.join(l).is_file())
    {
        return Err("there is no lockfile, so what the install gets can change".into());
    }
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::from([project_dir.clone()]);
    if project_dir != checkout {
        dirs.extend(workspace::dependencies(
            checkout,
            &install_dir,
            &project_dir,
        )?);
    }
    let rel = |p: &Path| -> String {
        p.strip_prefix(checkout)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut scope = Scope::default();
    for dir in &dirs {
        scope.folders.insert(rel(dir));
        for above in dir.ancestors().skip(1) {
            if !above.starts_with(checkout) {
                break;
            }
            scope.files_of.insert(rel(above));
        }
    }
    // A folder inside another is hashed with it.
    let whole: Vec<String> = scope.folders.iter().cloned().collect();
    scope
        .folders
        .retain(|f| !whole.iter().any(|o| o != f && contains(o, f)));
    scope
        .files_of
        .retain(|f| !whole.iter().any(|o| contains(o, f)));
    for dir in scope.folders.iter().chain(&scope.files_of) {
        // One answer whatever the reason, as for package.json files.
        let shown = Path::new(dir).join(".gitattributes");
        let text = crate::read_repo_bytes(checkout, &checkout.join(dir), ".gitattributes")
            .map_err(|_| {
                format!(
                    "{} is not a readable file inside the repository",
                    shown.display()
                )
            })?
            .unwrap_or_default();
        if String::from_utf8_lossy(&text).contains("filter=lfs") {
            return Err("the repository keeps files in Git LFS".into());
        }
    }
    Ok(scope)
}

impl Scope {
    /// Whether what the symlink at `path` (repository-relative) points at is compared:
    /// inside a compared folder, or a file directly in a folder whose files are.
    fn compares(&self, checkout: &Path, path: &str) -> bool {
        let Ok(target) = checkout.join(path).canonicalize() else {
            return false;
        };
        let Ok(rel) = target.strip_prefix(checkout) else {
            return false;
        };
        let rel = rel.to_string_lossy();
        let parent = rel.rsplit_once('/').map_or("", |(p, _)| p);
        self.folders.iter().any(|f| contains(f, &rel))
            || (target.is_file() && self.files_of.contains(parent))
    }
}

/// Whether folder `outer` holds `inner` (or is it).
fn contains(outer: &str, inner: &str) -> bool {
    outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}/"))
}

#[cfg(test)]
mod tests;
