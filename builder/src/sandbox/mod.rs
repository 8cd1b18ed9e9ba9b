//! Where untrusted commands run. One entry point, [`Sandbox`], so another mechanism can
//! replace this one.
//!
//! A sandboxed command runs as
//! `pasta -- sh -c '<block routes>; exec "$@"' bwrap … -- <command>`:
//! * **bubblewrap** gives it its own user, pid, mount, ipc, uts and cgroup namespaces and
//!   a filesystem of its own: a read-only system (`/usr`, the `/etc` files that name
//!   DNS, CA certificates and the like), a synthetic `/etc/passwd`, and, writable, only
//!   the checkout (`/work`), a per-build `HOME` and `/tmp`, and its project's cache
//!   (`/cache`). The data dir, storage, the server's config and other builds do not exist
//!   in that view. When its main process exits, the pid namespace ends and with it
//!   everything the build started (a `setsid` child included).
//! * **pasta** gives it a user-mode network of its own: the internet is reachable, the
//!   host's loopback is not (no gateway mapping, no port forwarding but the ports an
//!   operator allows explicitly, `host_ports`), and `prohibit`
//!   routes close link-local (169.254.0.0/16, cloud metadata) and every other address of
//!   the host. The command cannot change those routes: it holds no capability over the
//!   network namespace.
//! * A server running as **root** starts pasta as a dedicated unprivileged uid that
//!   owns no platform file (`build_uid`); a server running as a normal user starts it
//!   as itself, in user namespaces where nothing of the platform is mounted.
//! * **Limits**: a per-build cgroup (v2, or v1 memory + pids) with memory and process
//!   limits, a disk limit watched by the runner (blocks used under the build's writable
//!   directories), `RLIMIT_FSIZE` for single files. Without cgroups (an unprivileged
//!   server without a delegated cgroup) `RLIMIT_NPROC` stands in for the process limit
//!   when builds have a uid of their own. Every process gets `PR_SET_PDEATHSIG`, so the
//!   sandbox dies with the server; a restarted server kills whatever a crashed one left
//!   in its cgroups ([`Sandbox::reap`]).
//!
//! # Layout
//! * this file — [`Sandbox`]: finding bubblewrap, pasta and `ip`, the start-up probe,
//!   what the start-up log says.
//! * `limits` — [`Limits`] of one build, [`LimitHit`] when it hits one, [`disk_usage`].
//! * `dirs` — a build's writable directories ([`Mounts`] on the host, [`View`] inside),
//!   created with a synthetic `/etc/passwd` and handed to the build's uid.
//! * `system` — the read-only system view: `/usr`, the merged-usr links, the allowed
//!   `/etc` entries.
//! * `net` — the network policy: pasta's command line, the routes closed in the build's
//!   network namespace, DNS through pasta for a loopback resolver.
//! * `cell` — [`Cell`], one build's sandbox: its cgroup, its mounts, and the command line
//!   that runs a command in it.
//! * `sys` — the libc calls: what a build process does between fork and exec (cgroup,
//!   umask, rlimits, uid, parent-death signal) and the host's interface addresses. The
//!   only module of the crate with `unsafe` code.
//! * `spawn` — [`spawn`]: starting build processes from a thread that lives as long as
//!   the process.
//! * [`cgroup`] — per-build control groups (v1 and v2): limits, counters, killing.

mod cell;
pub mod cgroup;
mod dirs;
mod limits;
mod net;
mod spawn;
mod system;
// Namespaces and the child's set-up between fork and exec need libc: the crate denies
// unsafe code everywhere else (lib.rs).
#[allow(unsafe_code)]
mod sys;

use std::path::{Path, PathBuf};

pub use cell::Cell;
pub use cgroup::CgroupError;
pub use dirs::{Mounts, View};
pub use limits::{disk_usage, LimitHit, Limits};
pub use spawn::spawn;

/// How the server wants builds run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run builds without isolation when no sandbox can be made (an explicit, logged
    /// operator decision).
    pub unsandboxed: bool,
    /// The uid (and gid) builds run as when the server runs as root.
    pub build_uid: u32,
    pub limits: Limits,
    /// Name of this server's cgroup scope (unique per data dir).
    pub scope: String,
    /// A directory for the start-up probe.
    pub probe_dir: PathBuf,
    /// TCP ports of the host's loopback that builds may reach (an operator's local git
    /// server or registry mirror); none by default.
    pub host_ports: Vec<u16>,
}

/// Why no sandbox (or no cell) could be made.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "`{tool}` is not installed (Debian/Ubuntu package `{package}`; ./install.sh installs it)"
    )]
    NotInstalled {
        tool: &'static str,
        package: &'static str,
    },
    #[error("cannot prepare {}: {source}", dir.display())]
    Prepare {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("cannot start the sandbox: {0}")]
    Start(std::io::Error),
    #[error("a test command failed in the sandbox ({status}): {stderr}")]
    Probe {
        status: std::process::ExitStatus,
        stderr: String,
    },
}

