//! Server settings: flags > environment > `cdeploy-server.toml` > defaults, resolved here
//! once. Environment variable names are listed on each flag.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;

#[derive(Parser, Debug, Default)]
#[command(
    name = "cdeploy-server",
    version,
    about = "cdeploy control plane (embedded mode runs everything in one process)"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings file (TOML, same keys as the long flags with '_' for '-').
    #[arg(long, env = "CDEPLOY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory [default: $XDG_DATA_HOME/cdeploy].
    #[arg(long, env = "CDEPLOY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// API address [default: 127.0.0.1:9000].
    #[arg(long, env = "CDEPLOY_LISTEN")]
    pub listen: Option<String>,
    /// Embedded proxy address, or `none` [default: 127.0.0.1:8000].
    #[arg(long, env = "CDEPLOY_PROXY_LISTEN")]
    pub proxy_listen: Option<String>,
    /// Public domain of sites: `<slug>.<domain>` [default: localhost:8000].
    #[arg(long, env = "CDEPLOY_DOMAIN")]
    pub domain: Option<String>,
    /// Storage: a directory or `s3://bucket[/prefix]` [default: <data-dir>/storage, or
    /// s3://$S3_BUCKET_NAME when that is set].
    #[arg(long, env = "CDEPLOY_STORAGE")]
    pub storage: Option<String>,
    /// Log bus: `memory`, `redis://…`/`rediss://…`, or `redis` for the REDIS_URL /
    /// REDIS_HOST, REDIS_PORT, REDIS_USERNAME, REDIS_PASSWORD variables [default: redis
    /// when those are set, else memory].
    #[arg(long, env = "CDEPLOY_BUS")]
    pub bus: Option<String>,
    /// Build dispatcher: `local` (builds in this process) or `ecs` (ECS Fargate tasks;
    /// needs S3 storage and the Redis bus) [default: local].
    #[arg(long, env = "CDEPLOY_DISPATCHER")]
    pub dispatcher: Option<String>,
    /// Metadata database: `sqlite://PATH` or `postgres://…` [default: SQLite in the data dir].
    #[arg(long, env = "CDEPLOY_DATABASE")]
    pub database: Option<String>,
    /// ECS: the URL build tasks reach this API at (a load balancer in front of the
    /// replicas, or several URLs, comma-separated). Required with --dispatcher ecs.
    #[arg(long, env = "CDEPLOY_BUILDER_API")]
    pub builder_api: Option<String>,
    /// ECS: seconds between checks of a running build task [default: 5].
    #[arg(long, env = "CDEPLOY_ECS_POLL_SECS")]
    pub ecs_poll_secs: Option<u64>,
    /// ECS: seconds to wait for a stopped task's final log event before the deployment
    /// is marked failed with the task's stop reason [default: 15].
    #[arg(long, env = "CDEPLOY_ECS_STOP_GRACE_SECS")]
    pub ecs_stop_grace_secs: Option<u64>,
    /// Builds that run at once [default: number of CPUs, at most 4].
    #[arg(long, env = "CDEPLOY_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Deployments that may wait for a build slot before new ones get 429 [default: 64].
    #[arg(long, env = "CDEPLOY_QUEUE_SIZE")]
    pub queue_size: Option<usize>,
    /// Build timeout in seconds [default: 900].
    #[arg(long, env = "CDEPLOY_BUILD_TIMEOUT")]
    pub build_timeout: Option<u64>,
    /// Build caches: each project's package-manager cache and kept node_modules
    /// [default: <data-dir>/cache]. Must be on the same filesystem as --build-dir.
    #[arg(long, env = "CDEPLOY_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Node.js and package managers fetched for builds, by version, shared by all
    /// projects and read-only to builds [default: <cache-dir>/toolchains].
    #[arg(long, env = "CDEPLOY_TOOLCHAIN_DIR")]
    pub toolchain_dir: Option<PathBuf>,
    /// The toolchain directory's size cap in MiB: past it, the least recently used
    /// versions no running build holds are removed [default: 10240].
    #[arg(long, env = "CDEPLOY_TOOLCHAIN_MAX_MB")]
    pub toolchain_max_mb: Option<u64>,
    /// The npm registry Node.js and package managers are fetched from (a mirror for
    /// hosts without the internet) [default: https://registry.npmjs.org].
    #[arg(long, env = "CDEPLOY_NPM_REGISTRY")]
    pub npm_registry: Option<String>,
    /// Where builds' work directories are made [default: <data-dir>/builds]. With a
    /// server running as root, every parent must be traversable (o+x) by --build-uid.
    #[arg(long, env = "CDEPLOY_BUILD_DIR")]
    pub build_dir: Option<PathBuf>,
    /// Run builds WITHOUT a sandbox when none can be made (no bubblewrap/pasta, no user
    /// namespaces). Every build then logs a warning: only for code you trust.
    #[arg(long, env = "CDEPLOY_UNSAFE_NO_SANDBOX")]
    pub unsafe_no_sandbox: bool,
    /// The unprivileged uid (and gid) builds run as when the server runs as root; it
    /// must own no file of the platform [default: 64000].
    #[arg(long, env = "CDEPLOY_BUILD_UID")]
    pub build_uid: Option<u32>,
    /// Memory limit of one build, in MiB [default: 4096].
    #[arg(long, env = "CDEPLOY_BUILD_MEMORY_MB")]
    pub build_memory_mb: Option<u64>,
    /// TCP ports of this host's loopback that builds may reach, comma-separated (a
    /// local git server or registry mirror) [default: none].
    #[arg(long, env = "CDEPLOY_BUILD_HOST_PORTS")]
    pub build_host_ports: Option<String>,
    /// Processes and threads one build may have at once [default: 1024].
    #[arg(long, env = "CDEPLOY_BUILD_PIDS")]
    pub build_pids: Option<u64>,
    /// Disk one build may use (checkout, HOME, /tmp and its project cache), in MiB
    /// [default: 10240].
    #[arg(long, env = "CDEPLOY_BUILD_DISK_MB")]
    pub build_disk_mb: Option<u64>,
    /// Largest single file accepted by PUT /v1/files, in MiB [default: 100].
    #[arg(long, env = "CDEPLOY_MAX_FILE_MB")]
    pub max_file_mb: Option<u64>,
    /// Summed size of one deployment's files in MiB, a file counted once per path it
    /// is served at (source uploads, prebuilt uploads and build output) [default: 1024].
    #[arg(long, env = "CDEPLOY_MAX_DEPLOYMENT_MB")]
    pub max_deployment_mb: Option<u64>,
    /// Most files in one deployment [default: 100000].
    #[arg(long, env = "CDEPLOY_MAX_FILES")]
    pub max_files: Option<usize>,
    /// API requests per second one token may make, sustained [default: 100].
    #[arg(long, env = "CDEPLOY_TOKEN_RATE")]
    pub token_rate: Option<u32>,
    /// API requests one token may make in a burst above the rate [default: 2000].
    #[arg(long, env = "CDEPLOY_TOKEN_BURST")]
    pub token_burst: Option<u32>,
    /// Retention: deployments kept per project, newest first (production, running and
    /// recent ones are kept too) [default: 20].
    #[arg(long, env = "CDEPLOY_KEEP_DEPLOYMENTS")]
    pub keep_deployments: Option<usize>,
    /// Retention: deployments younger than this many days are kept [default: 30].
    #[arg(long, env = "CDEPLOY_KEEP_DAYS")]
    pub keep_days: Option<u64>,
    /// Retention: days the audit log keeps an entry, 1 to 3650 [default: 365].
    #[arg(long, env = "CDEPLOY_AUDIT_DAYS")]
    pub audit_days: Option<u64>,
    /// Garbage collection: minutes between runs, 0 for none [default: 60].
    #[arg(long, env = "CDEPLOY_GC_INTERVAL_MINS")]
    pub gc_interval_mins: Option<u64>,
    /// Garbage collection: unreferenced blobs younger than this, or checked by an
    /// upload within it, are kept (seconds) [default: 3600].
    #[arg(long, env = "CDEPLOY_GC_GRACE_SECS")]
    pub gc_grace_secs: Option<u64>,
    /// Most log lines (events) one deployment keeps; later output is dropped after a
    /// `[log truncated]` notice [default: 100000].
    #[arg(long, env = "CDEPLOY_MAX_LOG_LINES")]
    pub max_log_lines: Option<u64>,
    /// Most log bytes one deployment keeps, in MiB [default: 16].
    #[arg(long, env = "CDEPLOY_MAX_LOG_MB")]
    pub max_log_mb: Option<u64>,
    /// Most connections at once, API and proxy together [default: the open-file limit
    /// less 128, at most 16384]. At the cap the longest-idle connection is closed.
    #[arg(long, env = "CDEPLOY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds from accept to a complete request head [default: 60, as nginx].
    #[arg(long, env = "CDEPLOY_HEADER_TIMEOUT")]
    pub header_timeout: Option<u64>,
    /// Seconds a keep-alive connection may idle between requests [default: 75, as nginx].
    #[arg(long, env = "CDEPLOY_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,
    /// Proxies in front of the embedded proxy that append to X-Forwarded-For (a load
    /// balancer: 1); wrong preview passwords are limited per visitor address, taken that
    /// many entries from the right [default: 0, the connection's peer].
    #[arg(long, env = "CDEPLOY_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<usize>,
    /// The keys stored secrets are sealed with: a file of base64 keys, one per line, the
    /// first sealing (docs/secrets.md). The keys may instead be given in
    /// CDEPLOY_SECRETS_KEY (never on the command line) [default: with SQLite,
    /// <data-dir>/secrets.key, made on first start; with Postgres, none: no secrets].
    #[arg(long, env = "CDEPLOY_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// The keys preview protection records are sealed with, shared with every
    /// `cdeploy-proxy` (a file of base64 keys, one per line, the first sealing; or
    /// CDEPLOY_PROTECTION_KEY). Needed when proxies read a public bucket URL: sealed, the
    /// records give away neither the cookie key nor the password hash [default: none;
    /// records are plain, for storage only the servers and proxies read].
    #[arg(long, env = "CDEPLOY_PROTECTION_KEY_FILE")]
    pub protection_key_file: Option<PathBuf>,
    /// Commit statuses: GitHub's API (with CDEPLOY_GITHUB_TOKEN set) [default:
    /// https://api.github.com].
    #[arg(long, env = "CDEPLOY_GITHUB_API")]
    pub github_api: Option<String>,
    /// Commit statuses: GitLab's API (with CDEPLOY_GITLAB_TOKEN set) [default:
    /// https://gitlab.com/api/v4].
    #[arg(long, env = "CDEPLOY_GITLAB_API")]
    pub gitlab_api: Option<String>,
    /// Commit statuses: a Gitea or Forgejo API, e.g. https://git.example.com/api/v1
    /// (with CDEPLOY_GITEA_TOKEN set).
    #[arg(long, env = "CDEPLOY_GITEA_API")]
    pub gitea_api: Option<String>,
}

