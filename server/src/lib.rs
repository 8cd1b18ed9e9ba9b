//! `cdeploy-server`: the control plane. In embedded mode (the default) it also runs the
//! builds, the log fan-out and the proxy, with SQLite and a local storage directory.
//!
//! # Layout
//! The layers only point down: `{api, acme} → service → {dispatch → lifecycle →
//! {statuses, notify}} → config → {db, metrics}` (`tests/layers.rs` fails on an import
//! that points up, on a cycle between files, and on a module missing from these maps).
//! * [`api`] — the HTTP layer: handlers, authentication, authorization, errors, the
//!   builder API and the event stream.
//! * [`acme`] — certificates for custom domains: the loop, the checks, the orders.
//! * [`service`] — the operations behind them, with no HTTP: deployments, uploads,
//!   projects, secrets, git push deploys, protection, GC.
//! * [`dispatch`] — running deployments: the trait, the local dispatcher's bounded
//!   queue, and ECS Fargate tasks with their watchers and reconciler.
//! * [`lifecycle`] — where events update status, production pointer and proxy cache.
//! * [`statuses`] — commit statuses posted to the forges.
//! * [`notify`] — deploy events sent to a project's endpoints, from a durable outbox.
//! * [`config`] — settings: flags > environment > `cdeploy-server.toml` > defaults.
//! * [`db`] — the metadata store, SQLite or Postgres.
//! * [`metrics`] — Prometheus counters.
#![forbid(unsafe_code)]

pub mod acme;
pub mod api;
pub mod config;
pub mod db;
pub mod dispatch;
pub mod lifecycle;
pub mod metrics;
pub mod notify;
pub mod service;
pub mod statuses;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cdeploy_logbus::LogBus;
use cdeploy_proxy::{Proxy, ProxyConfig};
use cdeploy_storage::DynStorage;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Args, Config};
pub use service::App;

use crate::config::DispatcherKind;
use crate::db::Store;
#[cfg(feature = "aws")]
use crate::dispatch::ecs::{EcsDispatcher, EcsSettings};
use crate::dispatch::{Dispatcher, LocalDispatcher};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::service::{gc, limits, protection, secrets};

/// Runs the server on already-bound listeners until `shutdown` fires.
pub async fn run(
    mut config: Config,
    api_listener: TcpListener,
    proxy_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let api_addr = api_listener.local_addr()?;
    let proxy_addr = match &proxy_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    if let (Some(domain), Some(addr)) = (config.domain.strip_suffix(":0"), proxy_addr) {
        config.domain = format!("{domain}:{}", addr.port());
    }
    let tls_listener = bind_tls(&mut config, proxy_listener.is_some()).await?;
    let tls_addr = match &tls_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let (app, proxy) = assemble(
        config.clone(),
        proxy_listener.is_some(),
        api_addr,
        shutdown.clone(),
    )
    .await?;
    let (store, lifecycle, conns) = (app.store.clone(), app.lifecycle.clone(), app.conns.clone());
    acme::store_operator_cert(&app).await?;
    acme::start(app.clone(), shutdown.clone())?;
    if let Some(interval) = config.gc_interval {
        gc::start_periodic(
            store.clone(),
            app.storage.clone(),
            config.retention,
            interval,
            shutdown.clone(),
        );
    }
    let proxy_tasks = spawn_proxy(
        proxy,
        (proxy_listener, tls_listener),
        &config,
        &conns,
        &shutdown,
    )?;
    tracing::info!(addr = %api_addr, data_dir = %config.data_dir.display(), max_connections = conns.cap(), "API listening");
    let router = api::router(app.clone());
    if let Some(path) = &config.ready_file {
        let mut addrs = vec![("api", api_addr)];
        addrs.extend(proxy_addr.map(|p| ("proxy", p)));
        addrs.extend(tls_addr.map(|p| ("tls", p)));
        cdeploy_conn::write_ready_file(path, &addrs)
            .with_context(|| format!("cannot write the ready file {}", path.display()))?;
    }
    cdeploy_conn::serve(
        api_listener,
        conns,
        move |peer| ApiService {
            router: router.clone(),
            peer,
        },
        shutdown.clone(),
    )
    .await?;

    tracing::info!("shutting down: stopping builds");
    lifecycle.shutting_down.store(true, Ordering::SeqCst);
    app.dispatcher.shutdown(Duration::from_secs(15)).await;
    app.dispatcher
        .recover("the server shut down before this deployment finished; deploy again")
        .await;
    for task in proxy_tasks {
        let _ = task.await;
    }
    Ok(())
}

