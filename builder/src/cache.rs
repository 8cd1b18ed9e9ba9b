//! The dependency cache: `node_modules` kept between builds of the same project while
//! its lockfile and install command stay the same, so a redeploy skips the install.
//!
//! An entry is moved into the build with `rename` and moved back after a successful
//! build, so two concurrent builds never share one; a build that finds no entry simply
//! installs. Entries follow trust: each belongs to a scope (`layout::cache_scope`:
//! production, hand-made previews, or one branch) and a build reads and writes only its
//! own, so a branch anyone may push to can neither plant code in what production
//! restores nor read what production's builds left (bundlers cache inlined environment
//! values in `node_modules/.cache`). Only the newest entry per project and scope is kept,
//! and at most [`MAX_BRANCH_ENTRIES`] branch scopes per project.

use std::path::{Path, PathBuf};

use sha2::Digest;

use cdeploy_core::plan::LOCKFILES;

/// Finds this project state's entry and moves it into `project_dir` if there is one.
/// Returns the entry's key (to [`store`] after a successful build) and whether one was
/// restored. The work (a `node --version`, file renames) runs off the async threads.
///
/// `cache_dir` is the builder's own: builds never see it, so an entry holds only what a
/// successful build of this project left, and no build can plant one for another.
#[allow(clippy::too_many_arguments)]
pub async fn lookup(
    cache_dir: &Path,
    slug: &str,
    scope: &str,
    checkout: &Path,
    project_dir: &Path,
    install: &str,
    toolchain: &str,
) -> (Option<String>, bool) {
    let toolchain = toolchain.to_string();
    let (cache_dir, slug, scope, checkout, project_dir, install) = (
        cache_dir.to_path_buf(),
        slug.to_string(),
        scope.to_string(),
        checkout.to_path_buf(),
        project_dir.to_path_buf(),
        install.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        let key = key(&slug, &scope, &checkout, &project_dir, &install, &toolchain);
        let hit = key
            .as_ref()
            .is_some_and(|k| restore(&cache_dir, k, &project_dir));
        (key, hit)
    })
    .await
    .unwrap_or((None, false))
}

/// Whether the build left `node_modules` as the install made it.
#[derive(Debug, PartialEq, Eq)]
pub enum Kept {
    Stored,
    /// The build changed what the install made (outside node_modules' own cache
    /// folders): the entry is not kept.
    Changed,
    /// Nothing to keep (no real node_modules, the path moved, another build stored it).
    Skipped,
}

/// Moves `project_dir/node_modules` into the cache as `key`, if it still is what the
/// install made (`installed`: its [`installed_digest`] before the build step, right
/// after the install or the restore). Off the async threads: the walk and dropping an
/// old entry can mean many thousands of files.
pub async fn store(cache_dir: &Path, key: &str, project_dir: &Path, installed: &str) -> Kept {
    let (cache_dir, key, project_dir, installed) = (
        cache_dir.to_path_buf(),
        key.to_string(),
        project_dir.to_path_buf(),
        installed.to_string(),
    );
    tokio::task::spawn_blocking(move || store_now(&cache_dir, &key, &project_dir, &installed))
        .await
        .unwrap_or(Kept::Skipped)
}

/// [`installed_digest`] off the async threads.
pub async fn installed_digest_of(project_dir: &Path) -> Option<String> {
    let dir = project_dir.to_path_buf();
    tokio::task::spawn_blocking(move || installed_digest(&dir))
        .await
        .ok()
        .flatten()
}

/// Top-level folders of `node_modules` that build tools keep their caches in, which
/// builds may change: babel-loader, terser, Nuxt… (`.cache`), Vite (`.vite`, and
/// `.vite-temp` for a bundled config), Astro (`.astro`), TypeScript's build info in
/// Vite's templates (`.tmp`). A list, not a pattern: package managers keep package code
/// in dot-folders too (`.pnpm`, `.bun`, `.store`, `.prisma`), and those must stay as the
/// install made them.
pub const TOOL_CACHES: &[&str] = &[".cache", ".vite", ".vite-temp", ".astro", ".tmp"];

fn is_tool_cache(name: &std::ffi::OsStr) -> bool {
    TOOL_CACHES.iter().any(|c| name == *c)
}