/// One-off tasks on the same settings (run beside a live server, or alone).
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Deletes deployments past the retention policy, then blobs nothing references
    /// (safe while servers run and deploy).
    Gc {
        /// Report what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Creates a token that can read /metrics and nothing else, and prints it.
    MetricsToken {
        /// A name to recognize it by.
        #[arg(long, default_value = "metrics")]
        name: String,
    },
}

/// The file form of [`Args`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    proxy_listen: Option<String>,
    domain: Option<String>,
    storage: Option<String>,
    bus: Option<String>,
    dispatcher: Option<String>,
    database: Option<String>,
    builder_api: Option<String>,
    ecs_poll_secs: Option<u64>,
    ecs_stop_grace_secs: Option<u64>,
    concurrency: Option<usize>,
    queue_size: Option<usize>,
    build_timeout: Option<u64>,
    cache_dir: Option<PathBuf>,
    toolchain_dir: Option<PathBuf>,
    toolchain_max_mb: Option<u64>,
    npm_registry: Option<String>,
    build_dir: Option<PathBuf>,
    unsafe_no_sandbox: Option<bool>,
    build_uid: Option<u32>,
    build_memory_mb: Option<u64>,
    build_pids: Option<u64>,
    build_disk_mb: Option<u64>,
    build_host_ports: Option<String>,
    max_file_mb: Option<u64>,
    max_deployment_mb: Option<u64>,
    max_files: Option<usize>,
    keep_deployments: Option<usize>,
    audit_days: Option<u64>,
    keep_days: Option<u64>,
    gc_interval_mins: Option<u64>,
    gc_grace_secs: Option<u64>,
    token_rate: Option<u32>,
    token_burst: Option<u32>,
    max_log_lines: Option<u64>,
    max_log_mb: Option<u64>,
    max_connections: Option<usize>,
    header_timeout: Option<u64>,
    idle_timeout: Option<u64>,
    trusted_proxies: Option<usize>,
    secrets_key_file: Option<PathBuf>,
    protection_key_file: Option<PathBuf>,
    github_api: Option<String>,
    gitlab_api: Option<String>,
    gitea_api: Option<String>,
}

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: String,
    pub proxy_listen: Option<String>,
    pub domain: String,
    pub storage: String,
    pub database: String,
    /// `memory`, or a Redis URL.
    pub bus: String,
    pub dispatcher: DispatcherKind,
    pub builder_api: Option<String>,
    pub ecs_poll: Duration,
    pub ecs_stop_grace: Duration,
    pub concurrency: usize,
    pub queue_size: usize,
    pub build_timeout: Duration,
    pub cache_dir: PathBuf,
    pub toolchain_dir: PathBuf,
    pub toolchain_max_mb: u64,
    pub npm_registry: Option<String>,
    pub build_dir: PathBuf,
    pub unsafe_no_sandbox: bool,
    pub build_uid: u32,
    pub build_limits: cdeploy_builder::sandbox::Limits,
    pub build_host_ports: Vec<u16>,
    pub max_file_bytes: usize,
    pub connections: cdeploy_proxy::conn::ConnSettings,
    /// Proxies in front of the embedded proxy (its `ProxyConfig::trusted_proxies`).
    pub trusted_proxies: usize,
    pub log_limits: crate::bus::LogLimits,
    pub max_deployment_bytes: u64,
    pub max_files: usize,
    pub retention: Retention,
    /// Between periodic GC runs (`None`: never).
    pub gc_interval: Option<Duration>,
    pub token_rate: std::num::NonZeroU32,
    pub token_burst: std::num::NonZeroU32,
    /// Where the stored secrets' keys come from.
    pub secrets_key: KeySource,
    /// Seals preview protection records (shared with the proxies); `None`: plain.
    pub protection_keys: Option<std::sync::Arc<cdeploy_core::seal::Keyring>>,
    /// The forges commit statuses are posted to.
    pub forges: ForgeSettings,
}

