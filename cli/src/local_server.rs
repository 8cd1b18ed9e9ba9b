//! The local server the CLI starts by itself: `cdeploy deploy` aimed at a local API
//! (`http://127.0.0.1:<port>` or `http://localhost:<port>`, the default
//! `http://127.0.0.1:9000` included) with nothing listening starts `cdeploy-server` in the
//! background there (default data dir, or `CDEPLOY_DATA_DIR`; its log in
//! `<data-dir>/server.log`), waits until it is ready, and goes on. `cdeploy server
//! status|stop|logs` ([`crate::commands::server`]) manage it through [`Local`].

use std::io::{BufRead, Seek};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::exit::CliError;
use crate::Globals;

/// The API URL the CLI uses when none is given.
pub const DEFAULT_API: &str = "http://127.0.0.1:9000";

/// How long a starting server may take to answer `/healthz` (the first start creates
/// its database and probes the sandbox).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Files of a server started by the CLI.
pub struct Local {
    pub data_dir: PathBuf,
}

impl Local {
    pub fn new() -> Local {
        // The server reads CDEPLOY_DATA_DIR itself; the CLI looks where it will write.
        let data_dir = std::env::var_os("CDEPLOY_DATA_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(cdeploy_core::default_data_dir);
        Local { data_dir }
    }
    pub fn log(&self) -> PathBuf {
        self.data_dir.join("server.log")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.data_dir.join("server.pid")
    }
    pub fn pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // A pid outlives its process: only a live cdeploy-server counts (`stop` must
        // never signal an unrelated process that got the number).
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        (pid > 0 && argv0.ends_with(b"cdeploy-server")).then_some(pid)
    }
}

pub async fn healthy(api: &str) -> bool {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build();
    match client {
        Ok(c) => c
            .get(format!("{api}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()),
        Err(_) => false,
    }
}

/// The address a server for `api` listens on, when `api` is a plain loopback HTTP URL.
fn local_listen(api: &str) -> Option<String> {
    let url = url::Url::parse(api).ok()?;
    let loopback = matches!(url.host_str()?, "127.0.0.1" | "localhost");
    (url.scheme() == "http" && loopback && matches!(url.path(), "" | "/"))
        .then(|| format!("127.0.0.1:{}", url.port_or_known_default().unwrap_or(80)))
}

/// Starts the local server when `g.api` is a local API, nothing answers there, and no
/// token was given (a server started here would not know it: a token means a server of
/// someone's own). Returns whether it started one.
pub async fn ensure_running(g: &Globals) -> Result<bool, CliError> {
    let Some(listen) = local_listen(&g.api).filter(|_| g.token.is_none()) else {
        return Ok(false);
    };
    if healthy(&g.api).await {
        return Ok(false);
    }
    let local = Local::new();
    let (child, start_of_log) = spawn(g, &local, &listen)?;
    wait_ready(g, &local, child, start_of_log).await?;
    g.printer.info(format!(
        "Started a local cdeploy server in the background (data {}, log {}); `cdeploy server stop` stops it",
        local.data_dir.display(),
        local.log().display()
    ));
    Ok(true)
}

/// Starts `cdeploy-server --listen <listen>` in its own session, its output appended to
/// its log, and records its pid. Returns the child and where its log began.
fn spawn(g: &Globals, local: &Local, listen: &str) -> Result<(Child, u64), CliError> {
    let binary = server_binary().ok_or_else(|| {
        CliError::api(
            "unreachable",
            format!("no cdeploy server answers at {} and cdeploy-server is not installed next to cdeploy or on PATH", g.api),
        )
        .with_hint("run ./install.sh, or pass --api for a remote server")
    })?;
    std::fs::create_dir_all(&local.data_dir).map_err(|e| {
        CliError::api(
            "server",
            format!("cannot create {}: {e}", local.data_dir.display()),
        )
    })?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(local.log())
        .map_err(|e| {
            CliError::api(
                "server",
                format!("cannot open {}: {e}", local.log().display()),
            )
        })?;
    let start_of_log = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut cmd = std::process::Command::new(&binary);
    cmd.args(["--listen", listen])
        .stdin(std::process::Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| CliError::api("server", e.to_string()))?,
        )
        .stderr(log);
    // Its own session: the server outlives this command and the terminal's ctrl-c.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd
        .spawn()
        .map_err(|e| CliError::api("server", format!("cannot start {}: {e}", binary.display())))?;
    let _ = std::fs::write(local.pid_file(), child.id().to_string());
    Ok((child, start_of_log))
}

/// Waits until the started server answers `/healthz`; fails with its log's last lines
/// if it exits first, or after [`START_TIMEOUT`].
async fn wait_ready(
    g: &Globals,
    local: &Local,
    mut child: Child,
    start_of_log: u64,
) -> Result<(), CliError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if healthy(&g.api).await {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let _ = std::fs::remove_file(local.pid_file());
            let tail = read_tail(&local.log(), start_of_log, 8);
            return Err(CliError::api(
                "server",
                format!("the local cdeploy server stopped at start ({status}):\n{tail}"),
            )
            .with_hint(format!("its log: {}", local.log().display())));
        }
        if Instant::now() > deadline {
            return Err(CliError::api(
                "server",
                format!(
                    "the local cdeploy server did not answer within {} s",
                    START_TIMEOUT.as_secs()
                ),
            )
            .with_hint(format!("its log: {}", local.log().display())));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `cdeploy-server` next to this executable, else on PATH.
fn server_binary() -> Option<PathBuf> {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("cdeploy-server")))
        .filter(|p| p.is_file());
    sibling.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("cdeploy-server"))
                .find(|p| p.is_file())
        })
    })
}

/// The last `n` lines of `path` from byte `from` on.
pub fn read_tail(path: &Path, from: u64, n: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    // Only the end is read, however long the log has grown.
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = from.max(len.saturating_sub(256 * 1024));
    let _ = f.seek(std::io::SeekFrom::Start(start));
    let lines: Vec<String> = std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_http_apis_are_started() {
        assert_eq!(local_listen(DEFAULT_API).as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(
            local_listen("http://localhost:9100").as_deref(),
            Some("127.0.0.1:9100")
        );
        assert_eq!(local_listen("https://127.0.0.1:9000"), None);
        assert_eq!(local_listen("http://deploy.example.com"), None);
        assert_eq!(local_listen("http://127.0.0.1:9000/api"), None);
    }
}
