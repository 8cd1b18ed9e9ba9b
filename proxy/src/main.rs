//! `cdeploy-proxy`: serves deployments from storage by Host header.

use std::sync::Arc;

use anyhow::Context;
use cdeploy_core::storage::LocalStorage;
use cdeploy_proxy::{Proxy, ProxyConfig};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// mimalloc: fewer cycles per request than glibc malloc in the proxy's hot path
/// (see bench/proxy.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "cdeploy-proxy",
    version,
    about = "Serves cdeploy deployments by Host header"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "CDEPLOY_PROXY_LISTEN", default_value = "127.0.0.1:8000")]
    listen: String,
    /// Public domain: `<slug>.<domain>` serves a project.
    #[arg(long, env = "CDEPLOY_DOMAIN", default_value = "localhost:8000")]
    domain: String,
    /// Storage location: a directory (`BASE_PATH` is the seed's name for it).
    #[arg(long, env = "CDEPLOY_STORAGE")]
    storage: Option<String>,
    /// Seconds a route pointer is cached; promote/rollback reach this replica within it.
    #[arg(long, env = "CDEPLOY_ROUTE_TTL", default_value_t = 2)]
    route_ttl: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "cdeploy_proxy=info".into()),
        )
        .init();
    let args = Args::parse();
    let location = args
        .storage
        .or_else(|| std::env::var("BASE_PATH").ok())
        .context("no storage: pass --storage DIR (or set CDEPLOY_STORAGE / BASE_PATH)")?;
    if location.starts_with("s3://")
        || location.starts_with("http://")
        || location.starts_with("https://")
    {
        anyhow::bail!("{location}: S3 and HTTP origins arrive with distributed mode; this build serves a local directory");
    }
    let storage =
        LocalStorage::open(&location).with_context(|| format!("cannot open storage {location}"))?;
    let mut config = ProxyConfig::new(args.domain.clone());
    config.route_ttl = std::time::Duration::from_secs(args.route_ttl);
    let proxy = Proxy::new(Arc::new(storage), config);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, domain = %args.domain, storage = %location, "proxy listening");
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        cdeploy_core::shutdown_signal().await;
        trigger.cancel();
    });
    cdeploy_proxy::run(listener, proxy, shutdown).await?;
    Ok(())
}
