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

pub mod cgroup;

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// Resource limits of one build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    /// Processes and threads at once.
    pub pids: u64,
    /// Bytes the build may occupy on disk: checkout, HOME, /tmp and its cache together.
    pub disk_bytes: u64,
}

impl Default for Limits {
    /// Room for a Next.js build with its `node_modules`.
    fn default() -> Self {
        Limits {
            memory_bytes: 4096 << 20,
            pids: 1024,
            disk_bytes: 10240 << 20,
        }
    }
}

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

/// Where a build's writable directories are on the host.
#[derive(Debug, Clone)]
pub struct Mounts {
    pub checkout: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
    /// The project's own cache (package-manager caches).
    pub cache: Option<PathBuf>,
    /// Holds the synthetic `passwd` and `group` files (not writable by the build).
    pub etc: PathBuf,
}

/// The same directories as build commands see them.
#[derive(Debug, Clone)]
pub struct View {
    pub checkout: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
    pub cache: Option<PathBuf>,
}

/// Paths inside the sandbox.
const INSIDE_CHECKOUT: &str = "/work";
const INSIDE_HOME: &str = "/home/build";
const INSIDE_TMP: &str = "/tmp";
const INSIDE_CACHE: &str = "/cache";
/// The build's uid and gid inside its user namespace: an ordinary user, not root.
const INSIDE_UID: u32 = 1000;

/// `/etc` entries a build needs (DNS, TLS roots, dynamic linker, npm's system config).
/// Nothing else of the host's `/etc` exists in its view.
const ETC_ALLOWED: &[&str] = &[
    "resolv.conf",
    "hosts",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "crypto-policies",
    "alternatives",
    "npmrc",
    "localtime",
    "mime.types",
    "protocols",
    "services",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
];

/// Where a sandbox sends DNS when the host's resolver listens on its loopback
/// (systemd-resolved's 127.0.0.53), which a build cannot reach: pasta maps this address
/// (a non-routed benchmarking range) to the host's resolver.
const DNS_FORWARD: &str = "198.18.0.53";

/// The sandbox's `/etc/resolv.conf` when every nameserver of the host's is a loopback
/// address (`None`: the host's file works as it is).
fn forwarded_resolv_conf(host: &str) -> Option<String> {
    let servers: Vec<&str> = host
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(str::trim)
        .collect();
    let loopback = |s: &&str| {
        s.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    };
    if servers.is_empty() || !servers.iter().all(loopback) {
        return None;
    }
    let mut out = format!("nameserver {DNS_FORWARD}\n");
    for line in host.lines() {
        let t = line.trim();
        if t.starts_with("search") || t.starts_with("options") || t.starts_with("domain") {
            out.push_str(t);
            out.push('\n');
        }
    }
    Some(out)
}

/// Addresses no build may reach besides the host's own: link-local (cloud metadata
/// services live there) and AWS's IPv6 metadata address.
const ALWAYS_BLOCKED: &[&str] = &["169.254.0.0/16", "fd00:ec2::254/128"];

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
    pasta: PathBuf,
    /// pasta's `-T`: `none`, or the allowed host ports.
    host_ports: String,
    /// The sandbox's own resolv.conf, when the host's points at its loopback.
    resolv_conf: Option<String>,
    /// `sh -c` script run in the new network namespace before bwrap.
    net_script: String,
    /// bwrap arguments for the read-only system view.
    system: Vec<String>,
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
    cgroup_problem: Option<String>,
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Every address of this host's interfaces but loopback: reachable through pasta's
/// splicing unless a route forbids it.
fn host_addresses() -> Vec<String> {
    let mut out = Vec::new();
    let mut ifs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free with freeifaddrs; we only read it.
    unsafe {
        if libc::getifaddrs(&mut ifs) != 0 {
            return out;
        }
        let mut cur = ifs;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                        if !ip.is_loopback() {
                            out.push(format!("{ip}/32"));
                        }
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                        if !ip.is_loopback() && (ip.segments()[0] & 0xffc0) != 0xfe80 {
                            out.push(format!("{ip}/128"));
                        }
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(ifs);
    }
    out.sort();
    out.dedup();
    out
}

