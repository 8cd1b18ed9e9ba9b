//! `cdeploy-proxy`: serves deployments from storage by Host header.
#![forbid(unsafe_code)]

use anyhow::Context;
use cdeploy_proxy::{Proxy, ProxyConfig};
use cdeploy_storage::{DynStorage, Patience, StorageSpec};
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
    /// Public domain: `<slug>.<domain>` serves a project; a port of 0 (`localhost:0`) is
    /// the bound port.
    #[arg(long, env = "CDEPLOY_DOMAIN", default_value = "localhost:8000")]
    domain: String,
    /// Once listening, the proxy writes its bound address here as JSON
    /// (`{"proxy":"127.0.0.1:8000"}`): with `--listen 127.0.0.1:0` a supervisor or test
    /// learns the port the system chose.
    #[arg(long, env = "CDEPLOY_READY_FILE")]
    ready_file: Option<std::path::PathBuf>,
    /// Storage: a directory, `s3://bucket[/prefix]` (read through the S3 API, so the
    /// bucket stays private), or a public `http(s)://` URL prefix. `BASE_PATH` is the
    /// seed's name for it.
    #[arg(long, env = "CDEPLOY_STORAGE")]
    storage: Option<String>,
    /// Seconds a route pointer is cached; promote/rollback reach this replica within it.
    #[arg(long, env = "CDEPLOY_ROUTE_TTL", default_value_t = 2)]
    route_ttl: u64,
    /// Seconds a loaded manifest is trusted; a deleted deployment stops being served
    /// within this.
    #[arg(long, env = "CDEPLOY_MANIFEST_TTL", default_value_t = 60)]
    manifest_ttl: u64,
    /// Most connections at once [default: the open-file limit less 192, at most 16384].
    /// At the cap the longest-idle connection is closed to admit a new one.
    #[arg(
        long,
        env = "CDEPLOY_MAX_CONNECTIONS",
        default_value_t = 0,
        hide_default_value = true
    )]
    max_connections: usize,
    /// Seconds from accept to a complete request head, and for a later head on the
    /// connection from its first byte (nginx's client_header_timeout).
    #[arg(long, env = "CDEPLOY_HEADER_TIMEOUT", default_value_t = 60)]
    header_timeout: u64,
    /// Seconds a keep-alive connection may idle between requests (nginx's keepalive_timeout).
    #[arg(long, env = "CDEPLOY_IDLE_TIMEOUT", default_value_t = 75)]
    idle_timeout: u64,
    /// Proxies in front of this one that append to `X-Forwarded-For` (an ALB: 1;
    /// CloudFront and an ALB: 2). The visitor's address (wrong preview passwords are
    /// limited per address) is taken that many entries from the right; 0 uses the
    /// connection's peer.
    #[arg(long, env = "CDEPLOY_TRUSTED_PROXIES", default_value_t = 0)]
    trusted_proxies: usize,
    /// The keys the servers seal preview protection records with (a file of base64
    /// keys, one per line; or CDEPLOY_PROTECTION_KEY): the same as the servers'. Needed to
    /// serve protected previews when the servers seal (always with a public bucket URL).
    #[arg(long, env = "CDEPLOY_PROTECTION_KEY_FILE")]
    protection_key_file: Option<std::path::PathBuf>,
    /// Networks sites' proxy rules (`/api/* https://… 200`) may reach besides public
    /// addresses, comma-separated (`10.1.0.0/16,127.0.0.1`). Loopback, private and
    /// link-local addresses are refused unless listed.
    #[arg(long, env = "CDEPLOY_RULES_PROXY_ALLOW", value_delimiter = ',')]
    rules_proxy_allow: Vec<String>,
    /// Threads that serve connections, each accepted connection served start to finish
    /// on one of them (as nginx's worker processes); 0: one per core.
    #[arg(long, env = "CDEPLOY_SERVE_THREADS", default_value_t = 0)]
    serve_threads: usize,
    /// HTTPS address (`0.0.0.0:443`): certificates by SNI from storage, as the servers
    /// get them (custom domains; `*.<domain>`) [default: none].
    #[arg(long, env = "CDEPLOY_TLS_LISTEN")]
    tls_listen: Option<String>,
    /// Server apps' servers run on this proxy when `--runtime-dir` is given (their
    /// bundles fetched from storage, Node.js from the npm registry).
    #[command(flatten)]
    runtime: cdeploy_runtime::RuntimeSettings,
    /// Where Node.js versions for servers are kept [default: <runtime-dir>/toolchains].
    #[arg(long, env = "CDEPLOY_TOOLCHAIN_DIR")]
    toolchain_dir: Option<std::path::PathBuf>,
    /// Where Node.js is fetched from [default: https://registry.npmjs.org].
    #[arg(long, env = "CDEPLOY_NPM_REGISTRY")]
    npm_registry: Option<String>,
    /// Run servers WITHOUT a sandbox when none can be made (only for code you trust).
    #[arg(long, env = "CDEPLOY_UNSAFE_NO_SANDBOX")]
    unsafe_no_sandbox: bool,
}