impl Config {
    pub fn resolve(args: Args) -> anyhow::Result<Config> {
        let file: FileSettings = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                toml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?
            }
            None => FileSettings::default(),
        };
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(default_data_dir);
        let env = |k: &str| std::env::var(k).ok();
        let bus = match args.bus.or(file.bus) {
            Some(b) if b == "memory" => b,
            Some(b) if b == "redis" => cdeploy_core::logstream::url_from_env(env)
                .context("--bus redis: set REDIS_URL or REDIS_HOST (with REDIS_PORT, REDIS_USERNAME, REDIS_PASSWORD)")?
                .map_err(anyhow::Error::msg)?,
            Some(b) if b.starts_with("redis://") || b.starts_with("rediss://") => b,
            Some(b) => anyhow::bail!(
                "--bus {}: expected `memory`, `redis`, or a redis:// or rediss:// URL",
                cdeploy_core::logstream::redact(&b)
            ),
            None => match cdeploy_core::logstream::url_from_env(env) {
                Some(url) => url.map_err(anyhow::Error::msg)?,
                None => "memory".into(),
            },
        };
        let dispatcher = match args
            .dispatcher
            .or(file.dispatcher)
            .as_deref()
            .unwrap_or("local")
        {
            "local" => DispatcherKind::Local,
            "ecs" => DispatcherKind::Ecs,
            other => anyhow::bail!("--dispatcher {other}: expected `local` or `ecs`"),
        };
        let storage = match args.storage.or(file.storage) {
            Some(s) => s,
            None => match env("S3_BUCKET_NAME").filter(|b| !b.is_empty()) {
                Some(bucket) => format!("s3://{bucket}"),
                None => data_dir.join("storage").display().to_string(),
            },
        };
        if storage.starts_with("s3://") {
            cdeploy_core::s3::parse_url(&storage).map_err(|e| anyhow::anyhow!("--storage {e}"))?;
        } else if storage.contains("://") {
            anyhow::bail!("--storage {storage}: expected a directory or s3://bucket[/prefix]");
        }
        let database = args
            .database
            .or(file.database)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("cdeploy.db").display()));
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|p| database.starts_with(p))
        {
            anyhow::bail!("--database: expected sqlite://PATH or postgres://…");
        }
        if dispatcher == DispatcherKind::Ecs {
            if !storage.starts_with("s3://") {
                anyhow::bail!("--dispatcher ecs needs --storage s3://…: build tasks cannot reach this machine's disk");
            }
            if bus == "memory" {
                anyhow::bail!("--dispatcher ecs needs the Redis log bus (--bus redis://…): build tasks send their logs through it");
            }
        }
        let proxy_listen = args
            .proxy_listen
            .or(file.proxy_listen)
            .unwrap_or_else(|| "127.0.0.1:8000".into());
        let defaults = cdeploy_builder::sandbox::Limits::default();
        let mb = |flag: &str, v: Option<u64>, default: u64| -> anyhow::Result<u64> {
            match v {
                Some(0) => anyhow::bail!("--{flag} must be greater than 0"),
                Some(n) => Ok(n),
                None => Ok(default),
            }
        };
        let build_limits = cdeploy_builder::sandbox::Limits {
            memory_bytes: mb(
                "build-memory-mb",
                args.build_memory_mb.or(file.build_memory_mb),
                defaults.memory_bytes >> 20,
            )? << 20,
            pids: mb(
                "build-pids",
                args.build_pids.or(file.build_pids),
                defaults.pids,
            )?,
            disk_bytes: mb(
                "build-disk-mb",
                args.build_disk_mb.or(file.build_disk_mb),
                defaults.disk_bytes >> 20,
            )? << 20,
        };
        let build_host_ports = match args.build_host_ports.or(file.build_host_ports) {
            Some(list) => cdeploy_builder::env::parse_ports(&list)
                .map_err(|e| anyhow::anyhow!("--build-host-ports: {e}"))?,
            None => Vec::new(),
        };
        let build_uid = args.build_uid.or(file.build_uid).unwrap_or(64000);
        if build_uid == 0 {
            anyhow::bail!("--build-uid must not be 0: builds never run as root");
        }
        let secrets_key = match args.secrets_key_file.or(file.secrets_key_file) {
            Some(path) => KeySource::File(path),
            None => match env("CDEPLOY_SECRETS_KEY").filter(|k| !k.trim().is_empty()) {
                Some(keys) => KeySource::Env(keys),
                // One machine: a key of its own. Servers sharing Postgres would each make
                // a different one, so they get none unless the operator gives one.
                None if database.starts_with("sqlite:") => {
                    KeySource::Generated(data_dir.join("secrets.key"))
                }
                None => KeySource::None,
            },
        };
        let protection_keys =
            protection_keys(args.protection_key_file.or(file.protection_key_file), env)?;
        // Forge tokens come from the environment only (a flag would show in `ps`).
        let forge = |name: &str,
                     api: Option<String>,
                     default: Option<&str>|
         -> anyhow::Result<Option<ForgeApi>> {
            let token = env(&format!("CDEPLOY_{}_TOKEN", name.to_uppercase()))
                .filter(|t| !t.trim().is_empty());
            let Some(token) = token else {
                return Ok(None);
            };
            let base = match api.or(default.map(String::from)) {
                Some(b) => b,
                None => anyhow::bail!(
                    "CDEPLOY_{}_TOKEN is set: give the forge's API URL with --{name}-api too",
                    name.to_uppercase()
                ),
            };
            if !(base.starts_with("https://") || base.starts_with("http://")) {
                anyhow::bail!("--{name}-api {base}: expected an http(s) URL");
            }
            Ok(Some(ForgeApi {
                base,
                token: token.trim().to_string(),
            }))
        };
        let forges = ForgeSettings {
            github: forge(
                "github",
                args.github_api.or(file.github_api),
                Some("https://api.github.com"),
            )?,
            gitlab: forge(
                "gitlab",
                args.gitlab_api.or(file.gitlab_api),
                Some("https://gitlab.com/api/v4"),
            )?,
            gitea: forge("gitea", args.gitea_api.or(file.gitea_api), None)?,
        };
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Ok(Config {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:9000".into()),
            proxy_listen: (proxy_listen != "none").then_some(proxy_listen),
            domain: args
                .domain
                .or(file.domain)
                .unwrap_or_else(|| "localhost:8000".into()),
            storage,
            database,
            bus,
            dispatcher,
            builder_api: args.builder_api.or(file.builder_api),
            ecs_poll: Duration::from_secs(
                args.ecs_poll_secs
                    .or(file.ecs_poll_secs)
                    .unwrap_or(5)
                    .max(1),
            ),
            ecs_stop_grace: Duration::from_secs(
                args.ecs_stop_grace_secs
                    .or(file.ecs_stop_grace_secs)
                    .unwrap_or(15),
            ),
            concurrency: args
                .concurrency
                .or(file.concurrency)
                .unwrap_or(cpus.min(4))
                .max(1),
            queue_size: args.queue_size.or(file.queue_size).unwrap_or(64).max(1),
            build_timeout: Duration::from_secs(
                args.build_timeout
                    .or(file.build_timeout)
                    .unwrap_or(900)
                    .max(1),
            ),
            toolchain_dir: args
                .toolchain_dir
                .or(file.toolchain_dir)
                .unwrap_or_else(|| {
                    args.cache_dir
                        .clone()
                        .or(file.cache_dir.clone())
                        .unwrap_or_else(|| build_root(&data_dir).join("cache"))
                        .join("toolchains")
                }),
            toolchain_max_mb: args
                .toolchain_max_mb
                .or(file.toolchain_max_mb)
                .unwrap_or(cdeploy_builder::toolchain::DEFAULT_MAX_MB),
            npm_registry: args.npm_registry.or(file.npm_registry),
            cache_dir: args
                .cache_dir
                .or(file.cache_dir)
                .unwrap_or_else(|| build_root(&data_dir).join("cache")),
            build_dir: args
                .build_dir
                .or(file.build_dir)
                .unwrap_or_else(|| build_root(&data_dir).join("builds")),
            unsafe_no_sandbox: args.unsafe_no_sandbox || file.unsafe_no_sandbox.unwrap_or(false),
            build_uid,
            build_limits,
            build_host_ports,
            max_file_bytes: (args.max_file_mb.or(file.max_file_mb).unwrap_or(100) as usize)
                * 1024
                * 1024,
            retention: Retention {
                keep_deployments: args
                    .keep_deployments
                    .or(file.keep_deployments)
                    .unwrap_or(20),
                keep_for: Duration::from_secs(
                    args.keep_days.or(file.keep_days).unwrap_or(30) * 24 * 3600,
                ),
                grace: Duration::from_secs(
                    args.gc_grace_secs.or(file.gc_grace_secs).unwrap_or(3600),
                ),
                audit_for: match args.audit_days.or(file.audit_days).unwrap_or(365) {
                    days @ 1..=3650 => Duration::from_secs(days * 86_400),
                    other => anyhow::bail!("audit-days: 1 to 3650, not {other}"),
                },
            },
            gc_interval: match args
                .gc_interval_mins
                .or(file.gc_interval_mins)
                .unwrap_or(60)
            {
                0 => None,
                m => Some(Duration::from_secs(m * 60)),
            },
            max_deployment_bytes: mb(
                "max-deployment-mb",
                args.max_deployment_mb.or(file.max_deployment_mb),
                1024,
            )? << 20,
            max_files: mb(
                "max-files",
                args.max_files.or(file.max_files).map(|n| n as u64),
                100_000,
            )? as usize,
            token_rate: std::num::NonZeroU32::new(
                args.token_rate.or(file.token_rate).unwrap_or(100),
            )
            .context("--token-rate must be greater than 0")?,
            token_burst: std::num::NonZeroU32::new(
                args.token_burst.or(file.token_burst).unwrap_or(2000),
            )
            .context("--token-burst must be greater than 0")?,
            secrets_key,
            protection_keys,
            forges,
            log_limits: crate::bus::LogLimits {
                max_events: mb(
                    "max-log-lines",
                    args.max_log_lines.or(file.max_log_lines),
                    crate::bus::LogLimits::default().max_events,
                )?,
                max_bytes: mb(
                    "max-log-mb",
                    args.max_log_mb.or(file.max_log_mb),
                    crate::bus::LogLimits::default().max_bytes >> 20,
                )? << 20,
            },
            connections: cdeploy_proxy::conn::ConnSettings {
                max_connections: args.max_connections.or(file.max_connections).unwrap_or(0),
                header_timeout: Duration::from_secs(
                    args.header_timeout
                        .or(file.header_timeout)
                        .unwrap_or(60)
                        .max(1),
                ),
                idle_timeout: Duration::from_secs(
                    args.idle_timeout.or(file.idle_timeout).unwrap_or(75).max(1),
                ),
            },
            trusted_proxies: args.trusted_proxies.or(file.trusted_proxies).unwrap_or(0),
            data_dir,
        })
    }
}