/// The script that closes routes in the build's network namespace, then runs bwrap.
fn net_script(ip: &Path) -> String {
    let mut script = String::from("set -e\n");
    let mut blocked: Vec<String> = ALWAYS_BLOCKED.iter().map(|s| s.to_string()).collect();
    blocked.extend(host_addresses());
    for net in blocked {
        let (family, optional) = if net.contains(':') {
            // A host without IPv6 has no IPv6 route to close.
            ("-6", " 2>/dev/null || true")
        } else {
            ("-4", "")
        };
        script.push_str(&format!(
            "{} {family} route add prohibit {net}{optional}\n",
            ip.display()
        ));
    }
    script.push_str("exec \"$@\"\n");
    script
}

/// bwrap arguments for the read-only system: `/usr`, the merged-usr links (or the real
/// directories), and the allowed `/etc` entries.
fn system_view(own_resolv_conf: bool) -> Vec<String> {
    let mut args: Vec<String> = vec!["--ro-bind".into(), "/usr".into(), "/usr".into()];
    for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(name);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(&host) {
                    args.extend([
                        "--symlink".into(),
                        target.display().to_string(),
                        host.display().to_string(),
                    ]);
                }
            }
            Ok(m) if m.is_dir() => {
                let h = host.display().to_string();
                args.extend(["--ro-bind".into(), h.clone(), h]);
            }
            _ => {}
        }
    }
    for name in ETC_ALLOWED {
        if own_resolv_conf && *name == "resolv.conf" {
            continue;
        }
        let host = Path::new("/etc").join(name);
        if host.exists() {
            let h = host.display().to_string();
            args.extend(["--ro-bind".into(), h.clone(), h]);
        }
    }
    args
}

impl Sandbox {
    /// Sets up the sandbox, or says why none can be made. With `unsandboxed`, a missing
    /// sandbox is not an error: builds then run without isolation (and the caller warns).
    pub fn new(opts: &Options) -> Result<Sandbox, String> {
        let (cgroups, cgroup_problem) = match cgroup::Root::open(&opts.scope) {
            Ok(root) => (Some(root), None),
            Err(e) => (None, Some(e)),
        };
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
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
        let need = |name: &str, package: &str| {
            find_in_path(name).ok_or_else(|| {
                format!("`{name}` is not installed (Debian/Ubuntu package `{package}`; ./install.sh installs it)")
            })
        };
        let bwrap = need("bwrap", "bubblewrap")?;
        let pasta = need("pasta", "passt")?;
        let ip = need("ip", "iproute2")?;
        let host_ports = if opts.host_ports.is_empty() {
            "none".to_string()
        } else {
            let ports: Vec<String> = opts.host_ports.iter().map(u16::to_string).collect();
            ports.join(",")
        };
        let resolv_conf = std::fs::read_to_string("/etc/resolv.conf")
            .ok()
            .and_then(|t| forwarded_resolv_conf(&t));
        sandbox.isolation = Isolation::Namespaces(Box::new(Tools {
            bwrap,
            pasta,
            host_ports,
            system: system_view(resolv_conf.is_some()),
            resolv_conf,
            net_script: net_script(&ip),
        }));
        sandbox.probe(&opts.probe_dir)?;
        Ok(sandbox)
    }