/// The embedded proxy's HTTPS listener (`--tls-listen`), bound before anything names
/// its address (a port of 0 becomes the bound one in `config`).
async fn bind_tls(config: &mut Config, with_proxy: bool) -> anyhow::Result<Option<TcpListener>> {
    match (&config.https.tls_listen, with_proxy) {
        (Some(addr), true) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for HTTPS (--tls-listen)"))?;
            config.https.tls_listen = Some(l.local_addr()?.to_string());
            Ok(Some(l))
        }
        (Some(_), false) => anyhow::bail!("--tls-listen needs the embedded proxy (--proxy-listen)"),
        _ => Ok(None),
    }
}

/// The embedded proxy on its plain and HTTPS listeners.
fn spawn_proxy(
    proxy: Option<Arc<Proxy>>,
    (plain, tls): (Option<TcpListener>, Option<TcpListener>),
    config: &Config,
    conns: &Arc<cdeploy_conn::Conns>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<std::io::Result<()>>>> {
    let Some(proxy) = proxy else {
        return Ok(Vec::new());
    };
    let mut tasks = Vec::new();
    let workers = cdeploy_conn::Workers::start(config.serve_threads)
        .context("cannot start the proxy's serving threads")?;
    if let Some(listener) = plain {
        tracing::info!(addr = %listener.local_addr()?, domain = %config.domain, "proxy listening");
        tasks.push(tokio::spawn(cdeploy_proxy::run(
            listener,
            proxy.clone(),
            conns.clone(),
            shutdown.clone(),
            Some(workers.clone()),
        )));
    }
    if let Some(listener) = tls {
        tracing::info!(addr = %listener.local_addr()?, "proxy listening for HTTPS");
        tasks.push(tokio::spawn(cdeploy_proxy::run_tls(
            listener,
            proxy,
            conns.clone(),
            shutdown.clone(),
            Some(workers),
        )));
    }
    Ok(tasks)
}

/// Everything the server is, before it listens: storage, database, log bus, the
/// embedded proxy (`with_proxy`), the dispatcher (running builds recovered) and the
/// first admin token (`api_addr` is where it says the API is). Tests drive the result
/// through [`api::router`] without a socket.
pub async fn assemble(
    config: Config,
    with_proxy: bool,
    api_addr: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<(Arc<App>, Option<Arc<Proxy>>)> {
    create_data_dir(&config)?;
    // Uploads a crash interrupted (each is a temporary file while it streams in).
    let _ = std::fs::remove_dir_all(config.data_dir.join("tmp"));
    // Settings first, then the services they name.
    let ecs = match config.dispatcher {
        DispatcherKind::Local => None,
        DispatcherKind::Ecs => Some(ecs_settings(&config)?),
    };
    let storage = open_storage(&config).await?;
    let store = open_store(&config).await?;
    let keyring = secrets::Keyring::load_and_rotate(&config.secrets_key, store.as_ref()).await?;
    reseal_protection(&config, &storage).await;
    let bus = open_bus(&config, &storage).await?;
    tracing::info!(
        storage = %storage.describe(),
        database = %redact_url(&config.database),
        bus = %config.bus,
        dispatcher = ?config.dispatcher,
        "backends"
    );
    let (proxy, runtimes) = match with_proxy {
        true => {
            let (proxy, runtimes) = embedded_proxy(&config, &storage)?;
            (Some(proxy), Some(runtimes))
        }
        false => (None, None),
    };
    let lifecycle = Arc::new(Lifecycle {
        store: store.clone(),
        bus,
        proxy: proxy.clone(),
        metrics: Arc::new(Metrics::default()),
        shutting_down: AtomicBool::new(false),
        statuses: statuses::StatusReporter::start(
            config.forges.clone(),
            store.clone(),
            config.domain.clone(),
        ),
        notifier: Some(notify::Notifier::start(
            store.clone(),
            config.notify.clone(),
            config.domain.clone(),
            service::notify::secret_opener(keyring.clone()),
            shutdown.clone(),
        )),
    });
    bootstrap_admin_token(&config, store.as_ref(), api_addr).await?;
    let dispatcher = start_dispatcher(&config, ecs, &lifecycle, &storage, &store).await?;
    // The API and the proxy share this process's descriptors, so one cap covers both.
    let conns = cdeploy_conn::Conns::new(config.connections);
    let app = Arc::new(App {
        config: config.clone(),
        store,
        storage,
        lifecycle,
        dispatcher,
        auth_failures: limits::auth_limiter(),
        token_rates: limits::token_limiter(config.token_rate, config.token_burst),
        batch_memory: Arc::new(tokio::sync::Semaphore::new(limits::BATCH_MEMORY_KIB)),
        conns,
        source_blobs: moka::future::Cache::builder()
            .max_capacity(64)
            .time_to_idle(Duration::from_secs(600))
            .build(),
        shutdown,
        keyring,
        runtimes: runtimes.clone(),
        oidc: Default::default(),
    });
    service::secrets::serve_runtime_env(&app, runtimes.as_ref());
    Ok((app, proxy))
}

/// Storage, checked: a wrong bucket, region or credentials is said now rather than on
/// the first deploy.
async fn open_storage(config: &Config) -> anyhow::Result<DynStorage> {
    let storage: DynStorage =
        cdeploy_storage::open(&config.storage, cdeploy_storage::Patience::WRITER)
            .await
            .map_err(anyhow::Error::msg)?;
    storage
        .check()
        .await
        .with_context(|| format!("storage {}", storage.describe()))?;
    Ok(storage)
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    db::open(&config.database)
        .await
        .with_context(|| format!("cannot open the database {}", redact_url(&config.database)))
}

/// Protection records, certificate keys and the ACME account written before the keys
/// were set (plain), or under a retiring key, sealed with the current one.
async fn reseal_protection(config: &Config, storage: &DynStorage) {
    if let Some(keys) = &config.protection_keys {
        let resealed = protection::reseal_all(storage.as_ref(), keys).await;
        if resealed > 0 {
            tracing::info!(
                resealed,
                key = keys.current_id(),
                "preview protection records sealed with the current key"
            );
        }
        let resealed = acme::reseal::reseal_all(storage.as_ref(), keys).await;
        if resealed > 0 {
            tracing::info!(
                resealed,
                key = keys.current_id(),
                "certificate and ACME account keys sealed with the current key"
            );
        }
    }
}

async fn open_bus(config: &Config, storage: &DynStorage) -> anyhow::Result<Arc<dyn LogBus>> {
    let options = cdeploy_logbus::BusOptions {
        log_dir: config.data_dir.join("logs"),
        limits: config.log_limits,
        redis_ca: std::env::var_os(cdeploy_builder::env::REDIS_CA_CERT)
            .map(std::path::PathBuf::from),
    };
    cdeploy_logbus::open(&config.bus, storage, options)
        .await
        .map_err(|e| match e {
            cdeploy_logbus::spec::OpenError::Client(m) => anyhow::anyhow!("--bus {m}"),
            e => e.into(),
        })
}

#[cfg(feature = "aws")]
fn ecs_settings(config: &Config) -> anyhow::Result<EcsSettings> {
    EcsSettings::from_env(
        |k| std::env::var(k).ok(),
        config.builder_api.as_deref(),
        config.ecs_poll,
        config.ecs_stop_grace,
        config.build_timeout,
    )
}

/// Without the `aws` feature there are no ECS settings (and `config` already refused
/// `--dispatcher ecs` saying so).
#[cfg(not(feature = "aws"))]
enum EcsSettings {}

#[cfg(not(feature = "aws"))]
fn ecs_settings(_: &Config) -> anyhow::Result<EcsSettings> {
    anyhow::bail!(config::NO_AWS_ECS)
}

/// The dispatcher, with the deployments a stopped server left running recovered.
/// Builds run here only in local mode; ECS tasks bring their own isolation.
async fn start_dispatcher(
    config: &Config,
    ecs: Option<EcsSettings>,
    lifecycle: &Arc<Lifecycle>,
    storage: &DynStorage,
    store: &Arc<dyn Store>,
) -> anyhow::Result<Arc<dyn Dispatcher>> {
    let builds = match &ecs {
        None => Some(local_builds(config)?),
        Some(_) => None,
    };
    // Local builds upload through a storage that tells GC what they reference.
    let build_storage: DynStorage = Arc::new(gc::TouchingStorage {
        inner: storage.clone(),
        store: store.clone(),
    });
    let local = LocalDispatcher::start(
        lifecycle.clone(),
        build_storage,
        builds,
        config.concurrency,
        config.queue_size,
    );
    let dispatcher: Arc<dyn Dispatcher> = match ecs {
        None => local,
        #[cfg(feature = "aws")]
        Some(settings) => EcsDispatcher::start(settings, local, lifecycle.clone()).await,
        #[cfg(not(feature = "aws"))]
        Some(none) => match none {},
    };
    dispatcher
        .recover("the server stopped while this deployment was running; deploy again")
        .await;
    Ok(dispatcher)
}

/// The API router as a connection's service (with the peer address for `ConnectInfo`).
#[derive(Clone)]
struct ApiService {
    router: axum::Router,
    peer: SocketAddr,
}

impl cdeploy_conn::ConnService for ApiService {
    type Body = axum::body::Body;
    fn call(
        &self,
        mut req: axum::http::Request<hyper::body::Incoming>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = axum::http::Response<axum::body::Body>> + Send>,
    > {
        use tower::ServiceExt;
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        let router = self.router.clone();
        Box::pin(async move {
            match router.oneshot(req.map(axum::body::Body::new)).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            }
        })
    }
}

/// A database URL safe to log: the password replaced.
fn redact_url(url: &str) -> String {
    cdeploy_core::mask::redact_url(url)
}

/// The data dir holds the database, the admin token, logs and local storage: only this
/// server's user may read it (0700; 0711 when build or cache directories are inside
/// it, so the unprivileged build uid can pass through to them, and list nothing).
fn create_data_dir(config: &Config) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let builds_inside = (config.dispatcher == DispatcherKind::Local
        && (config.build_dir.starts_with(dir) || config.cache_dir.starts_with(dir)))
        || config.runtime.dir.starts_with(dir);
    let mode = if builds_inside { 0o711 } else { 0o700 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))
}