/// Where builds run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatcherKind {
    /// Tasks of this process (embedded mode).
    Local,
    /// AWS ECS Fargate tasks.
    Ecs,
}

/// Where build and cache directories go by default: in the data dir, unless the server
/// runs as root and a parent of the data dir is closed to other users (`/root/...`):
/// builds run as an unprivileged uid that must pass through every parent, so they go
/// to `/var/lib/cdeploy/<hash of the data dir>` instead, and the data dir stays closed.
/// The protection keyring: the file, else `CDEPLOY_PROTECTION_KEY`, else none.
fn protection_keys(
    file: Option<PathBuf>,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<std::sync::Arc<cdeploy_core::seal::Keyring>>> {
    cdeploy_core::seal::load(
        file.as_deref(),
        "--protection-key-file",
        "CDEPLOY_PROTECTION_KEY",
        env("CDEPLOY_PROTECTION_KEY"),
    )
    .map(|k| k.map(std::sync::Arc::new))
    .map_err(anyhow::Error::msg)
}

fn build_root(data_dir: &std::path::Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions.
    if !rustix::process::geteuid().is_root() {
        return data_dir.to_path_buf();
    }
    let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let closed = absolute
        .ancestors()
        .skip(1)
        .any(|p| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 == 0));
    if !closed {
        return data_dir.to_path_buf();
    }
    let hash = cdeploy_core::sha256_hex(absolute.display().to_string().as_bytes());
    PathBuf::from("/var/lib/cdeploy").join(&hash[..12])
}

