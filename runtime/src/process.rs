//! One start of a deployment's server: its sandbox cell (namespaces, a network without
//! the host, a cgroup with the runtime's memory and process limits, its bundle
//! read-only), the command with exactly its environment, its output into the logs, and
//! the wait until it answers. The process is then watched by a task that owns the cell
//! until the server exits or is stopped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdeploy_builder::sandbox::{self, Mounts, Sandbox};
use cdeploy_core::server::ServerSpec;
use tokio::io::BufReader;
use tokio_util::sync::CancellationToken;

use crate::logs::Logs;

/// The port a server listens on inside its own network namespace.
pub const INSIDE_PORT: u16 = 3000;
/// Where its bundle and Node.js are inside the sandbox.
const INSIDE_APP: &str = "/app";
const INSIDE_NODE: &str = "/opt/cdeploy/node";

/// A started server: where it answers, and how to stop it.
pub struct Started {
    pub addr: SocketAddr,
    pub stop: CancellationToken,
    /// Resolves when the process is gone, with why it ended (`None`: stopped).
    pub exited: tokio::sync::watch::Receiver<Option<Exit>>,
}

/// How a server's process ended.
#[derive(Debug, Clone)]
pub struct Exit {
    /// Whether it was asked to (idle, evicted, shut down).
    pub stopped: bool,
    pub why: String,
}

/// What a start needs to know.
pub struct Launch<'a> {
    pub sandbox: &'static Sandbox,
    pub id: &'a str,
    pub spec: &'a ServerSpec,
    pub bundle: &'a Path,
    pub node_dir: &'a Path,
    /// This start's scratch folder (HOME, /tmp, its `/etc`).
    pub scratch: PathBuf,
    pub env: Vec<(String, String)>,
    pub logs: Arc<Logs>,
    pub timeout: Duration,
    /// Held while the process runs (the Node.js version's lease).
    pub keep: Box<dyn Send + Sync>,
}

/// Starts the server and waits until it answers its health path.
pub async fn start(l: Launch<'_>) -> Result<Started, String> {
    let (cell, port) = cell(&l)?;
    let mut cmd = command(&l, &cell);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = sandbox::spawn(cmd)
        .await
        .map_err(|e| format!("cannot start the server: {e}"))?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(
            Box::new(out),
            "stdout",
            l.id.to_string(),
            l.logs.clone(),
        ));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(
            Box::new(err),
            "stderr",
            l.id.to_string(),
            l.logs.clone(),
        ));
    }
    let stop = CancellationToken::new();
    let (tx, exited) = tokio::sync::watch::channel(None);
    let disk_dirs = vec![
        cell.mounts().checkout.clone(),
        cell.mounts().home.clone(),
        cell.mounts().tmp.clone(),
        l.scratch.join("next-cache"),
    ];
    let watch = Watch {
        disk_dirs,
        cell,
        child,
        stop: stop.clone(),
        tx,
        id: l.id.to_string(),
        logs: l.logs.clone(),
        scratch: l.scratch.clone(),
        keep: l.keep,
    };
    tokio::spawn(watch.run());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Started { addr, stop, exited };
    if let Err(why) = wait_ready(&started, &l.spec.health, l.timeout).await {
        // What the server printed last says why (a missing module, a port in use).
        let tail = l.logs.tail(l.id, 3);
        return Err(match tail.is_empty() {
            true => why,
            false => format!("{why}; it printed: {}", tail.join(" / ")),
        });
    }
    Ok(started)
}