    /// Runs `true` in a sandbox once, so a machine that cannot make one (no user
    /// namespaces, no /dev/net/tun) is found at start, not on the first deploy.
    fn probe(&self, dir: &Path) -> Result<(), String> {
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
        made.map_err(|e| format!("cannot prepare {}: {e}", dir.display()))?;
        let cell = self.cell("probe", mounts.clone())?;
        let out = cell
            .std_command(&["/bin/sh", "-c", "exit 0"], &[], &mounts.checkout)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot start the sandbox: {e}"))?;
        drop(cell);
        let _ = std::fs::remove_dir_all(dir);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "a test command failed in the sandbox ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
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

    /// The `PATH` build commands get: in a sandbox, only the entries that exist in its
    /// view (the system under `/usr`), so nothing of the server's own setup shows.
    pub fn build_path(&self, server_path: &str) -> String {
        if !self.is_isolated() {
            return server_path.to_string();
        }
        let kept: Vec<&str> = server_path
            .split(':')
            .filter(|p| p.starts_with("/usr/") || matches!(*p, "/bin" | "/sbin"))
            .collect();
        if kept.is_empty() {
            "/usr/local/bin:/usr/bin:/bin".to_string()
        } else {
            kept.join(":")
        }
    }

    /// How build commands see `mounts`.
    pub fn view(&self, mounts: &Mounts) -> View {
        match self.isolation {
            Isolation::Namespaces(_) => View {
                checkout: INSIDE_CHECKOUT.into(),
                home: INSIDE_HOME.into(),
                tmp: INSIDE_TMP.into(),
                cache: mounts.cache.as_ref().map(|_| INSIDE_CACHE.into()),
            },
            Isolation::None => View {
                checkout: mounts.checkout.clone(),
                home: mounts.home.clone(),
                tmp: mounts.tmp.clone(),
                cache: mounts.cache.clone(),
            },
        }
    }

    /// Creates the build's directories, owned by the uid builds run as, and the
    /// synthetic `/etc/passwd` (a build's tools look their user up).
    pub fn prepare(&self, mounts: &Mounts) -> std::io::Result<()> {
        for d in [&mounts.checkout, &mounts.home, &mounts.tmp, &mounts.etc] {
            std::fs::create_dir_all(d)?;
        }
        if let Some(c) = &mounts.cache {
            std::fs::create_dir_all(c)?;
            // The project's folder of scopes (`projects/<slug>/`): the build uid passes
            // through to its own scope's, and can list none of them.
            if let Some(parent) = c.parent() {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))?;
            }
        }
        std::fs::write(
            mounts.etc.join("passwd"),
            format!("root:x:0:0:root:/root:/usr/sbin/nologin\nbuild:x:{INSIDE_UID}:{INSIDE_UID}:cdeploy build:{INSIDE_HOME}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
        )?;
        std::fs::write(
            mounts.etc.join("group"),
            format!("root:x:0:\nbuild:x:{INSIDE_UID}:\nnogroup:x:65534:\n"),
        )?;
        let mut files = vec!["passwd", "group"];
        if let Isolation::Namespaces(tools) = &self.isolation {
            if let Some(conf) = &tools.resolv_conf {
                std::fs::write(mounts.etc.join("resolv.conf"), conf)?;
                files.push("resolv.conf");
            }
        }
        // Readable by the build uid (a root server's umask may be 077), writable by none.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&mounts.etc, std::fs::Permissions::from_mode(0o755))?;
        for f in files {
            std::fs::set_permissions(mounts.etc.join(f), std::fs::Permissions::from_mode(0o644))?;
        }
        for d in [&mounts.checkout, &mounts.home, &mounts.tmp] {
            self.hand_over(d)?;
        }
        // A project cache is handed over once, when it is new: what is inside was
        // written by builds, as the build uid (no need to walk it on every build).
        if let (Some(c), Some(uid)) = (&mounts.cache, self.user) {
            if std::os::unix::fs::MetadataExt::uid(&std::fs::symlink_metadata(c)?) != uid {
                self.hand_over(c)?;
            }
        }
        Ok(())
    }

    /// The uid builds run as, when builds run as a user of their own (a root builder).
    pub fn build_user(&self) -> Option<u32> {
        self.user
    }

    /// Gives a directory tree to the uid builds run as (a root server's files would be
    /// read-only to the build). Symlinks are changed, never followed.
    pub fn hand_over(&self, dir: &Path) -> std::io::Result<()> {
        let Some(uid) = self.user else {
            return Ok(());
        };
        let mut stack = vec![dir.to_path_buf()];
        while let Some(p) = stack.pop() {
            let meta = std::fs::symlink_metadata(&p)?;
            if std::os::unix::fs::MetadataExt::uid(&meta) != uid {
                std::os::unix::fs::lchown(&p, Some(uid), Some(uid))?;
            }
            if meta.is_dir() {
                for entry in std::fs::read_dir(&p)? {
                    stack.push(entry?.path());
                }
            }
        }
        Ok(())
    }

