//! `cdeploy-server`: parses settings and runs the control plane until SIGTERM/ctrl-c.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// mimalloc: fewer cycles per request than glibc malloc in the proxy's hot path
/// (see bench/proxy.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cdeploy_conn::no_transparent_huge_pages(); // idle memory stays compact
                                               // Everything the server creates (database, token, logs, storage) is its user's alone.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colors only on a terminal: a log file or a log service gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "cdeploy_server=info,cdeploy_proxy=info,cdeploy_conn=info,tower_http=warn".into()
            }),
        )
        .init();
    let mut args = cdeploy_server::Args::parse();
    let command = args.command.take();
    let config = cdeploy_server::Config::resolve(args)?;
    match command {
        None => {}
        Some(cdeploy_server::config::Command::Gc { dry_run }) => {
            let report = cdeploy_server::gc_once(&config, dry_run).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(());
        }
        Some(cdeploy_server::config::Command::MetricsToken { name }) => {
            println!(
                "{}",
                cdeploy_server::create_metrics_token(&config, &name).await?
            );
            return Ok(());
        }
    }
    let api = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another cdeploy-server running?)",
                config.listen
            )
        })?;
    let proxy = match &config.proxy_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr} for the proxy (pass --proxy-listen none to disable it)"
            )
        })?),
        None => None,
    };
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        cdeploy_core::shutdown_signal().await;
        trigger.cancel();
    });
    cdeploy_server::run(config, api, proxy, shutdown).await
}