/// The embedded proxy, with the runtimes of server apps it sends requests to.
fn embedded_proxy(
    config: &Config,
    storage: &cdeploy_storage::DynStorage,
) -> anyhow::Result<(Arc<Proxy>, cdeploy_runtime::Runtimes)> {
    let toolchains = cdeploy_builder::toolchain::Toolchains::new(
        config.toolchain_dir.clone(),
        config.npm_registry.clone(),
        Some(config.toolchain_max_mb),
    );
    // Servers run as the unprivileged build uid too: it must pass through every parent
    // of their folders (under /var/lib/cdeploy/<hash> when the data dir's are closed).
    dispatch::create_passable_parents(&config.runtime.dir)?;
    let runtimes = config
        .runtime
        .open(
            storage.clone(),
            toolchains,
            (&scope_of(config), config.unsafe_no_sandbox),
        )
        .map_err(anyhow::Error::msg)?;
    let mut proxy_config = ProxyConfig::new(config.domain.clone());
    proxy_config.runtimes = Some(runtimes.clone());
    proxy_config.trusted_proxies = config.trusted_proxies;
    proxy_config.proxy_allow = config.rules_proxy_allow.clone();
    proxy_config.protection_keys = config.protection_keys.clone();
    proxy_config.tls_port = config
        .https
        .tls_listen
        .as_deref()
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .map(|a| a.port());
    Ok((Proxy::new(storage.clone(), proxy_config), runtimes))
}