/// A digest of what the install made in `project_dir/node_modules`: every entry's path,
/// type, mode, size, inode and change time (which no unprivileged process can set
/// back), symlinks' targets included, links never followed. Tools' cache folders
/// ([`is_tool_cache`]) are left out. `None` when there is no real node_modules.
pub fn installed_digest(project_dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let root = project_dir.join("node_modules");
    if !std::fs::symlink_metadata(&root).ok()?.is_dir() {
        return None;
    }
    let mut h = sha2::Sha256::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(&rel))
            .ok()?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let meta = entry.metadata().ok()?; // never follows a link
            if rel.as_os_str().is_empty() && meta.is_dir() && is_tool_cache(&name) {
                continue;
            }
            let path = rel.join(&name);
            h.update(path.as_os_str().as_encoded_bytes());
            h.update([0]);
            for n in [
                meta.mode() as i64,
                meta.size() as i64,
                meta.ino() as i64,
                meta.ctime(),
                meta.ctime_nsec(),
            ] {
                h.update(n.to_le_bytes());
            }
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(entry.path()).ok()?;
                h.update(target.as_os_str().as_encoded_bytes());
                h.update([0]);
            } else if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    Some(hex::encode(h.finalize()))
}

/// Drops every entry of a project (it was deleted).
pub fn forget(cache_dir: &Path, slug: &str) {
    let prefix = format!("{slug}--");
    for entry in std::fs::read_dir(root(cache_dir))
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether a `node_modules` exists under `install_dir` other than its own (workspace
/// packages with their own installs, as pnpm makes them). Only the first few levels of
/// the source are looked at, never inside a node_modules.
pub fn nested_modules(install_dir: &Path) -> bool {
    let mut stack = vec![(install_dir.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if !kind.is_dir() {
                continue;
            }
            let name = entry.file_name();
            if name == "node_modules" {
                if depth > 0 {
                    return true;
                }
                continue;
            }
            if depth < 4 && !name.to_string_lossy().starts_with('.') {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    false
}

/// Where the entries live, under the builder's cache directory.
fn root(cache_dir: &Path) -> PathBuf {
    cache_dir.join("node_modules")
}

/// Branch scopes a project keeps entries for; the least recently stored go first.
pub const MAX_BRANCH_ENTRIES: usize = 8;

/// The entry for this project state in `scope` (`<slug>--<scope>--<digest>`), or `None`
/// when there is no lockfile (then the install is not reproducible and nothing is
/// cached).
pub(crate) fn key(
    slug: &str,
    scope: &str,
    checkout: &Path,
    project_dir: &Path,
    install: &str,
    toolchain: &str,
) -> Option<String> {
    let lockfile = LOCKFILES.iter().find_map(|name| {
        crate::read_repo_bytes(checkout, project_dir, name)
            .ok()
            .flatten()
    })?;
    let mut h = sha2::Sha256::new();
    h.update(install.as_bytes());
    h.update([0]);
    h.update(&lockfile);
    // Another Node version may need other native modules: it must not reuse this entry.
    h.update([0]);
    h.update(toolchain.as_bytes());
    // What else decides what the install makes: an entry made by a commit whose install
    // hook rewrote node_modules must not be restored for one without the hook.
    for name in INSTALL_SETTINGS {
        h.update([0]);
        h.update(name.as_bytes());
        if let Ok(Some(bytes)) = crate::read_repo_bytes(checkout, project_dir, name) {
            h.update([1]);
            h.update(sha2::Sha256::digest(&bytes));
        }
    }
    h.update([0]);
    h.update(install_part_of_package_json(
        crate::read_repo_bytes(checkout, project_dir, "package.json")
            .ok()
            .flatten()
            .as_deref(),
    ));
    Some(format!(
        "{slug}--{scope}--{}",
        &hex::encode(h.finalize())[..24]
    ))
}

/// Package managers' settings and hooks in the install folder, part of an entry's key.
const INSTALL_SETTINGS: &[&str] = &[
    ".npmrc",
    ".yarnrc",
    ".yarnrc.yml",
    ".pnpmfile.cjs",
    ".pnpmfile.mjs",
    "pnpm-workspace.yaml",
    "bunfig.toml",
];

/// What an install reads of `package.json`, as canonical JSON: its dependencies and
/// their overrides, the package manager, workspaces, and the scripts an install runs.
/// Not its version or build scripts: a release bump or a new build command keeps the
/// entry. Unparsable: the whole file.
fn install_part_of_package_json(bytes: Option<&[u8]>) -> Vec<u8> {
    const FIELDS: &[&str] = &[
        "dependencies",
        "devDependencies",
        "optionalDependencies",
        "peerDependencies",
        "bundleDependencies",
        "bundledDependencies",
        "overrides",
        "resolutions",
        "pnpm",
        "packageManager",
        "workspaces",
        "dependenciesMeta",
        "peerDependenciesMeta",
    ];
    const INSTALL_SCRIPTS: &[&str] = &[
        "preinstall",
        "install",
        "postinstall",
        "prepublish",
        "preprepare",
        "prepare",
        "postprepare",
        "dependencies",
    ];
    let Some(bytes) = bytes else {
        return Vec::new();
    };
    let Ok(serde_json::Value::Object(pkg)) = serde_json::from_slice::<serde_json::Value>(bytes)
    else {
        return bytes.to_vec();
    };
    let mut part = serde_json::Map::new();
    for f in FIELDS {
        if let Some(v) = pkg.get(*f) {
            part.insert((*f).to_string(), v.clone());
        }
    }
    if let Some(serde_json::Value::Object(scripts)) = pkg.get("scripts") {
        let install: serde_json::Map<_, _> = scripts
            .iter()
            .filter(|(k, _)| INSTALL_SCRIPTS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        part.insert("scripts".into(), serde_json::Value::Object(install));
    }
    // serde_json's map is ordered by key: the same fields give the same bytes.
    serde_json::to_vec(&part).unwrap_or_default()
}

/// An entry is a folder `<key>/` holding `node_modules/` and `installed` (its
/// [`installed_digest`] when stored), out of every build's reach. The digest is a
/// record, not the next build's reference: what shares a file with the tree (a package
/// manager's store, hard-linked, deleted with the build's folder) changes its link count
/// and so its change time while the entry waits; the next build takes its own digest
/// after the restore.
const INSTALLED: &str = "installed";

/// Moves a cached `node_modules` into `project_dir`. Returns whether one was restored.
/// An entry without its `installed` record (an older layout, or half made) is dropped.
fn restore(cache_dir: &Path, key: &str, project_dir: &Path) -> bool {
    let target = project_dir.join("node_modules");
    if std::fs::symlink_metadata(&target).is_ok() {
        return false;
    }
    let entry = root(cache_dir).join(key);
    if !entry.join(INSTALLED).is_file() {
        let _ = std::fs::remove_dir_all(&entry);
        return false;
    }
    let restored = std::fs::rename(entry.join("node_modules"), &target).is_ok();
    let _ = std::fs::remove_dir_all(&entry);
    restored
}

/// Moves `project_dir/node_modules` into the cache if the build left it as installed,
/// and drops the project's older entries.
fn store_now(cache_dir: &Path, key: &str, project_dir: &Path, installed: &str) -> Kept {
    let root = root(cache_dir);
    if std::fs::create_dir_all(&root).is_err() {
        return Kept::Skipped;
    }
    let entry = root.join(key);
    if entry.exists() {
        return Kept::Skipped; // a concurrent build stored the same state already
    }
    // The build ran since `project_dir` was resolved: had it swapped a component of the
    // path for a symlink, the path would now lead elsewhere on the host (and this runs
    // as the server's user). Store only while it still is itself, and only a real
    // directory: a build could leave a symlink in node_modules' place.
    if project_dir.canonicalize().ok().as_deref() != Some(project_dir) {
        return Kept::Skipped;
    }
    if !std::fs::symlink_metadata(project_dir.join("node_modules")).is_ok_and(|m| m.is_dir()) {
        return Kept::Skipped;
    }
    // Only what the install made (plus tools' cache folders): a build script, or a
    // dependency's code it ran, that changed anything else must not reach the next build.
    if installed_digest(project_dir).as_deref() != Some(installed) {
        return Kept::Changed;
    }
    // Made aside and renamed into place whole, so a half-made entry is never found.
    let staging = root.join(format!(".staging-{}", cdeploy_core::ids::random_id(12)));
    let staged = std::fs::create_dir(&staging).is_ok()
        && std::fs::write(staging.join(INSTALLED), installed).is_ok()
        // rename fails across filesystems; then there is simply no cache.
        && std::fs::rename(project_dir.join("node_modules"), staging.join("node_modules")).is_ok()
        && std::fs::rename(&staging, &entry).is_ok();
    if !staged {
        let _ = std::fs::remove_dir_all(&staging);
        return Kept::Skipped;
    }
    // The scope's older entries are for lockfiles it no longer has; past
    // MAX_BRANCH_ENTRIES branch scopes, the least recently stored go.
    let (scope_prefix, slug_prefix) = match key.rsplit_once("--") {
        Some((scoped, _)) => (
            format!("{scoped}--"),
            format!("{}--", scoped.split("--").next().unwrap_or(scoped)),
        ),
        None => return Kept::Stored,
    };
    let mut branches = Vec::new();
    for old in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let name = old.file_name().to_string_lossy().into_owned();
        if name.starts_with(&scope_prefix) && name != key {
            let _ = std::fs::remove_dir_all(old.path());
        } else if name.starts_with(".staging-") {
            // A store a crash cut short.
            let stale = old
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600));
            if stale {
                let _ = std::fs::remove_dir_all(old.path());
            }
        } else if name.starts_with(&format!("{slug_prefix}branch-")) {
            // A rename sets the entry's ctime: when it was stored.
            let stored = old
                .metadata()
                .map(|m| {
                    std::os::unix::fs::MetadataExt::ctime_nsec(&m) as i128
                        + std::os::unix::fs::MetadataExt::ctime(&m) as i128 * 1_000_000_000
                })
                .unwrap_or(0);
            branches.push((stored, old.path()));
        }
    }
    if branches.len() > MAX_BRANCH_ENTRIES {
        branches.sort();
        for (_, path) in &branches[..branches.len() - MAX_BRANCH_ENTRIES] {
            let _ = std::fs::remove_dir_all(path);
        }
    }
    Kept::Stored
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores what is there now, as if the install had just made it.
    fn keep(cache: &Path, key: &str, p: &Path) -> Kept {
        let installed = installed_digest(p).unwrap();
        store_now(cache, key, p, &installed)
    }

    #[test]
    fn keeps_only_what_the_install_made() {
        let cache = tempfile::tempdir().unwrap();
        let project = tempfile::tempdir().unwrap();
        let p = project.path();
        std::fs::create_dir_all(p.join("node_modules/vite/dist")).unwrap();
        std::fs::create_dir_all(p.join("node_modules/.bin")).unwrap();
        std::fs::write(p.join("node_modules/vite/dist/index.js"), "ok").unwrap();
        std::os::unix::fs::symlink("../vite/dist/index.js", p.join("node_modules/.bin/vite"))
            .unwrap();
        let installed = installed_digest(p).unwrap();
        // Tools' caches may change: kept with the entry.
        std::fs::create_dir_all(p.join("node_modules/.vite/deps")).unwrap();
        std::fs::write(p.join("node_modules/.vite/deps/a.js"), "cached").unwrap();
        assert_eq!(installed_digest(p).unwrap(), installed);
        assert_eq!(
            store_now(cache.path(), "app--production--k", p, &installed),
            Kept::Stored
        );
        assert!(restore(cache.path(), "app--production--k", p));
        assert!(p.join("node_modules/.vite/deps/a.js").exists());
        // Anything else a build does to it, even with its times set back, is seen.
        let changes: [&dyn Fn(&Path); 6] = [
            &|p| std::fs::write(p.join("node_modules/.bin/planted"), "#!/bin/sh").unwrap(),
            &|p| std::fs::write(p.join("node_modules/vite/dist/index.js"), "no").unwrap(),
            &|p| {
                std::fs::remove_file(p.join("node_modules/.bin/vite")).unwrap();
                std::os::unix::fs::symlink("/etc/passwd", p.join("node_modules/.bin/vite")).unwrap()
            },
            &|p| {
                use std::os::unix::fs::PermissionsExt;
                let f = p.join("node_modules/vite/dist/index.js");
                std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o777)).unwrap()
            },
            // A link named like a tool cache is not a tool cache.
            &|p| std::os::unix::fs::symlink("/", p.join("node_modules/.cache")).unwrap(),
            // Package managers keep code in dot-folders of their own.
            &|p| {
                std::fs::create_dir_all(p.join("node_modules/.bun/x")).unwrap();
                std::fs::write(p.join("node_modules/.bun/x/index.js"), "evil()").unwrap()
            },
        ];
        for (i, change) in changes.iter().enumerate() {
            let before = installed_digest(p).unwrap();
            // ctime has a clock's resolution: make the change observable.
            std::thread::sleep(std::time::Duration::from_millis(5));
            change(p);
            let key = format!("app--production--c{i}");
            assert_eq!(
                store_now(cache.path(), &key, p, &before),
                Kept::Changed,
                "change {i}"
            );
            assert!(p.join("node_modules").exists(), "left in place");
        }
        // An entry without its digest (older layout, or half made) is dropped.
        std::fs::create_dir_all(cache.path().join("node_modules/app--production--old/x")).unwrap();
        std::fs::remove_dir_all(p.join("node_modules")).unwrap();
        assert!(!restore(cache.path(), "app--production--old", p));
        assert!(!cache
            .path()
            .join("node_modules/app--production--old")
            .exists());
    }

    #[test]
    fn the_key_follows_what_the_install_reads_and_nothing_else() {
        let project = tempfile::tempdir().unwrap();
        let p = project.path();
        std::fs::write(p.join("package-lock.json"), "{}").unwrap();
        let write_pkg = |v: serde_json::Value| {
            std::fs::write(p.join("package.json"), v.to_string()).unwrap();
            key("app", "production", p, p, "npm ci", "node@24 npm@10").unwrap()
        };
        let base = write_pkg(serde_json::json!({
            "name": "app", "version": "1.0.0",
            "scripts": { "build": "vite build" },
            "dependencies": { "vite": "8" }
        }));
        // A release bump or another build command: the same entry.
        assert_eq!(
            base,
            write_pkg(serde_json::json!({
                "name": "app", "version": "1.0.1",
                "scripts": { "build": "vite build --mode x" },
                "dependencies": { "vite": "8" }
            }))
        );
        // An install hook, an override: another entry.
        assert_ne!(
            base,
            write_pkg(serde_json::json!({
                "name": "app", "version": "1.0.0",
                "scripts": { "build": "vite build", "postinstall": "node patch.js" },
                "dependencies": { "vite": "8" }
            }))
        );
        assert_ne!(
            base,
            write_pkg(serde_json::json!({
                "name": "app", "version": "1.0.0",
                "scripts": { "build": "vite build" },
                "dependencies": { "vite": "8" }, "overrides": { "esbuild": "0.25" }
            }))
        );
        // The package manager's settings and hooks.
        write_pkg(serde_json::json!({
            "name": "app", "version": "1.0.0",
            "scripts": { "build": "vite build" },
            "dependencies": { "vite": "8" }
        }));
        std::fs::write(p.join(".npmrc"), "install-links=true\n").unwrap();
        assert_ne!(
            base,
            key("app", "production", p, p, "npm ci", "node@24 npm@10").unwrap()
        );
    }

    #[test]
    fn finds_workspace_packages_own_node_modules() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("node_modules/a/node_modules/b")).unwrap();
        std::fs::create_dir_all(d.path().join("apps/web/src")).unwrap();
        assert!(
            !nested_modules(d.path()),
            "nesting inside node_modules is npm's own"
        );
        std::fs::create_dir_all(d.path().join("apps/web/node_modules/@acme")).unwrap();
        assert!(nested_modules(d.path()));
    }

    #[test]
    fn never_follows_a_path_the_build_redirected() {
        let cache = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        let checkout = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(host.path().join("web/node_modules/precious")).unwrap();
        // The project dir was resolved as checkout/app; the build then replaced `app`
        // with a symlink to a host directory that has a node_modules of its own.
        let project = checkout.path().canonicalize().unwrap().join("app");
        std::os::unix::fs::symlink(host.path().join("web"), &project).unwrap();
        assert_eq!(
            store_now(
                cache.path(),
                "app--production--k",
                &project,
                &"0".repeat(64)
            ),
            Kept::Skipped
        );
        assert!(host.path().join("web/node_modules/precious").exists());
        assert!(!cache
            .path()
            .join("node_modules/app--production--k")
            .exists());
    }

    #[test]
    fn scopes_never_share_entries() {
        let cache = tempfile::tempdir().unwrap();
        let project = tempfile::tempdir().unwrap();
        let p = project.path();
        std::fs::write(p.join("package-lock.json"), "{}").unwrap();
        let tools = "node@24.1.0 npm@10.9.0";
        let prod = key("app", "production", p, p, "npm ci", tools).unwrap();
        let feat = key("app", "branch-0123456789ab", p, p, "npm ci", tools).unwrap();
        assert_ne!(prod, feat);
        // A branch stores what its build left; production's entry stays, and production
        // never finds the branch's.
        std::fs::create_dir_all(p.join("node_modules/clean")).unwrap();
        assert_eq!(keep(cache.path(), &prod, p), Kept::Stored);
        std::fs::create_dir_all(p.join("node_modules/.bin/planted")).unwrap();
        assert_eq!(keep(cache.path(), &feat, p), Kept::Stored);
        assert!(restore(cache.path(), &prod, p));
        assert!(p.join("node_modules/clean").exists());
        assert!(!p.join("node_modules/.bin/planted").exists());
        assert_eq!(keep(cache.path(), &prod, p), Kept::Stored);
        // Past MAX_BRANCH_ENTRIES branch scopes, the oldest go; production stays.
        for i in 0..MAX_BRANCH_ENTRIES + 2 {
            let scope = format!("branch-{i:012x}");
            let k = key("app", &scope, p, p, "npm ci", tools).unwrap();
            std::fs::create_dir_all(p.join("node_modules/x")).unwrap();
            assert_eq!(keep(cache.path(), &k, p), Kept::Stored);
        }
        let names: Vec<String> = std::fs::read_dir(cache.path().join("node_modules"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), MAX_BRANCH_ENTRIES + 1, "{names:?}");
        assert!(names.contains(&prod));
        assert!(
            !names.contains(&feat),
            "the oldest branch entry went: {names:?}"
        );
    }

    #[test]
    fn round_trip_and_eviction() {
        let cache = tempfile::tempdir().unwrap();
        let project = tempfile::tempdir().unwrap();
        let p = project.path();
        assert_eq!(
            key(
                "app",
                "production",
                p,
                p,
                "npm ci",
                "node@24.1.0 npm@10.9.0"
            ),
            None,
            "no lockfile, no cache"
        );
        std::fs::write(p.join("package-lock.json"), "{\"v\":1}").unwrap();
        let k1 = key(
            "app",
            "production",
            p,
            p,
            "npm ci",
            "node@24.1.0 npm@10.9.0",
        )
        .unwrap();
        assert_ne!(
            Some(k1.clone()),
            key(
                "app",
                "production",
                p,
                p,
                "npm install",
                "node@24.1.0 npm@10.9.0"
            )
        );
        assert_ne!(
            Some(k1.clone()),
            key(
                "other",
                "production",
                p,
                p,
                "npm ci",
                "node@24.1.0 npm@10.9.0"
            )
        );
        // Another Node.js (native modules) or package manager: another entry.
        assert_ne!(
            Some(k1.clone()),
            key(
                "app",
                "production",
                p,
                p,
                "npm ci",
                "node@22.12.0 npm@10.9.0"
            )
        );
        assert!(!restore(cache.path(), &k1, p));

        std::fs::create_dir_all(p.join("node_modules/vite")).unwrap();
        assert_eq!(keep(cache.path(), &k1, p), Kept::Stored);
        assert!(!p.join("node_modules").exists());
        assert!(restore(cache.path(), &k1, p));
        assert!(p.join("node_modules/vite").exists());
        assert!(
            !restore(cache.path(), &k1, p),
            "an entry is taken, not shared"
        );

        // A new lockfile replaces the project's old entry.
        assert_eq!(keep(cache.path(), &k1, p), Kept::Stored);
        std::fs::write(p.join("package-lock.json"), "{\"v\":2}").unwrap();
        let k2 = key(
            "app",
            "production",
            p,
            p,
            "npm ci",
            "node@24.1.0 npm@10.9.0",
        )
        .unwrap();
        std::fs::create_dir_all(p.join("node_modules/vite")).unwrap();
        assert_eq!(keep(cache.path(), &k2, p), Kept::Stored);
        let entries: Vec<_> = std::fs::read_dir(cache.path().join("node_modules"))
            .unwrap()
            .collect();
        assert_eq!(entries.len(), 1);
        assert!(!restore(cache.path(), &k1, p));
        assert!(restore(cache.path(), &k2, p));
    }
}

