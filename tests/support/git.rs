//! Real git: commands in a work tree, and a `git daemon` serving bare repositories
//! over `git://` on loopback.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::paths::traversable;
use crate::{free_port, traversable_tempdir, wait_for_port, TempDir};

/// Runs git with a fixed identity; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=cdeploy test",
            "-c",
            "user.email=test@cdeploy.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes `dir` a git repository with one commit of everything in it.
pub fn git_commit_all(dir: &Path) {
    if !dir.join(".git").exists() {
        git(dir, &["init", "-q"]);
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "test commit"]);
}

/// The one loopback `git daemon` of this test process, serving bare repositories from a
/// temp dir. Sandboxed builds reach no port of the host's loopback but those a server
/// allows (`--build-host-ports`): every test server allows this one.
struct SharedDaemon {
    root: PathBuf,
    port: u16,
}

fn shared_daemon() -> &'static SharedDaemon {
    static DAEMON: std::sync::OnceLock<SharedDaemon> = std::sync::OnceLock::new();
    DAEMON.get_or_init(|| {
        let root = traversable_tempdir().keep();
        let port = free_port();
        let (tx, rx) = std::sync::mpsc::channel();
        let base = root.clone();
        // Spawned from a thread that lives as long as the process, with a parent-death
        // signal: the daemon ends with the test process, whichever test started it.
        std::thread::spawn(move || {
            use std::os::unix::process::CommandExt;
            let mut cmd = Command::new("git");
            cmd.arg("daemon")
                .arg("--reuseaddr")
                .arg(format!("--base-path={}", base.display()))
                .arg("--export-all")
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg(&base)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl only sets this child's parent-death signal.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                    Ok(())
                });
            }
            let child = cmd.spawn().expect("start git daemon");
            tx.send(()).expect("report");
            let _child = child;
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("git daemon started");
        wait_for_port(port, Duration::from_secs(10));
        SharedDaemon { root, port }
    })
}

/// The git daemon's port (allowed to builds of every test server).
pub fn git_daemon_port() -> u16 {
    shared_daemon().port
}

/// A test's own corner of the shared `git daemon`.
pub struct GitDaemon {
    pub root: TempDir,
    pub port: u16,
    prefix: String,
}

impl GitDaemon {
    pub fn start() -> GitDaemon {
        let shared = shared_daemon();
        let root = tempfile::Builder::new()
            .prefix("t")
            .tempdir_in(&shared.root)
            .expect("tempdir");
        traversable(root.path());
        let prefix = root
            .path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        GitDaemon {
            root,
            port: shared.port,
            prefix,
        }
    }

    /// Publishes the repository at `work` (committed) as `<name>.git`; returns its URL.
    pub fn publish(&self, work: &Path, name: &str) -> String {
        let bare = self.root.path().join(format!("{name}.git"));
        let _ = std::fs::remove_dir_all(&bare);
        git(
            self.root.path(),
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().expect("utf-8 path"),
                bare.to_str().expect("utf-8"),
            ],
        );
        format!("git://127.0.0.1:{}/{}/{name}.git", self.port, self.prefix)
    }
}
