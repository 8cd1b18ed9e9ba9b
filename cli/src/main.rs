//! `cdeploy`: the developer CLI. Parses arguments and hands over to one module per command.
//!
//! # Layout
//! * [`commands`] — one module per subcommand (its `mod.rs` names them; `deploy/` is a
//!   folder of its own), over the modules below, which they share.
//! * [`exit`] — exit codes (0 ready, 1 build failed, 2 usage/config, 3 server/API) and the error type.
//! * [`client`] — the API client: auth, error mapping, retries.
//! * [`follow`] — following a deployment's events over a WebSocket, resuming on disconnect.
//! * [`printer`] — stdout/stderr discipline, spinners and progress bars on a terminal.
//! * [`project`] — which project a directory deploys: its workspace root and its slug.
//! * [`files`] — walking a directory the way `deploy` uploads it, and hashing files.
//! * [`upload`] — uploading the blobs the server lacks, in batches.
//! * [`local_server`] — the `cdeploy-server` the CLI starts for a local API with nothing
//!   listening, and the files `cdeploy server` reads.
//! * [`oidc`] — a CI job's identity token traded for a deploy token (no stored token).
#![forbid(unsafe_code)]

mod client;
mod commands;
mod exit;
mod files;
mod follow;
mod local_server;
mod oidc;
mod printer;
mod project;
mod upload;

use clap::{Parser, Subcommand};

use crate::exit::ExitStatus;

#[derive(Parser, Debug)]
#[command(
    name = "cdeploy",
    version,
    about = "Deploy frontend apps to a cdeploy server",
    propagate_version = true
)]
pub struct Cli {
    /// API URL of the cdeploy server.
    #[arg(
        long,
        global = true,
        env = "CDEPLOY_API",
        default_value = local_server::DEFAULT_API
    )]
    api: String,
    /// API token (default: the one `cdeploy login` saved for this API URL).
    #[arg(long, global = true, env = "CDEPLOY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print one JSON document on stdout (also on failure).
    #[arg(long, global = true)]
    json: bool,
    /// Print nothing but the result.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Disable colors (also NO_COLOR).
    #[arg(long, global = true)]
    no_color: bool,
    /// Longest time in all to wait out `429 Too Many Requests` answers (a rate limit, a
    /// full build queue) before failing; each is retried after its Retry-After.
    #[arg(
        long,
        global = true,
        env = "CDEPLOY_MAX_WAIT",
        value_name = "SECS",
        default_value_t = 120
    )]
    max_wait: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Deploy a directory (its source, a git repository, or a prebuilt folder).
    Deploy(commands::deploy::Args),
    /// Show a project's latest build log; follows it while it runs.
    Logs(commands::logs::Args),
    /// List projects, or a project's deployments.
    Ls(commands::ls::Args),
    /// Show one deployment.
    Inspect(commands::inspect::Args),
    /// What changed between two deployments: files, settings and rules.
    Diff(commands::diff::Args),
    /// Stop a queued or running build (by deployment id, or a project's newest).
    Cancel(commands::cancel::Args),
    /// Open a project's site in the browser.
    Open(commands::open::OpenArgs),
    /// Open the web dashboard, signed in as the token in use.
    Dashboard(commands::dashboard::Args),
    /// Make a deployment the production one (no rebuild).
    Promote(commands::promote::Args),
    /// Move production back to the previous ready deployment (no rebuild).
    Rollback(commands::promote::RollbackArgs),
    /// Delete a project.
    Rm(commands::rm::Args),
    /// Create cdeploy.toml, detecting the framework.
    Init(commands::init::Args),
    /// Save the API URL and a token.
    Login(commands::login::Args),
    /// Forget the token saved for the API URL.
    Logout(commands::login::LogoutArgs),
    /// Show the token in use: its name, role and projects.
    Whoami(commands::tokens::WhoamiArgs),
    /// Create, list and revoke API tokens (admin).
    Tokens(commands::tokens::Args),
    /// Show the audit log: what each token did (admin).
    Audit(commands::audit::AuditArgs),
    /// Stored secrets: add, list, remove and pull a project's variables (admin).
    Env(commands::env::Args),
    /// Deploy on git push: link a repository, read webhook deliveries, deploy hooks.
    Git(commands::git::Args),
    /// Put previews behind a password and a bypass token (admin).
    Protection(commands::protection::Args),
    /// Custom domains: add (with the DNS record to create), list, inspect, remove.
    Domains(commands::domains::Args),
    /// Deploy events out: send created, ready, failed, … to a URL, Slack or Discord.
    Notify(commands::notify::Args),
    /// CI identities (OIDC) that may deploy a project with no stored token.
    Trust(commands::trust::Args),
    /// The local server `cdeploy deploy` starts by itself: status, stop, logs.
    Server(commands::server::Args),
    /// Print shell completions.
    Completions(commands::completions::Args),
}