/// The server's cell: its folders (scratch, HOME, /tmp, its `/etc`), its cgroup, a
/// loopback port forwarded to its `PORT`, its bundle and Node.js read-only, and Next.js's
/// cache folder writable. Returns the cell and the port.
fn cell(l: &Launch<'_>) -> Result<(sandbox::Cell<'static>, u16), String> {
    let mounts = Mounts {
        checkout: l.scratch.join("work"),
        home: l.scratch.join("home"),
        tmp: l.scratch.join("tmp"),
        cache: None,
        etc: l.scratch.join("etc"),
    };
    let next_cache = l.scratch.join("next-cache");
    let made = std::fs::create_dir_all(&next_cache).and_then(|()| {
        use std::os::unix::fs::PermissionsExt;
        // The server's uid passes through to its folders; it cannot list this one.
        std::fs::set_permissions(&l.scratch, std::fs::Permissions::from_mode(0o711))?;
        l.sandbox.prepare(&mounts)?;
        l.sandbox.hand_over(&next_cache)
    });
    made.map_err(|e| format!("cannot prepare the server's folders: {e}"))?;
    let seq = l
        .scratch
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("0");
    let mut cell = l
        .sandbox
        .cell(&format!("rt-{seq}"), mounts)
        .map_err(|e| format!("cannot make the server's sandbox: {e}"))?;
    let port = free_port().map_err(|e| format!("no free port for the server: {e}"))?;
    cell.forward_port(port, INSIDE_PORT);
    let seen = cell.mount_tools(&[
        (l.bundle.to_path_buf(), INSIDE_APP),
        (l.node_dir.to_path_buf(), INSIDE_NODE),
    ]);
    // Never through a link: only the folder the bundle's maker made.
    let cache = std::fs::symlink_metadata(app_dir(l).join(".next/cache"));
    if cache.is_ok_and(|m| m.is_dir()) {
        let inside = seen[0].join(&l.spec.cwd).join(".next/cache");
        cell.mount_writable(&[(next_cache, inside.to_str().unwrap_or(""))]);
    }
    Ok((cell, port))
}

/// The server's folder on the host.
fn app_dir(l: &Launch<'_>) -> PathBuf {
    match l.spec.cwd.as_str() {
        "." => l.bundle.to_path_buf(),
        cwd => l.bundle.join(cwd),
    }
}

/// The start command in the cell: `node` is the deployment's Node.js; the environment
/// is exactly the launch's, with `PATH`, `HOME` and `TMPDIR`.
fn command(l: &Launch<'_>, cell: &sandbox::Cell<'static>) -> tokio::process::Command {
    let inside_node = if l.sandbox.is_isolated() {
        PathBuf::from(INSIDE_NODE)
    } else {
        l.node_dir.to_path_buf()
    };
    let mut argv: Vec<String> = vec![inside_node.join("bin/node").display().to_string()];
    argv.extend(l.spec.command[1..].iter().cloned());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut env = l.env.clone();
    env.push((
        "PATH".into(),
        format!(
            "{}:/usr/local/bin:/usr/bin:/bin",
            inside_node.join("bin").display()
        ),
    ));
    let view = l.sandbox.view(cell.mounts());
    env.push(("HOME".into(), view.home.display().to_string()));
    env.push(("TMPDIR".into(), view.tmp.display().to_string()));
    cell.command(&argv, &env, &app_dir(l))
}