/// This proxy's runtimes, when `--runtime-dir` is given.
fn runtimes(
    args: &Args,
    storage: &DynStorage,
    keys: Option<std::sync::Arc<cdeploy_core::seal::Keyring>>,
) -> anyhow::Result<Option<cdeploy_runtime::Runtimes>> {
    let Some(dir) = args.runtime.runtime_dir.clone() else {
        return Ok(None);
    };
    let settings = args.runtime.resolve(&dir).map_err(anyhow::Error::msg)?;
    let toolchains = cdeploy_builder::toolchain::Toolchains::new(
        args.toolchain_dir
            .clone()
            .unwrap_or_else(|| dir.join("toolchains")),
        args.npm_registry.clone(),
        None,
    );
    let scope = format!(
        "cdeploy-proxy-{}",
        &cdeploy_core::sha256_hex(dir.display().to_string().as_bytes())[..12]
    );
    let runtimes = settings
        .open(
            storage.clone(),
            toolchains,
            (&scope, args.unsafe_no_sandbox),
        )
        .map_err(anyhow::Error::msg)?;
    // Stored variables marked `runtime`, sealed in storage by the control plane.
    runtimes.set_env_source(std::sync::Arc::new(cdeploy_proxy::StoredEnv {
        storage: storage.clone(),
        keys,
    }));
    Ok(Some(runtimes))
}

/// The proxy's settings from its flags.
fn proxy_config(args: &Args, domain: String) -> anyhow::Result<ProxyConfig> {
    let mut config = ProxyConfig::new(domain);
    config.route_ttl = std::time::Duration::from_secs(args.route_ttl);
    config.manifest_ttl = std::time::Duration::from_secs(args.manifest_ttl);
    config.trusted_proxies = args.trusted_proxies;
    // (A port of 0 is bound later; such a redirect then keeps no port.)
    config.tls_port = args
        .tls_listen
        .as_deref()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .filter(|p| *p != 0);
    config.proxy_allow = cdeploy_proxy::upstream::ProxyAllow::parse(&args.rules_proxy_allow)
        .map_err(|e| anyhow::anyhow!("--rules-proxy-allow: {e}"))?;
    config.protection_keys = cdeploy_core::seal::load(
        args.protection_key_file.as_deref(),
        "--protection-key-file",
        "CDEPLOY_PROTECTION_KEY",
        std::env::var("CDEPLOY_PROTECTION_KEY").ok(),
    )
    .map_err(anyhow::Error::msg)?
    .map(std::sync::Arc::new);
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cdeploy_conn::no_transparent_huge_pages(); // idle memory stays compact
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colors only on a terminal: a log file or a log service gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "cdeploy_proxy=info,cdeploy_conn=info".into()),
        )
        .init();
    let args = Args::parse();
    let location = args
        .storage
        .clone()
        .or_else(|| std::env::var("BASE_PATH").ok())
        .context("no storage: pass --storage DIR|s3://bucket[/prefix]|https://public-bucket-url (or set CDEPLOY_STORAGE / BASE_PATH)")?;
    let spec: StorageSpec = location.parse().map_err(anyhow::Error::msg)?;
    let public_origin = !spec.is_writable();
    let storage: DynStorage = cdeploy_storage::open(&spec, Patience::READER)
        .await
        .map_err(anyhow::Error::msg)?;
    let storage_name = storage.describe();
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let domain = match args.domain.strip_suffix(":0") {
        Some(host) => format!("{host}:{}", addr.port()),
        None => args.domain.clone(),
    };
    let mut config = proxy_config(&args, domain.clone())?;
    config.runtimes = runtimes(&args, &storage, config.protection_keys.clone())?;
    if public_origin && config.protection_keys.is_none() {
        tracing::warn!("this proxy reads a public bucket URL: give the servers and proxies CDEPLOY_PROTECTION_KEY, so preview protection records are sealed (docs/aws.md)");
    }
    let conns = cdeploy_conn::Conns::new(cdeploy_conn::ConnSettings {
        max_connections: args.max_connections,
        header_timeout: std::time::Duration::from_secs(args.header_timeout.max(1)),
        idle_timeout: std::time::Duration::from_secs(args.idle_timeout.max(1)),
    });
    let proxy = Proxy::new(storage, config);
    tracing::info!(%addr, %domain, storage = %storage_name, max_connections = conns.cap(), "proxy listening");
    let tls = match &args.tls_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} for HTTPS"))?,
        ),
        None => None,
    };
    if let Some(path) = &args.ready_file {
        let mut addrs = vec![("proxy", addr)];
        if let Some(l) = &tls {
            addrs.push(("tls", l.local_addr()?));
        }
        cdeploy_conn::write_ready_file(path, &addrs)
            .with_context(|| format!("cannot write the ready file {}", path.display()))?;
    }
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        cdeploy_core::shutdown_signal().await;
        trigger.cancel();
    });
    let workers = cdeploy_conn::Workers::start(args.serve_threads)
        .context("cannot start the serving threads")?;
    if let Some(l) = tls {
        tracing::info!(addr = %l.local_addr()?, "proxy listening for HTTPS");
        tokio::spawn(cdeploy_proxy::run_tls(
            l,
            proxy.clone(),
            conns.clone(),
            shutdown.clone(),
            Some(workers.clone()),
        ));
    }
    cdeploy_proxy::run(listener, proxy, conns, shutdown, Some(workers)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/config.md names every flag of `cdeploy-proxy` and the variable it reads.
    #[test]
    fn the_settings_page_names_every_flag_and_variable() {
        use clap::CommandFactory;
        let docs = include_str!("../../docs/config.md");
        let section = &docs[docs
            .find("`cdeploy-proxy` (flags")
            .expect("the proxy's table")..];
        for arg in Args::command().get_arguments() {
            if let Some(long) = arg.get_long().filter(|l| !["help", "version"].contains(l)) {
                assert!(
                    section.contains(&format!("`--{long}")),
                    "docs/config.md's cdeploy-proxy table does not name --{long}"
                );
            }
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                assert!(
                    section.contains(&format!("`{env}`")),
                    "docs/config.md's cdeploy-proxy table does not name {env}"
                );
            }
        }
    }
}
