//! Kept versions and the size cap: a build leases each version it uses (a shared lock
//! on `<package>/.<version>.lock`, beside the folder builds see), and eviction removes
//! the least recently used versions nobody leases until the directory fits, clearing
//! what a crash left half made.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::COMPLETE;

/// Half-unpacked folders and half-downloaded tarballs left by a crash are removed once
/// they are this old (a download times out after 10 minutes).
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

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

/// A fully unpacked version found in the directory. Ordered by last use first (then
/// size, path), the order eviction goes in.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Version {
    used: SystemTime,
    bytes: u64,
    path: PathBuf,
    /// `package/version`.
    what: String,
}

/// Removes the least recently used versions under `dir` until it holds at most
/// `max_bytes`, skipping any version a build has leased, and clears crash leftovers.
pub fn evict(dir: &Path, max_bytes: u64) -> Evicted {
    let mut kept = kept_versions(dir);
    let mut out = Evicted {
        total: kept.iter().map(|k| k.bytes).sum(),
        ..Default::default()
    };
    kept.sort();
    for version in kept {
        if out.total <= max_bytes {
            break;
        }
        if remove_unleased(&version.path) {
            out.total = out.total.saturating_sub(version.bytes);
            out.removed.push((version.what, version.bytes));
        }
    }
    out
}

/// Every fully unpacked version under `dir`; crash leftovers old enough are removed on
/// the way.
fn kept_versions(dir: &Path) -> Vec<Version> {
    let mut kept = Vec::new();
    for package in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !package.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for entry in std::fs::read_dir(package.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            kept.extend(kept_version(&package.file_name(), &entry));
        }
    }
    kept
}

/// The version `entry` of `package` holds, if it is one (a crash leftover is removed
/// once old enough).
fn kept_version(package: &OsStr, entry: &std::fs::DirEntry) -> Option<Version> {
    let (path, name) = (
        entry.path(),
        entry.file_name().to_string_lossy().into_owned(),
    );
    let meta = entry.metadata().ok()?;
    if name.starts_with(".unpack-") || name.starts_with(".evict-") || name.starts_with(".tmp") {
        let old = meta
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > LEFTOVER_AGE);
        if old {
            let _ = if meta.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
        return None;
    }
    let marker = path.join(COMPLETE);
    let (Ok(text), Ok(marked)) = (std::fs::read_to_string(&marker), std::fs::metadata(&marker))
    else {
        return None;
    };
    let bytes = text
        .lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| tree_size(&path));
    let what = format!("{}/{name}", package.to_string_lossy());
    Some(Version {
        used: marked.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        bytes,
        path,
        what,
    })
}

/// Removes the version kept at `path` unless a build holds it (or another eviction took
/// it). Returns whether it was removed.
fn remove_unleased(path: &Path) -> bool {
    let lock_at = lock_path(path);
    let Some(lock) = open_lock(&lock_at) else {
        return false;
    };
    if lock.try_lock().is_err() || !is_at(&lock, &lock_at) {
        return false; // a build holds it (or another eviction took it)
    }
    // Moved aside and its lock file removed under the lock, so a build that was
    // waiting for the lock finds nothing there and fetches again; then removed.
    static ASIDE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = ASIDE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let aside = path.with_file_name(format!(".evict-{}-{n}", std::process::id()));
    let moved = std::fs::rename(path, &aside).is_ok();
    if moved || !path.exists() {
        let _ = std::fs::remove_file(&lock_at);
    }
    drop(lock);
    if moved {
        let _ = std::fs::remove_dir_all(&aside);
    }
    moved
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