    /// A cell for one build: its cgroup (when cgroups are available) and mounts.
    pub fn cell(&self, name: &str, mounts: Mounts) -> Result<Cell<'_>, String> {
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
        })
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

/// Spawns a build command from a thread that lives as long as the process.
///
/// Build processes get `PR_SET_PDEATHSIG`, which fires when the *thread* that forked
/// them ends, not the process. A tokio thread can end: a worker that went through
/// `block_in_place` carries on as a blocking-pool thread, which exits after 10 s idle.
/// A build spawned there was SIGKILLed mid-install, "killed by a signal" with no reason.
pub async fn spawn(cmd: tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    type Reply = tokio::sync::oneshot::Sender<std::io::Result<tokio::process::Child>>;
    type Job = (tokio::process::Command, tokio::runtime::Handle, Reply);
    static SPAWNER: std::sync::OnceLock<std::sync::mpsc::Sender<Job>> = std::sync::OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("cdeploy-spawner".into())
            .spawn(move || {
                for (mut cmd, handle, reply) in rx {
                    let _enter = handle.enter();
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the spawner thread");
        tx
    });
    let gone = || std::io::Error::other("the spawner thread is gone");
    let (reply, answer) = tokio::sync::oneshot::channel();
    tx.send((cmd, tokio::runtime::Handle::current(), reply))
        .map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}

/// Which limit a build hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitHit {
    Memory(u64),
    Processes(u64),
    Disk(u64),
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitHit::Memory(b) => write!(
                f,
                "the build ran out of memory: it reached its memory limit of {} MiB and the kernel killed a build process (server setting build_memory_mb)",
                b >> 20
            ),
            LimitHit::Processes(n) => write!(
                f,
                "the build reached its process limit of {n} processes and threads at once (server setting build_pids)"
            ),
            LimitHit::Disk(b) => write!(
                f,
                "the build reached its disk limit of {} MiB (checkout, HOME, /tmp and cache together; server setting build_disk_mb)",
                b >> 20
            ),
        }
    }
}

/// One build's sandbox: every command of the build runs in it.
pub struct Cell<'a> {
    sandbox: &'a Sandbox,
    group: Option<cgroup::Group>,
    /// `cgroup.procs` paths, prepared for the child (no allocation after fork).
    procs: Vec<CString>,
    mounts: Mounts,
    /// Read-only folders (host, inside) added once the build's toolchain is known.
    tools: std::sync::Mutex<Vec<(PathBuf, PathBuf)>>,
}

