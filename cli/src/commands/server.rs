//! `cdeploy server status|stop|logs`: the local server `cdeploy deploy` starts by itself
//! ([`crate::local_server`]).

use std::time::{Duration, Instant};

use crate::exit::{CliError, CliResult, ExitStatus};
use crate::local_server::{healthy, read_tail, Local};
use crate::Globals;

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

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let local = Local::new();
    match args.command {
        Command::Status => status(g, &local).await,
        Command::Stop => stop(g, &local).await,
        Command::Logs { lines } => logs(g, &local, lines),
    }
}

async fn status(g: &Globals, local: &Local) -> CliResult {
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

async fn stop(g: &Globals, local: &Local) -> CliResult {
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

fn logs(g: &Globals, local: &Local, lines: usize) -> CliResult {
    if !local.log().is_file() {
        return Err(CliError::usage(format!(
            "no log at {}: the CLI has not started a server",
            local.log().display()
        )));
    }
    g.printer.result(read_tail(&local.log(), 0, lines));
    Ok(ExitStatus::Success)
}
