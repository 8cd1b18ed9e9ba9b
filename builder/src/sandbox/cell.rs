//! One build's sandbox, its [`Cell`]: the build's cgroup (when cgroups are available),
//! its mounts, the toolchain folders added once they are known, and the command line
//! that runs a command in it (pasta, then bwrap, then the command).

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use super::dirs::{INSIDE_CACHE, INSIDE_CHECKOUT, INSIDE_HOME, INSIDE_TMP, INSIDE_UID};
use super::{cgroup, sys, Isolation, LimitHit, Limits, Mounts, Sandbox, SandboxError, Tools};

/// One build's sandbox: every command of the build runs in it.
pub struct Cell<'a> {
    sandbox: &'a Sandbox,
    group: Option<cgroup::Group>,
    /// `cgroup.procs` paths, prepared for the child (no allocation after fork).
    procs: Vec<CString>,
    mounts: Mounts,
    /// Folders (host, inside, writable) added once the build's toolchain is known, or
    /// a runtime's bundle and its scratch folders.
    tools: std::sync::Mutex<Vec<(PathBuf, PathBuf, bool)>>,
    /// A port of the host's loopback forwarded to one inside (a runtime's server).
    inbound: Option<(u16, u16)>,
}

impl Sandbox {
    /// A cell for one build: its cgroup (when cgroups are available) and mounts.
    pub fn cell(&self, name: &str, mounts: Mounts) -> Result<Cell<'_>, SandboxError> {
        let group = match &self.cgroups {
            Some(root) => Some(root.group(name, self.limits.memory_bytes, self.limits.pids)?),
            None => None,
        };
        let procs = group
            .as_ref()
            .map(|g| {
                g.procs_files()
                    .iter()
                    .map(|p| CString::new(p.display().to_string()).expect("no NUL in a path"))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Cell {
            sandbox: self,
            group,
            procs,
            mounts,
            tools: Default::default(),
            inbound: None,
        })
    }
}

