//! `cdeploy-server`: parses settings and runs the control plane until SIGTERM/ctrl-c.

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// mimalloc: fewer cycles per request than glibc malloc in the proxy's hot path
/// (see bench/proxy.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Everything the server creates (database, token, logs, storage) is its user's alone.
    // SAFETY: umask has no preconditions.
    unsafe {
        libc::umask(0o077);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "cdeploy_server=info,cdeploy_proxy=info,tower_http=warn".into()
            }),
        )
        .init();
    let config = cdeploy_server::Config::resolve(cdeploy_server::Args::parse())?;
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