/// Global options every command sees.
pub struct Globals {
    pub api: String,
    pub token: Option<String>,
    pub printer: printer::Printer,
    /// `--max-wait`.
    pub max_wait: std::time::Duration,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let no_color = cli.no_color || std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    if no_color {
        console::set_colors_enabled(false);
        console::set_colors_enabled_stderr(false);
    }
    let printer = printer::Printer::new(cli.json, cli.quiet);
    let globals = Globals {
        api: cli.api.trim_end_matches('/').to_string(),
        token: cli.token,
        printer,
        // A week is as good as forever, and keeps instant arithmetic in range.
        max_wait: std::time::Duration::from_secs(cli.max_wait.min(7 * 86_400)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitStatus::Error.into();
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Deploy(a) => commands::deploy::run(&globals, a).await,
            Command::Logs(a) => commands::logs::run(&globals, a).await,
            Command::Cancel(a) => commands::cancel::run(&globals, a).await,
            Command::Open(a) => commands::open::run(&globals, a).await,
            Command::Dashboard(a) => commands::dashboard::run(&globals, a).await,
            Command::Logout(a) => commands::login::logout(&globals, a).await,
            Command::Whoami(a) => commands::tokens::whoami(&globals, a).await,
            Command::Tokens(a) => commands::tokens::run(&globals, a).await,
            Command::Audit(a) => commands::audit::run(&globals, a).await,
            Command::Env(a) => commands::env::run(&globals, a).await,
            Command::Git(a) => commands::git::run(&globals, a).await,
            Command::Protection(a) => commands::protection::run(&globals, a).await,
            Command::Domains(a) => commands::domains::run(&globals, a).await,
            Command::Notify(a) => commands::notify::run(&globals, a).await,
            Command::Trust(a) => commands::trust::run(&globals, a).await,
            Command::Ls(a) => commands::ls::run(&globals, a).await,
            Command::Inspect(a) => commands::inspect::run(&globals, a).await,
            Command::Diff(a) => commands::diff::run(&globals, a).await,
            Command::Promote(a) => commands::promote::run(&globals, a).await,
            Command::Rollback(a) => commands::promote::rollback(&globals, a).await,
            Command::Rm(a) => commands::rm::run(&globals, a).await,
            Command::Init(a) => commands::init::run(&globals, a).await,
            Command::Login(a) => commands::login::run(&globals, a).await,
            Command::Server(a) => commands::server::run(&globals, a).await,
            Command::Completions(a) => commands::completions::run(a),
        }
    });
    match result {
        Ok(status) => status.into(),
        Err(e) => {
            globals.printer.error(&e);
            e.status.into()
        }
    }
}

#[cfg(test)]
mod tests {
    /// Each Layout map names every module declared beside it.
    #[test]
    fn layout_maps_name_every_module() {
        for (file, text) in [
            ("main.rs", include_str!("main.rs")),
            ("commands/mod.rs", include_str!("commands/mod.rs")),
            (
                "commands/deploy/mod.rs",
                include_str!("commands/deploy/mod.rs"),
            ),
        ] {
            let docs: String = text
                .lines()
                .filter(|l| l.starts_with("//!"))
                .collect::<Vec<_>>()
                .join("\n");
            for line in text.lines() {
                let decl = line.trim_start_matches("pub ");
                let Some(name) = decl.strip_prefix("mod ").and_then(|n| n.strip_suffix(';')) else {
                    continue;
                };
                assert!(
                    docs.contains(&format!("[`{name}`]")),
                    "{file}'s Layout does not name `{name}`"
                );
            }
        }
    }
}