fn default_data_dir() -> PathBuf {
    cdeploy_core::default_data_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/config.md names every flag of `cdeploy-server` and the variable it reads.
    #[test]
    fn the_settings_page_names_every_flag_and_variable() {
        use clap::CommandFactory;
        let docs = include_str!("../../docs/config.md");
        for arg in Args::command().get_arguments() {
            if let Some(long) = arg.get_long().filter(|l| !["help", "version"].contains(l)) {
                assert!(
                    docs.contains(&format!("`--{long}")),
                    "docs/config.md does not name --{long}"
                );
            }
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                assert!(
                    docs.contains(&format!("`{env}`")),
                    "docs/config.md does not name {env}"
                );
            }
        }
    }
}

// ------------------------------------------------ settings other modules read

/// Where the keyring comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `--secrets-key-file`: the operator's file.
    File(PathBuf),
    /// `CDEPLOY_SECRETS_KEY`: the keys themselves.
    Env(String),
    /// One machine (SQLite): a key made on first start, beside the database.
    Generated(PathBuf),
    /// Several servers share a database, and none was given: no secrets.
    None,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "File({})", p.display()),
            KeySource::Env(_) => f.write_str("Env(<redacted>)"),
            KeySource::Generated(p) => write!(f, "Generated({})", p.display()),
            KeySource::None => f.write_str("None"),
        }
    }
}

