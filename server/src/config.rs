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
    /// Storage: a directory [default: <data-dir>/storage].
    #[arg(long, env = "CDEPLOY_STORAGE")]
    pub storage: Option<String>,
    /// Log bus: `memory` [default: memory].
    #[arg(long, env = "CDEPLOY_BUS")]
    pub bus: Option<String>,
    /// Build dispatcher: `local` [default: local].
    #[arg(long, env = "CDEPLOY_DISPATCHER")]
    pub dispatcher: Option<String>,
    /// Metadata database: `sqlite://PATH` [default: SQLite in the data dir].
    #[arg(long, env = "CDEPLOY_DATABASE")]
    pub database: Option<String>,
    /// Builds that run at once [default: number of CPUs, at most 4].
    #[arg(long, env = "CDEPLOY_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Deployments that may wait for a build slot before new ones get 429 [default: 64].
    #[arg(long, env = "CDEPLOY_QUEUE_SIZE")]
    pub queue_size: Option<usize>,
    /// Build timeout in seconds [default: 900].
    #[arg(long, env = "CDEPLOY_BUILD_TIMEOUT")]
    pub build_timeout: Option<u64>,
    /// Package-manager cache shared by builds [default: <data-dir>/cache].
    #[arg(long, env = "CDEPLOY_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Largest single file accepted by PUT /v1/files, in MiB [default: 100].
    #[arg(long, env = "CDEPLOY_MAX_FILE_MB")]
    pub max_file_mb: Option<u64>,
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
    concurrency: Option<usize>,
    queue_size: Option<usize>,
    build_timeout: Option<u64>,
    cache_dir: Option<PathBuf>,
    max_file_mb: Option<u64>,
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
    pub concurrency: usize,
    pub queue_size: usize,
    pub build_timeout: Duration,
    pub cache_dir: PathBuf,
    pub max_file_bytes: usize,
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
        let bus = args.bus.or(file.bus).unwrap_or_else(|| "memory".into());
        if bus != "memory" {
            anyhow::bail!("--bus {bus}: this build supports the in-memory log bus only (Redis arrives with distributed mode)");
        }
        let dispatcher = args
            .dispatcher
            .or(file.dispatcher)
            .unwrap_or_else(|| "local".into());
        if dispatcher != "local" {
            anyhow::bail!("--dispatcher {dispatcher}: this build supports local builds only (ECS arrives with distributed mode)");
        }
        let storage = args
            .storage
            .or(file.storage)
            .unwrap_or_else(|| data_dir.join("storage").display().to_string());
        if storage.starts_with("s3://") {
            anyhow::bail!("--storage {storage}: this build supports a local directory only (S3 arrives with distributed mode)");
        }
        let database = args
            .database
            .or(file.database)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("cdeploy.db").display()));
        if !database.starts_with("sqlite:") {
            anyhow::bail!("--database {database}: this build supports sqlite:// only (Postgres arrives with distributed mode)");
        }
        let proxy_listen = args
            .proxy_listen
            .or(file.proxy_listen)
            .unwrap_or_else(|| "127.0.0.1:8000".into());
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
            cache_dir: args
                .cache_dir
                .or(file.cache_dir)
                .unwrap_or_else(|| data_dir.join("cache")),
            max_file_bytes: (args.max_file_mb.or(file.max_file_mb).unwrap_or(100) as usize)
                * 1024
                * 1024,
            data_dir,
        })
    }
}

fn default_data_dir() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("cdeploy"),
        None => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".local/share/cdeploy"),
            None => PathBuf::from("cdeploy-data"),
        },
    }
}