/// A free port of the loopback, for pasta to listen on.
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`), where a port the
/// system hands to `bind(0)` or an outgoing connection never is: a server's port held
/// for minutes must not be one another program was just given and is about to bind.
/// Falls back to an ephemeral port when none is free there.
fn free_port() -> std::io::Result<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = (low.saturating_sub(16384).max(10000), low);
    if from < to {
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new();
        for i in 0..64u32 {
            let port = from + (seed.hash_one(i) % u64::from(to - from)) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Lines of one output stream into the logs. A line is kept up to
/// [`crate::logs::MAX_LINE_BYTES`] and the rest of it read and dropped, so a server
/// that writes gigabytes without a newline costs this process one line's memory; bytes
/// that are not UTF-8 are shown replaced, and the stream is read until it ends (a
/// reader that stopped would leave the server writing into a closed pipe).
async fn pump(
    stream: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    name: &'static str,
    id: String,
    logs: Arc<Logs>,
) {
    use tokio::io::AsyncReadExt;
    let mut reader = BufReader::new(stream);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 8192];
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for part in chunk[..n].split_inclusive(|b| *b == b'\n') {
            let room =
                crate::logs::MAX_LINE_BYTES + 4 - line.len().min(crate::logs::MAX_LINE_BYTES + 4);
            line.extend_from_slice(&part[..part.len().min(room)]);
            if part.ends_with(b"\n") {
                logs.push(&id, name, &String::from_utf8_lossy(&line));
                line.clear();
            }
        }
    }
    if !line.is_empty() {
        logs.push(&id, name, &String::from_utf8_lossy(&line));
    }
}

/// Asks for the health path until the server answers (any status), it exits, or the
/// time is up.
async fn wait_ready(s: &Started, health: &str, timeout: Duration) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("http://{}{health}", s.addr);
    let deadline = Instant::now() + timeout;
    let mut exited = s.exited.clone();
    loop {
        if let Some(exit) = exited.borrow().clone() {
            return Err(exit.why);
        }
        match client.get(&url).send().await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                s.stop.cancel();
                return Err(format!(
                    "the server did not answer GET {health} within {}s ({e})",
                    timeout.as_secs()
                ));
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(25)) => {}
            _ = exited.changed() => {}
        }
    }
}

/// Owns a running server's cell and process until it ends.
struct Watch {
    cell: sandbox::Cell<'static>,
    child: tokio::process::Child,
    stop: CancellationToken,
    tx: tokio::sync::watch::Sender<Option<Exit>>,
    id: String,
    logs: Arc<Logs>,
    scratch: PathBuf,
    /// The folders the server may write (its disk use).
    disk_dirs: Vec<PathBuf>,
    keep: Box<dyn Send + Sync>,
}

impl Watch {
    async fn run(mut self) {
        let mut limits = tokio::time::interval(Duration::from_secs(5));
        let exit = loop {
            tokio::select! {
                status = self.child.wait() => {
                    let why = match self.cell.limit_hit(0) {
                        Some(sandbox::LimitHit::Memory(b)) => format!(
                            "the server was killed: it reached its memory limit of {} MiB (server setting runtime_memory_mb)",
                            b >> 20
                        ),
                        Some(sandbox::LimitHit::Processes(n)) => format!(
                            "the server reached its limit of {n} processes and threads"
                        ),
                        _ => match status {
                            Ok(s) => describe(&s),
                            Err(e) => format!("the server's process was lost: {e}"),
                        },
                    };
                    break Exit { stopped: false, why };
                }
                _ = self.stop.cancelled() => {
                    break Exit { stopped: true, why: "stopped".into() };
                }
                _ = limits.tick() => {
                    let dirs = self.disk_dirs.clone();
                    let used = tokio::task::spawn_blocking(move || sandbox::disk_usage(&dirs))
                        .await
                        .unwrap_or(0);
                    if let Some(hit) = self.cell.limit_hit(used) {
                        if matches!(hit, sandbox::LimitHit::Disk(_)) {
                            break Exit {
                                stopped: false,
                                why: format!(
                                    "the server was stopped: it wrote more than {} MiB to its folders (HOME, /tmp, /work and its cache)",
                                    self.cell.limits().disk_bytes >> 20
                                ),
                            };
                        }
                    }
                }
            }
        };
        // Everything it started goes, whatever ended it.
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        self.cell.kill_all();
        let _ = self.child.kill().await;
        let line = if exit.stopped {
            "cdeploy: the server was stopped".to_string()
        } else {
            format!("cdeploy: {}", exit.why)
        };
        self.logs.push(&self.id, "system", &line);
        drop(self.cell);
        let _ = std::fs::remove_dir_all(&self.scratch);
        drop(self.keep);
        let _ = self.tx.send(Some(exit));
    }
}

/// An exit status in words.
fn describe(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("the server exited with code {code}"),
        (None, Some(sig)) => format!("the server was killed by signal {sig}"),
        _ => "the server exited".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ports_stay_out_of_the_ephemeral_range() {
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        for _ in 0..20 {
            let port = free_port().unwrap();
            assert!((10000..low).contains(&port), "{port}");
        }
    }

    #[tokio::test]
    async fn output_lines_are_bounded_lossy_and_read_to_the_end() {
        let mut out = vec![b'x'; 10 << 20];
        out.extend_from_slice(b"\nbefore \xff\xfe after\nlast without newline");
        let logs = Arc::new(Logs::default());
        pump(
            Box::new(std::io::Cursor::new(out)),
            "stdout",
            "d".into(),
            logs.clone(),
        )
        .await;
        let lines = logs.lines("d");
        assert_eq!(
            lines.len(),
            3,
            "{:?}",
            lines.iter().map(|l| l.text.len()).collect::<Vec<_>>()
        );
        assert!(lines[0].text.len() <= crate::logs::MAX_LINE_BYTES + 3);
        assert!(lines[0].text.ends_with('…'));
        assert_eq!(lines[1].text, "before \u{fffd}\u{fffd} after");
        assert_eq!(lines[2].text, "last without newline");
    }
}