/// A forge's API, and the token statuses are posted with.
#[derive(Clone, PartialEq, Eq)]
pub struct ForgeApi {
    /// e.g. `https://api.github.com`, `https://gitlab.com/api/v4`,
    /// `https://gitea.example.com/api/v1`.
    pub base: String,
    pub token: String,
}

impl std::fmt::Debug for ForgeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgeApi")
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The forges this server reports to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForgeSettings {
    pub github: Option<ForgeApi>,
    pub gitlab: Option<ForgeApi>,
    pub gitea: Option<ForgeApi>,
}

impl ForgeSettings {
    pub fn api(&self, forge: &str) -> Option<&ForgeApi> {
        match forge {
            "github" => self.github.as_ref(),
            "gitlab" => self.gitlab.as_ref(),
            "gitea" => self.gitea.as_ref(),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.github.is_none() && self.gitlab.is_none() && self.gitea.is_none()
    }
}

/// How long the audit log keeps an entry.
pub const AUDIT_KEEP: Duration = Duration::from_secs(365 * 86_400);

/// What to keep.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub keep_deployments: usize,
    pub keep_for: Duration,
    /// Unreferenced blobs younger than this (or touched within it) stay.
    pub grace: Duration,
    /// How long the audit log keeps an entry.
    pub audit_for: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_deployments: 20,
            keep_for: Duration::from_secs(30 * 24 * 3600),
            grace: Duration::from_secs(3600),
            audit_for: AUDIT_KEEP,
        }
    }
}