impl Cell<'_> {
    pub fn mounts(&self) -> &Mounts {
        &self.mounts
    }

    /// Mounts host folders read-only at the given places for the commands started from
    /// now on (a toolchain); returns where those commands see each one (the host path
    /// itself without a sandbox).
    pub fn mount_tools(&self, binds: &[(PathBuf, &str)]) -> Vec<PathBuf> {
        let isolated = self.sandbox.is_isolated();
        let mut tools = self.tools.lock().unwrap_or_else(|e| e.into_inner());
        binds
            .iter()
            .map(|(host, inside)| {
                tools.push((host.clone(), PathBuf::from(inside)));
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

    /// `argv` in the sandbox, in `cwd` (a host path inside the checkout or the checkout
    /// itself), with exactly `env`.
    pub fn command(
        &self,
        argv: &[&str],
        env: &[(String, String)],
        cwd: &Path,
    ) -> tokio::process::Command {
        tokio::process::Command::from(self.std_command(argv, env, cwd))
    }

    fn std_command(
        &self,
        argv: &[&str],
        env: &[(String, String)],
        cwd: &Path,
    ) -> std::process::Command {
        let limits = self.sandbox.limits;
        let user = self.sandbox.user;
        let mut cmd = match &self.sandbox.isolation {
            Isolation::Namespaces(tools) => {
                let rel = cwd
                    .strip_prefix(&self.mounts.checkout)
                    .unwrap_or(Path::new(""));
                let inside_cwd = Path::new(INSIDE_CHECKOUT).join(rel);
                let mut c = std::process::Command::new(&tools.pasta);
                c.args([
                    "--config-net",
                    "--quiet",
                    "--no-map-gw",
                    "-T",
                    &tools.host_ports,
                    "-U",
                    "none",
                    "-t",
                    "none",
                    "-u",
                    "none",
                ]);
                if tools.resolv_conf.is_some() {
                    c.args(["--dns-forward", DNS_FORWARD]);
                }
                c.args(["--", "/bin/sh", "-c", &tools.net_script, "cdeploy-net"]);
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
                for (host, inside) in self.tools.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    c.arg("--ro-bind").arg(host).arg(inside);
                }
                c.arg("--chdir").arg(inside_cwd).arg("--").args(argv);
                // Nothing of the server's own directories as the outer working dir.
                c.current_dir("/");
                c
            }
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
        let procs = self.procs.clone();
        let nproc_fallback = self.group.is_none() && user.is_some();
        // SAFETY: the closure runs between fork and exec and only makes async-signal-
        // safe system calls on data prepared before the fork (no allocation, no locks).
        unsafe {
            cmd.pre_exec(move || {
                // Join the build's cgroup while still privileged.
                for file in &procs {
                    join_cgroup(file)?;
                }
                // A server's private umask is not the build's business.
                libc::umask(0o022);
                set_limit(libc::RLIMIT_CORE, 0)?;
                set_limit(libc::RLIMIT_FSIZE, limits.disk_bytes)?;
                if nproc_fallback {
                    set_limit(libc::RLIMIT_NPROC, limits.pids)?;
                }
                if let Some(uid) = user {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(uid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // After setuid: changing credentials clears the parent-death signal.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
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
        disk_usage(&dirs)
    }

    /// Kills every process of the build (no-op without cgroups: the process group and
    /// the pid namespace take care of it).
    pub fn kill_all(&self) {
        if let Some(g) = &self.group {
            g.kill_all();
        }
    }
}

/// Blocks used under `dirs`, symlinks not followed.
pub fn disk_usage(dirs: &[PathBuf]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        total += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

fn join_cgroup(file: &CString) -> std::io::Result<()> {
    // SAFETY: open/write/close on a NUL-terminated path and a stack buffer.
    unsafe {
        let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = [0u8; 20];
        let mut n = libc::getpid() as u64;
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let len = buf.len() - i;
        let written = libc::write(fd, buf[i..].as_ptr().cast(), len);
        libc::close(fd);
        if written != len as isize {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child with PDEATHSIG, spawned from a thread that ends right after: it must live
    /// on (the spawner thread is its parent), not be killed with that thread.
    #[test]
    fn builds_outlive_the_thread_that_asked_for_them() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let child = std::thread::spawn(move || {
            handle.block_on(async {
                let mut cmd = tokio::process::Command::new("sleep");
                cmd.arg("1");
                // SAFETY: prctl only, as the sandbox does.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                        Ok(())
                    });
                }
                spawn(cmd).await.unwrap()
            })
        })
        .join()
        .unwrap();
        let status = rt.block_on(async move {
            let mut child = child;
            child.wait().await.unwrap()
        });
        assert!(status.success(), "killed with the thread: {status:?}");
    }

    #[test]
    fn dns_through_pasta_only_for_a_loopback_resolver() {
        assert_eq!(forwarded_resolv_conf("nameserver 10.0.0.2\n"), None);
        assert_eq!(
            forwarded_resolv_conf("nameserver 127.0.0.1\nnameserver 10.0.0.2\n"),
            None
        );
        assert_eq!(
            forwarded_resolv_conf(
                "# systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n"
            )
            .as_deref(),
            Some("nameserver 198.18.0.53\noptions edns0 trust-ad\nsearch lan\n")
        );
        assert_eq!(
            forwarded_resolv_conf("nameserver ::1\n").as_deref(),
            Some("nameserver 198.18.0.53\n")
        );
        assert_eq!(forwarded_resolv_conf(""), None);
    }
}