#[derive(Debug)]
enum Isolation {
    Namespaces(Box<Tools>),
    /// The operator opted out: commands run unisolated (as `build_uid` when the server
    /// is root, as in a container, else as the server's user).
    None,
}

#[derive(Debug)]
struct Tools {
    bwrap: PathBuf,
    net: net::Network,
    /// bwrap arguments for the read-only system view.
    system: Vec<String>,
}

impl Tools {
    /// bubblewrap, pasta and `ip` from `PATH` (or the usual places), and the views
    /// they give builds.
    fn find(host_ports: &[u16]) -> Result<Tools, SandboxError> {
        let need = |tool: &'static str, package: &'static str| {
            find_in_path(tool).ok_or(SandboxError::NotInstalled { tool, package })
        };
        let bwrap = need("bwrap", "bubblewrap")?;
        let pasta = need("pasta", "passt")?;
        let ip = need("ip", "iproute2")?;
        let net = net::Network::new(pasta, &ip, host_ports);
        Ok(Tools {
            bwrap,
            system: system::view(net.resolv_conf.is_some()),
            net,
        })
    }
}

/// Runs untrusted commands.
#[derive(Debug)]
pub struct Sandbox {
    isolation: Isolation,
    /// The uid commands run as, when this process is root.
    user: Option<u32>,
    limits: Limits,
    cgroups: Option<cgroup::Root>,
    /// Why there are no cgroups (for the start-up log).
    cgroup_problem: Option<CgroupError>,
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Sandbox {
    /// Sets up the sandbox, or says why none can be made. With `unsandboxed`, a missing
    /// sandbox is not an error: builds then run without isolation (and the caller warns).
    pub fn new(opts: &Options) -> Result<Sandbox, SandboxError> {
        let (cgroups, cgroup_problem) = match cgroup::Root::open(&opts.scope) {
            Ok(root) => (Some(root), None),
            Err(e) => (None, Some(e)),
        };
        let root = rustix::process::geteuid().is_root();
        let mut sandbox = Sandbox {
            isolation: Isolation::None,
            user: root.then_some(opts.build_uid),
            limits: opts.limits,
            cgroups,
            cgroup_problem,
        };
        if opts.unsandboxed {
            return Ok(sandbox);
        }
        sandbox.isolation = Isolation::Namespaces(Box::new(Tools::find(&opts.host_ports)?));
        sandbox.probe(&opts.probe_dir)?;
        Ok(sandbox)
    }

    /// Runs `true` in a sandbox once, so a machine that cannot make one (no user
    /// namespaces, no /dev/net/tun) is found at start, not on the first deploy.
    fn probe(&self, dir: &Path) -> Result<(), SandboxError> {
        let _ = std::fs::remove_dir_all(dir);
        let mounts = Mounts {
            checkout: dir.join("src"),
            home: dir.join("home"),
            tmp: dir.join("tmp"),
            cache: None,
            etc: dir.join("etc"),
        };
        let made = std::fs::create_dir_all(dir).and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
            self.prepare(&mounts)
        });
        made.map_err(|source| SandboxError::Prepare {
            dir: dir.to_path_buf(),
            source,
        })?;
        let cell = self.cell("probe", mounts.clone())?;
        let out = cell
            .std_command(&["/bin/sh", "-c", "exit 0"], &[], &mounts.checkout)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(SandboxError::Start)?;
        drop(cell);
        let _ = std::fs::remove_dir_all(dir);
        if out.status.success() {
            Ok(())
        } else {
            Err(SandboxError::Probe {
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    pub fn is_isolated(&self) -> bool {
        matches!(self.isolation, Isolation::Namespaces(_))
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        let isolation = match (&self.isolation, self.user) {
            (Isolation::Namespaces(_), Some(uid)) => format!("bubblewrap + pasta as uid {uid}"),
            (Isolation::Namespaces(_), None) => "bubblewrap + pasta in user namespaces".to_string(),
            (Isolation::None, Some(uid)) => format!("NONE (builds run unisolated as uid {uid})"),
            (Isolation::None, None) => "NONE (builds run as this process's user)".to_string(),
        };
        let limits = match (&self.cgroups, &self.cgroup_problem) {
            (Some(root), _) => root.describe(),
            (None, Some(why)) => format!("rlimits only ({why})"),
            (None, None) => "rlimits only".into(),
        };
        format!(
            "{isolation}; memory {} MiB, {} processes, disk {} MiB; {limits}",
            self.limits.memory_bytes >> 20,
            self.limits.pids,
            self.limits.disk_bytes >> 20
        )
    }

    /// The uid builds run as, when builds run as a user of their own (a root builder).
    pub fn build_user(&self) -> Option<u32> {
        self.user
    }

    /// Removes this process's cgroup scope (a builder that ran its one build).
    pub fn release(&self) {
        if let Some(r) = &self.cgroups {
            r.release();
        }
    }

    /// Kills whatever a previous (crashed) server left in this server's cgroups.
    /// Returns how many build groups were found.
    pub fn reap(&self) -> usize {
        self.cgroups.as_ref().map_or(0, |r| r.reap())
    }
}