/// This server's cgroup scope (unique per data dir).
fn scope_of(config: &Config) -> String {
    format!(
        "cdeploy-{}",
        &cdeploy_core::sha256_hex(config.data_dir.display().to_string().as_bytes())[..12]
    )
}

/// The sandbox and directories of local builds. No sandbox and no explicit opt-out:
/// the server refuses to start, saying why.
fn local_builds(config: &Config) -> anyhow::Result<dispatch::LocalBuilds> {
    use cdeploy_builder::sandbox::{Options, Sandbox};
    let scope = scope_of(config);
    let opts = Options {
        unsandboxed: config.unsafe_no_sandbox,
        build_uid: config.build_uid,
        limits: config.build_limits,
        scope,
        probe_dir: config.build_dir.join(".probe"),
        host_ports: config.build_host_ports.clone(),
    };
    dispatch::prepare_dirs(&config.build_dir, &config.cache_dir, &config.toolchain_dir)?;
    let sandbox = Sandbox::new(&opts).map_err(|e| {
        anyhow::anyhow!(
            "cannot run builds safely: {e}.\nBuilds run untrusted code and need a sandbox (bubblewrap and passt, with user namespaces). \
             Install them (./install.sh does), or pass --unsafe-no-sandbox to build WITHOUT isolation (only for code you trust)"
        )
    })?;
    if sandbox.is_isolated() {
        tracing::info!(sandbox = %sandbox.describe(), "builds are sandboxed");
    } else {
        tracing::warn!(sandbox = %sandbox.describe(), "--unsafe-no-sandbox: builds run WITHOUT isolation and can read and change what this server can");
    }
    let path = sandbox.build_path(
        &std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
    );
    Ok(dispatch::LocalBuilds {
        sandbox,
        build_dir: config.build_dir.clone(),
        cache_dir: config.cache_dir.clone(),
        toolchains: cdeploy_builder::toolchain::Toolchains::new(
            config.toolchain_dir.clone(),
            config.npm_registry.clone(),
            Some(config.toolchain_max_mb),
        ),
        path,
        max_files: config.max_files,
        max_bytes: config.max_deployment_bytes,
    })
}

