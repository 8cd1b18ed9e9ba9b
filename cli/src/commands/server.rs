//! The local server the CLI starts by itself: `cdeploy deploy` aimed at a local API
//! (`http://127.0.0.1:<port>` or `http://localhost:<port>`, the default
//! `http://127.0.0.1:9000` included) with nothing listening starts `cdeploy-server` in the
//! background there (default data dir, or `CDEPLOY_DATA_DIR`; its log in
//! `<data-dir>/server.log`), waits until it is ready, and goes on. `cdeploy server
//! status|stop|logs` manage it.

use std::io::{BufRead, Seek};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::exit::{CliError, CliResult, ExitStatus};
use crate::Globals;

/// The API URL the CLI uses when none is given.
pub const DEFAULT_API: &str = "http://127.0.0.1:9000";

/// How long a starting server may take to answer `/healthz` (the first start creates
/// its database and probes the sandbox).
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Whether the local server answers, and its pid, data and log.
    Status,
    /// Stop the server `cdeploy deploy` started (SIGTERM; builds end cleanly).
    Stop,
    /// Print the end of the local server's log.
    Logs {
        /// How many lines.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },
}

/// Files of a server started by the CLI.
struct Local {
    data_dir: PathBuf,
}

impl Local {
    fn new() -> Local {
        // The server reads CDEPLOY_DATA_DIR itself; the CLI looks where it will write.
        let data_dir = std::env::var_os("CDEPLOY_DATA_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(cdeploy_core::default_data_dir);
        Local { data_dir }
    }
    fn log(&self) -> PathBuf {
        self.data_dir.join("server.log")
    }
    fn pid_file(&self) -> PathBuf {
        self.data_dir.join("server.pid")
    }
    fn pid(&self) -> Option<i32> {
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

async fn healthy(api: &str) -> bool {
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
    cmd.args(["--listen", &listen])
        .stdin(std::process::Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| CliError::api("server", e.to_string()))?,
        )
        .stderr(log);
    // Its own session: the server outlives this command and the terminal's ctrl-c.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(|e| CliError::api("server", format!("cannot start {}: {e}", binary.display())))?;
    let _ = std::fs::write(local.pid_file(), child.id().to_string());
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if healthy(&g.api).await {
            break;
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
    g.printer.info(format!(
        "Started a local cdeploy server in the background (data {}, log {}); `cdeploy server stop` stops it",
        local.data_dir.display(),
        local.log().display()
    ));
    Ok(true)
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
fn read_tail(path: &Path, from: u64, n: usize) -> String {
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

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let local = Local::new();
    match args.command {
        Command::Status => {
            let up = healthy(&g.api).await;
            let pid = local.pid();
            if g.printer.json {
                g.printer.json_result(&serde_json::json!({
                    "api": g.api,
                    "running": up,
                    "pid": pid,
                    "data_dir": local.data_dir,
                    "log": local.log(),
                }));
            } else {
                let state = if up { "running" } else { "not running" };
                let started = pid
                    .map(|p| format!(", started by cdeploy as pid {p}"))
                    .unwrap_or_default();
                g.printer.result(format!(
                    "{} at {}{started}\ndata {}\nlog  {}",
                    state,
                    g.api,
                    local.data_dir.display(),
                    local.log().display()
                ));
            }
            Ok(if up {
                ExitStatus::Success
            } else {
                ExitStatus::Error
            })
        }
        Command::Stop => {
            let Some(pid) = local.pid() else {
                g.printer.info("No server started by cdeploy is running");
                return Ok(ExitStatus::Success);
            };
            // A process we started (its pid file is ours).
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while local.pid().is_some() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if local.pid().is_some() {
                return Err(CliError::api(
                    "server",
                    format!("the server (pid {pid}) did not stop within 30 s"),
                ));
            }
            let _ = std::fs::remove_file(local.pid_file());
            g.printer
                .info(format!("Stopped the local server (pid {pid})"));
            Ok(ExitStatus::Success)
        }
        Command::Logs { lines } => {
            if !local.log().is_file() {
                return Err(CliError::usage(format!(
                    "no log at {}: the CLI has not started a server",
                    local.log().display()
                )));
            }
            g.printer.result(read_tail(&local.log(), 0, lines));
            Ok(ExitStatus::Success)
        }
    }
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