/// The same cache kept in storage, for builders whose disk ends with them (ECS tasks):
/// `node_modules` of the install folder as a zstd-compressed tar under `cache/<slug>/`,
/// restored before the install when the lockfile, Node.js, the package manager and the
/// install command are unchanged. zstd rather than gzip: a 10,000-file tree packs four
/// times and unpacks three times faster, and the entry is smaller.
pub mod stored {
    use std::path::Path;

    use bytes::Bytes;
    use cdeploy_core::layout;
    use cdeploy_core::storage::Storage;

    /// Largest entry kept (a Next.js app's node_modules packs to ~100 MiB).
    pub const MAX_ENTRY: u64 = 1024 << 20;

    /// zstd's level: 3 (its default) packs as small as gzip -6 at several times the speed.
    const LEVEL: i32 = 3;

    /// The storage key of a cache key made by [`super::key`] (`<slug>--<hash>`).
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
    ) -> Result<Option<Restored>, String> {
        let started = std::time::Instant::now();
        let Some(data) = storage.get(key).await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let fetch_secs = started.elapsed().as_secs_f64();
        let bytes = data.len() as u64;
        let dir = install_dir.to_path_buf();
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || unpack(&data, &dir, owner))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot unpack it: {e}"))?;
        Ok(Some(Restored {
            bytes,
            fetch_secs,
            unpack_secs: started.elapsed().as_secs_f64(),
        }))
    }

    /// Packs `install_dir/node_modules` and stores it; returns the packed size, or why
    /// nothing was stored.
    pub async fn save(storage: &dyn Storage, key: &str, install_dir: &Path) -> Result<u64, String> {
        let dir = install_dir.to_path_buf();
        let packed = tokio::task::spawn_blocking(move || pack(&dir))
            .await
            .map_err(|e| e.to_string())??;
        let size = packed.len() as u64;
        storage
            .put(key, Bytes::from(packed))
            .await
            .map_err(|e| e.to_string())?;
        Ok(size)
    }

    fn pack(install_dir: &Path) -> Result<Vec<u8>, String> {
        let modules = install_dir.join("node_modules");
        // Only a real folder: a build could leave a symlink to anything in its place.
        if !std::fs::symlink_metadata(&modules).is_ok_and(|m| m.is_dir()) {
            return Err("the install left no node_modules folder".into());
        }
        let failed = |e: std::io::Error| format!("cannot pack node_modules: {e}");
        let mut zst = zstd::Encoder::new(Vec::new(), LEVEL).map_err(failed)?;
        // Compression on worker threads while this one reads the tree.
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        zst.multithread(workers).map_err(failed)?;
        let mut tar = tar::Builder::new(zst);
        // Links are stored as links (never followed): .bin entries and pnpm's layout.
        tar.follow_symlinks(false);
        tar.append_dir_all("node_modules", &modules)
            .map_err(failed)?;
        let bytes = tar
            .into_inner()
            .and_then(|zst| zst.finish())
            .map_err(failed)?;
        if bytes.len() as u64 > MAX_ENTRY {
            return Err(format!(
                "node_modules packs to {} MiB, over the cache's {} MiB",
                bytes.len() >> 20,
                MAX_ENTRY >> 20
            ));
        }
        Ok(bytes)
    }

    /// Unpacks an entry into `install_dir`, everything owned by `owner` when given. Only
    /// plain relative paths under `node_modules/`; nothing is written through a link the
    /// archive made (the target is new and empty, so those are the only links there), and
    /// links may not point out of `node_modules` by absolute path. Checked in memory
    /// rather than with tar's per-entry `canonicalize`, which made a 15,000-file restore
    /// five times slower; files are written here rather than by tar's `unpack`, which
    /// took twice as long, and handed to the owner as they are made (no second walk).
    fn unpack(data: &[u8], install_dir: &Path, owner: Option<u32>) -> std::io::Result<()> {
        use std::collections::HashSet;
        use std::os::unix::fs::{lchown, OpenOptionsExt};
        use std::path::{Component, PathBuf};
        let target = install_dir.join("node_modules");
        if std::fs::symlink_metadata(&target).is_ok() {
            return Err(std::io::Error::other("node_modules exists already"));
        }
        let bad = |what: &str, p: &Path| std::io::Error::other(format!("{what}: {}", p.display()));
        let chown = |p: &Path| match owner {
            Some(uid) => lchown(p, Some(uid), Some(uid)),
            None => Ok(()),
        };
        let mut tar = tar::Archive::new(zstd::Decoder::with_buffer(data)?);
        let mut links: HashSet<PathBuf> = HashSet::new();
        let mut made: HashSet<PathBuf> = HashSet::new();
        // Creates `dir` and whatever of its ancestors under `install_dir` is missing.
        let mkdirs = |dir: &Path, made: &mut HashSet<PathBuf>| -> std::io::Result<()> {
            if made.contains(dir) {
                return Ok(());
            }
            let mut missing: Vec<&Path> = dir
                .ancestors()
                .take_while(|a| *a != install_dir && !made.contains(*a))
                .collect();
            missing.reverse();
            for d in missing {
                match std::fs::create_dir(d) {
                    Ok(()) => chown(d)?,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                made.insert(d.to_path_buf());
            }
            Ok(())
        };
        for entry in tar.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.into_owned();
            if !path.starts_with("node_modules")
                || path
                    .components()
                    .any(|c| !matches!(c, Component::Normal(_)))
            {
                return Err(bad("an entry outside node_modules", &path));
            }
            if path.ancestors().skip(1).any(|a| links.contains(a)) {
                return Err(bad("an entry through a link", &path));
            }
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                let to = entry
                    .link_name()?
                    .ok_or_else(|| bad("a link without a target", &path))?;
                if to.is_absolute() || kind.is_hard_link() {
                    return Err(bad("a link out of node_modules", &path));
                }
                links.insert(path.clone());
            } else if !(kind.is_file() || kind.is_dir()) {
                continue;
            }
            let out = install_dir.join(&path);
            if kind.is_dir() {
                mkdirs(&out, &mut made)?;
                continue;
            }
            if let Some(parent) = out.parent() {
                mkdirs(parent, &mut made)?;
            }
            if kind.is_symlink() {
                let to = entry.link_name()?.unwrap_or_default().into_owned();
                std::os::unix::fs::symlink(to, &out)?;
                chown(&out)?;
            } else {
                let exec = entry
                    .header()
                    .mode()
                    .map(|m| m & 0o111 != 0)
                    .unwrap_or(false);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if exec { 0o755 } else { 0o644 })
                    .open(&out)?;
                if let Some(uid) = owner {
                    std::os::unix::fs::fchown(&f, Some(uid), Some(uid))?;
                }
                std::io::copy(&mut entry, &mut f)?;
            }
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn packs_and_unpacks_with_links() {
            let a = tempfile::tempdir().unwrap();
            let m = a.path().join("node_modules");
            std::fs::create_dir_all(m.join("vite/bin")).unwrap();
            std::fs::create_dir_all(m.join(".bin")).unwrap();
            std::fs::write(m.join("vite/bin/vite.js"), "x").unwrap();
            std::os::unix::fs::symlink("../vite/bin/vite.js", m.join(".bin/vite")).unwrap();
            let packed = pack(a.path()).unwrap();
            let b = tempfile::tempdir().unwrap();
            unpack(&packed, b.path(), None).unwrap();
            let link = std::fs::read_link(b.path().join("node_modules/.bin/vite")).unwrap();
            assert_eq!(link, Path::new("../vite/bin/vite.js"));
            assert_eq!(
                std::fs::read_to_string(b.path().join("node_modules/.bin/vite")).unwrap(),
                "x"
            );
            // Never over an existing folder.
            assert!(unpack(&packed, b.path(), None).is_err());
        }

        /// A restore hands every entry to the build's uid as it makes it (as root, which
        /// builders with a sandbox are).
        #[test]
        fn unpacks_owned_by_the_build_user() {
            if !rustix::process::geteuid().is_root() {
                eprintln!("skipped: needs root to give files away");
                return;
            }
            use std::os::unix::fs::MetadataExt;
            let a = tempfile::tempdir().unwrap();
            let m = a.path().join("node_modules");
            std::fs::create_dir_all(m.join("pkg/lib")).unwrap();
            std::fs::write(m.join("pkg/lib/index.js"), "x").unwrap();
            std::os::unix::fs::symlink("pkg/lib", m.join("link")).unwrap();
            let b = tempfile::tempdir().unwrap();
            unpack(&pack(a.path()).unwrap(), b.path(), Some(54321)).unwrap();
            for p in ["", "pkg", "pkg/lib", "pkg/lib/index.js", "link"] {
                let meta =
                    std::fs::symlink_metadata(b.path().join("node_modules").join(p)).unwrap();
                assert_eq!((meta.uid(), meta.gid()), (54321, 54321), "{p}");
            }
            assert_eq!(std::fs::symlink_metadata(b.path()).unwrap().uid(), 0);
        }

        /// An entry may not be written through a link the archive made, and a link may
        /// not name an absolute path.
        #[test]
        fn refuses_writing_through_a_link() {
            let outside = tempfile::tempdir().unwrap();
            let archive = |link_to: &Path, file: Option<&str>| {
                let zst = zstd::Encoder::new(Vec::new(), 1).unwrap();
                let mut tar = tar::Builder::new(zst);
                let mut link = tar::Header::new_gnu();
                link.set_entry_type(tar::EntryType::Symlink);
                link.set_size(0);
                tar.append_link(&mut link, "node_modules/up", link_to)
                    .unwrap();
                if let Some(f) = file {
                    let mut h = tar::Header::new_gnu();
                    h.set_size(1);
                    h.set_mode(0o644);
                    tar.append_data(&mut h, f, &b"x"[..]).unwrap();
                }
                tar.into_inner().unwrap().finish().unwrap()
            };
            let d = tempfile::tempdir().unwrap();
            let e = unpack(
                &archive(Path::new("../.."), Some("node_modules/up/x")),
                d.path(),
                None,
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("an entry through a link"), "{e}");
            let d = tempfile::tempdir().unwrap();
            let e = unpack(&archive(outside.path(), None), d.path(), None)
                .unwrap_err()
                .to_string();
            assert!(e.contains("a link out of node_modules"), "{e}");
            assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        }
    }
}