/// On first start: create the admin token, store its hash, write it to
/// `<data-dir>/admin-token` (0600) and to the local CLI's credentials for this URL.
async fn bootstrap_admin_token(
    config: &Config,
    store: &dyn Store,
    api_addr: SocketAddr,
) -> anyhow::Result<()> {
    if store.token_count().await? > 0 {
        return Ok(());
    }
    let token = cdeploy_core::ids::generate_token();
    store
        .insert_token(&db::TokenRow::new(
            &cdeploy_core::ids::token_hash(&token),
            "admin",
            cdeploy_core::api::Role::Admin,
            Vec::new(),
            None,
        ))
        .await?;
    let file = config.data_dir.join("admin-token");
    cdeploy_core::credentials::write_private(&file, format!("{token}\n").as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))?;
    let host = if api_addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        api_addr.ip().to_string()
    };
    let url = format!("http://{host}:{}", api_addr.port());
    match cdeploy_core::credentials::Credentials::save_token(&url, &token) {
        Ok(path) => {
            tracing::info!(file = %file.display(), credentials = %path.display(), "created the admin token")
        }
        Err(e) => {
            tracing::warn!(error = %e, file = %file.display(), "created the admin token but could not save CLI credentials")
        }
    }
    Ok(())
}

/// `cdeploy-server gc [--dry-run]`: one run against the configured database and storage.
pub async fn gc_once(config: &Config, dry_run: bool) -> anyhow::Result<gc::Report> {
    let storage: DynStorage =
        cdeploy_storage::open(&config.storage, cdeploy_storage::Patience::WRITER)
            .await
            .map_err(anyhow::Error::msg)?;
    let store = open_store(config).await?;
    gc::run(store.as_ref(), &storage, config.retention, dry_run).await
}

/// `cdeploy-server metrics-token`: a token scoped to `/metrics`.
pub async fn create_metrics_token(config: &Config, name: &str) -> anyhow::Result<String> {
    let store = open_store(config).await?;
    let token = cdeploy_core::ids::generate_token();
    store
        .insert_token(&db::TokenRow::new(
            &cdeploy_core::ids::token_hash(&token),
            name,
            cdeploy_core::api::Role::Metrics,
            Vec::new(),
            None,
        ))
        .await?;
    Ok(token)
}
