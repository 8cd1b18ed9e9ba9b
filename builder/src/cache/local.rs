//! Entries on the builder's own disk (`<cache dir>/node_modules/<key>/`), out of every
//! build's reach: looked up and moved into a build, moved back after a successful
//! build if it left them as installed, the older ones dropped.

use std::path::{Path, PathBuf};

use super::digest::installed_digest;
use super::key::key;

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

/// Where the entries live, under the builder's cache directory.
fn root(cache_dir: &Path) -> PathBuf {
    cache_dir.join("node_modules")
}

/// Branch scopes a project keeps entries for; the least recently stored go first.
pub const MAX_BRANCH_ENTRIES: usize = 8;

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
    if !stage(&root, &entry, project_dir, installed) {
        return Kept::Skipped;
    }
    prune(&root, key);
    Kept::Stored
}

/// Moves `project_dir/node_modules` into place as `entry`: made aside and renamed into
/// place whole, so a half-made entry is never found. Returns whether it was stored.
fn stage(root: &Path, entry: &Path, project_dir: &Path, installed: &str) -> bool {
    let staging = root.join(format!(".staging-{}", cdeploy_core::ids::random_id(12)));
    let staged = std::fs::create_dir(&staging).is_ok()
        && std::fs::write(staging.join(INSTALLED), installed).is_ok()
        // rename fails across filesystems; then there is simply no cache.
        && std::fs::rename(project_dir.join("node_modules"), staging.join("node_modules")).is_ok()
        && std::fs::rename(&staging, entry).is_ok();
    if !staged {
        let _ = std::fs::remove_dir_all(&staging);
    }
    staged
}

/// Drops what the new entry `key` replaces: the scope's older entries are for lockfiles
/// it no longer has; past [`MAX_BRANCH_ENTRIES`] branch scopes, the least recently
/// stored go. Stores a crash cut short go too.
fn prune(root: &Path, key: &str) {
    let Some((scoped, _)) = key.rsplit_once("--") else {
        return;
    };
    let scope_prefix = format!("{scoped}--");
    let slug_prefix = format!("{}--", scoped.split("--").next().unwrap_or(scoped));
    let mut branches = Vec::new();
    for old in std::fs::read_dir(root).into_iter().flatten().flatten() {
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
        const TOOLS: &str = "node@24.1.0 npm@10.9.0";
        let key_of =
            |slug: &str, install: &str, tools: &str| key(slug, "production", p, p, install, tools);
        assert_eq!(
            key_of("app", "npm ci", TOOLS),
            None,
            "no lockfile, no cache"
        );
        std::fs::write(p.join("package-lock.json"), "{\"v\":1}").unwrap();
        let k1 = key_of("app", "npm ci", TOOLS).unwrap();
        assert_ne!(Some(k1.clone()), key_of("app", "npm install", TOOLS));
        assert_ne!(Some(k1.clone()), key_of("other", "npm ci", TOOLS));
        // Another Node.js (native modules) or package manager: another entry.
        assert_ne!(
            Some(k1.clone()),
            key_of("app", "npm ci", "node@22.12.0 npm@10.9.0")
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
        let k2 = key_of("app", "npm ci", TOOLS).unwrap();
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