impl Cell<'_> {
    pub fn mounts(&self) -> &Mounts {
        &self.mounts
    }

    /// Mounts host folders read-only at the given places for the commands started from
    /// now on (a toolchain); returns where those commands see each one (the host path
    /// itself without a sandbox).
    pub fn mount_tools(&self, binds: &[(PathBuf, &str)]) -> Vec<PathBuf> {
        self.mount(binds, false)
    }

    /// Mounts host folders writable at the given places (inside a read-only one: a
    /// runtime's cache folder in its bundle); returns where commands see them.
    pub fn mount_writable(&self, binds: &[(PathBuf, &str)]) -> Vec<PathBuf> {
        self.mount(binds, true)
    }

    fn mount(&self, binds: &[(PathBuf, &str)], writable: bool) -> Vec<PathBuf> {
        let isolated = self.sandbox.is_isolated();
        let mut tools = self.tools.lock().unwrap_or_else(|e| e.into_inner());
        binds
            .iter()
            .map(|(host, inside)| {
                tools.push((host.clone(), PathBuf::from(inside), writable));
                if isolated {
                    PathBuf::from(inside)
                } else {
                    host.clone()
                }
            })
            .collect()
    }

    pub fn limits(&self) -> Limits {
        self.sandbox.limits
    }

    /// Forwards `host_port` of the host's loopback to `inside_port` in the cell's
    /// network, for the commands started from now on (a runtime's server).
    pub fn forward_port(&mut self, host_port: u16, inside_port: u16) {
        self.inbound = Some((host_port, inside_port));
    }

    /// `argv` in the sandbox, in `cwd` (a host path inside the checkout or a mounted
    /// folder, or the checkout itself), with exactly `env`.
    pub fn command(
        &self,
        argv: &[&str],
        env: &[(String, String)],
        cwd: &Path,
    ) -> tokio::process::Command {
        tokio::process::Command::from(self.std_command(argv, env, cwd))
    }

    pub(super) fn std_command(
        &self,
        argv: &[&str],
        env: &[(String, String)],
        cwd: &Path,
    ) -> std::process::Command {
        let mut cmd = match &self.sandbox.isolation {
            Isolation::Namespaces(tools) => self.namespaced(tools, argv, cwd),
            Isolation::None => {
                let mut c = std::process::Command::new(argv[0]);
                c.args(&argv[1..]).current_dir(cwd);
                c
            }
        };
        // The environment is exactly `env`: pasta and bwrap pass it on, and they are
        // the only processes besides the build's own that could show it.
        cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
        cmd.process_group(0);
        let user = self.sandbox.user;
        let setup = sys::ChildSetup {
            procs: self.procs.clone(),
            limits: self.sandbox.limits,
            user,
            nproc_fallback: self.group.is_none() && user.is_some(),
        };
        sys::pre_exec(&mut cmd, setup);
        cmd
    }

    /// `pasta … bwrap … -- argv`: the build's network, namespaces and filesystem.
    fn namespaced(&self, tools: &Tools, argv: &[&str], cwd: &Path) -> std::process::Command {
        let inside_cwd = self.inside(cwd);
        let mut c = tools.net.command(self.inbound);
        c.arg(&tools.bwrap).args([
            "--unshare-all",
            "--share-net",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "cdeploy-build",
            "--uid",
            &INSIDE_UID.to_string(),
            "--gid",
            &INSIDE_UID.to_string(),
        ]);
        c.args(&tools.system);
        self.bind_build_dirs(&mut c);
        c.arg("--chdir").arg(inside_cwd).arg("--").args(argv);
        // Nothing of the server's own directories as the outer working dir.
        c.current_dir("/");
        c
    }

    /// bwrap arguments for the build's own files: its `/etc/passwd` and `group`, `/proc`
    /// and `/dev`, its writable directories, and the toolchain read-only.
    fn bind_build_dirs(&self, c: &mut std::process::Command) {
        let m = &self.mounts;
        c.arg("--ro-bind")
            .arg(m.etc.join("passwd"))
            .arg("/etc/passwd");
        c.arg("--ro-bind")
            .arg(m.etc.join("group"))
            .arg("/etc/group");
        c.args(["--proc", "/proc", "--dev", "/dev"]);
        c.arg("--bind").arg(&m.checkout).arg(INSIDE_CHECKOUT);
        c.arg("--bind").arg(&m.home).arg(INSIDE_HOME);
        c.arg("--bind").arg(&m.tmp).arg(INSIDE_TMP);
        if let Some(cache) = &m.cache {
            c.arg("--bind").arg(cache).arg(INSIDE_CACHE);
        }
        // In order: a writable folder inside a read-only one comes after it.
        for (host, inside, writable) in self.tools.lock().unwrap_or_else(|e| e.into_inner()).iter()
        {
            let how = if *writable { "--bind" } else { "--ro-bind" };
            c.arg(how).arg(host).arg(inside);
        }
    }

    /// Where commands see the host path `cwd`: under the checkout, or under a mounted
    /// folder (the checkout's root otherwise).
    fn inside(&self, cwd: &Path) -> PathBuf {
        if let Ok(rel) = cwd.strip_prefix(&self.mounts.checkout) {
            return Path::new(INSIDE_CHECKOUT).join(rel);
        }
        let tools = self.tools.lock().unwrap_or_else(|e| e.into_inner());
        tools
            .iter()
            .rev()
            .find_map(|(host, inside, _)| cwd.strip_prefix(host).ok().map(|rel| inside.join(rel)))
            .unwrap_or_else(|| PathBuf::from(INSIDE_CHECKOUT))
    }

    /// A limit the build has hit, given the disk it uses now.
    pub fn limit_hit(&self, disk_used: u64) -> Option<LimitHit> {
        let limits = self.sandbox.limits;
        if let Some(g) = &self.group {
            if g.oom_kills() > 0 {
                return Some(LimitHit::Memory(limits.memory_bytes));
            }
            if g.pids_refused() > 0 {
                return Some(LimitHit::Processes(limits.pids));
            }
        }
        (disk_used > limits.disk_bytes).then_some(LimitHit::Disk(limits.disk_bytes))
    }

    /// Bytes the build occupies under its writable directories (blocks, so sparse
    /// files count as what they use). Blocking: call off the async threads.
    pub fn disk_used(&self) -> u64 {
        let mut dirs = vec![
            self.mounts.checkout.clone(),
            self.mounts.home.clone(),
            self.mounts.tmp.clone(),
        ];
        dirs.extend(self.mounts.cache.clone());
        super::disk_usage(&dirs)
    }

    /// Kills every process of the build (no-op without cgroups: the process group and
    /// the pid namespace take care of it).
    pub fn kill_all(&self) {
        if let Some(g) = &self.group {
            g.kill_all();
        }
    }
}
