//! Where things are: the built binaries (and whether they are older than their
//! sources), the repository, temporary directories the build uid can pass through.

use std::path::{Path, PathBuf};

use crate::TempDir;

/// The directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/e2e-… → target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    let built = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run `cargo build --workspace` before the e2e tests",
                p.display()
            )
        });
    // `cargo test` does not rebuild other packages' binaries: never test a stale one.
    if let Some(newest) = newest_source(name) {
        assert!(
            built >= newest,
            "{} is older than the sources: run `cargo build --workspace` before the e2e tests",
            p.display()
        );
    }
    p
}

/// The newest modification time among the Rust sources a binary is built from.
fn newest_source(binary: &str) -> Option<std::time::SystemTime> {
    let crates: &[&str] = match binary {
        "cdeploy" => &["cli", "core"],
        "cdeploy-server" => &[
            "server", "builder", "proxy", "storage", "logbus", "conn", "core",
        ],
        "cdeploy-builder" => &["builder", "storage", "logbus", "core"],
        "cdeploy-proxy" => &["proxy", "storage", "conn", "core"],
        "cdeploy-test-ecs-agent" => &["tests/agent", "tests/support"],
        _ => return None,
    };
    let root = repo_root();
    // Another crate's `src/main.rs` is its own binary, not part of this one.
    let own_main = crates.first().map(|c| root.join(c).join("src/main.rs"));
    let mut stack: Vec<PathBuf> = crates
        .iter()
        .map(|c| {
            if c.contains('/') {
                root.join(c)
            } else {
                root.join(c).join("src")
            }
        })
        .collect();
    let mut newest = None;
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            // Unit tests (`tests/` folders and `tests.rs` inside `src`) are not built
            // into the binary.
            stack.extend(
                std::fs::read_dir(&p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| e.file_name() != "tests" && e.file_name() != "tests.rs")
                    .map(|e| e.path()),
            );
        } else if p.extension().is_some_and(|e| e == "rs") {
            let other_binary = p.ends_with("src/main.rs") && Some(&p) != own_main.as_ref();
            if !other_binary {
                newest = newest.max(meta.modified().ok());
            }
        }
    }
    newest
}

/// Repository root (for fixtures). `cargo test` sets CARGO_MANIFEST_DIR when it runs the
/// tests; the compile-time value is the fallback. (With one target dir shared by two
/// checkouts, cargo can reuse this library built in the other one, and the compile-time
/// path then names that checkout.)
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Build caches shared by every test server (each project has its own inside), on the
/// same filesystem as the servers' build directories: kept node_modules move between
/// them with rename. Under the temp dir, where the unprivileged uid sandboxed builds run
/// as (when the tests run as root) can pass through every parent.
pub fn shared_cache_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("cdeploy-test-cache");
    std::fs::create_dir_all(&dir).expect("cache dir");
    traversable(&dir);
    dir
}

/// A temporary directory the build uid can pass through (tempfile makes them 0700).
pub fn traversable_tempdir() -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    traversable(dir.path());
    dir
}

pub(crate) fn traversable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir).expect("dir").permissions().mode();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o711)).expect("chmod");
}
