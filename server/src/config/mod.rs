//! Server settings: flags > environment > `cdeploy-server.toml` > defaults, merged in
//! one place ([`file::merge`]) and resolved once ([`resolve`]). Environment variable
//! names are listed on each flag.
//!
//! # Layout
//! * this file — [`Args`] (the command line), [`Config`] (resolved).
//! * [`settings`] — the settings by group, one definition for flags, variables and file.
//! * [`file`] — reading `cdeploy-server.toml` and merging it under the flags.
//! * [`resolve`] — defaults and checks: from [`settings::Settings`] to [`Config`].
//! * [`runtime`] — server apps' runtimes: their settings group and what it resolves to.
//! * [`types`] — resolved settings other modules read (keys, forges, retention).

pub mod file;
pub mod resolve;
pub mod runtime;
pub mod settings;
pub mod types;

pub use settings::Settings;

/// What a server built without the `aws` feature says to `--dispatcher ecs`.
pub const NO_AWS_ECS: &str = "--dispatcher ecs: this cdeploy-server was built without AWS support (ECS builds, S3 storage); install it with `./install.sh --aws`, or build with `cargo build --features aws`";
pub use types::{ForgeApi, ForgeSettings, KeySource, NotifySettings, Retention, AUDIT_KEEP};

use std::path::PathBuf;
use std::time::Duration;

use cdeploy_storage::StorageSpec;
use clap::Parser;

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
    #[command(flatten)]
    pub settings: Settings,
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

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: String,
    pub proxy_listen: Option<String>,
    pub domain: String,
    /// Where the bound addresses are written once the server answers.
    pub ready_file: Option<PathBuf>,
    pub storage: StorageSpec,
    pub database: String,
    /// `memory`, or a Redis URL.
    pub bus: cdeploy_logbus::BusSpec,
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
    pub connections: cdeploy_conn::ConnSettings,
    /// Threads serving the embedded proxy's connections (0: one per core).
    pub serve_threads: usize,
    /// Proxies in front of the embedded proxy (its `ProxyConfig::trusted_proxies`).
    pub trusted_proxies: usize,
    /// Networks sites' proxy rules may reach besides public addresses.
    pub rules_proxy_allow: cdeploy_proxy::upstream::ProxyAllow,
    /// Custom domains and HTTPS.
    pub https: Https,
    /// Server apps' runtimes of the embedded proxy.
    pub runtime: runtime::Runtime,
    pub log_limits: cdeploy_logbus::LogLimits,
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
    /// Deploy events out: where they may go, how they are retried.
    pub notify: NotifySettings,
    /// The API's public URL (no trailing `/`): CI identity tokens' audience.
    pub api_url: Option<String>,
}

impl Config {
    pub fn resolve(args: Args) -> anyhow::Result<Config> {
        let from_file = file::read(args.config.as_deref())?;
        resolve::resolve(file::merge(args.settings, from_file)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/config.md names every flag of `cdeploy-server` and the variable it reads.
    #[test]
    fn the_settings_page_names_every_flag_and_variable() {
        use clap::CommandFactory;
        let docs = include_str!("../../../docs/config.md");
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

/// Custom domains and HTTPS, resolved.
#[derive(Debug, Clone)]
pub struct Https {
    pub tls_listen: Option<String>,
    pub public_ips: Vec<std::net::IpAddr>,
    /// `None`: no ACME (no TLS listener, or `--acme-directory none`).
    pub acme: Option<Acme>,
    /// `None`: the system resolver.
    pub dns_server: Option<std::net::SocketAddr>,
    /// An operator's certificate chain and key (PEM files).
    pub operator_cert: Option<(PathBuf, PathBuf)>,
    /// Between looks for domains to verify and certificates due.
    pub check_interval: Duration,
}

/// How the CA checks that a domain reaches this platform (`--acme-challenge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// A token at `http://<name>/.well-known/acme-challenge/` (RFC 8555).
    Http01,
    /// A challenge certificate for ALPN `acme-tls/1` on the TLS port (RFC 8737).
    TlsAlpn01,
}

/// The ACME CA and how to reach it.
#[derive(Debug, Clone)]
pub struct Acme {
    pub directory: String,
    pub root: Option<PathBuf>,
    pub email: Option<String>,
    /// External Account Binding: key id and the decoded HMAC key.
    pub eab: Option<(String, Vec<u8>)>,
    pub http_port: u16,
    /// How the CA checks a domain other than the wildcard.
    pub challenge: Challenge,
    /// The port a CA's TLS-ALPN-01 check connects to.
    pub tls_port: u16,
    pub interval: Duration,
    /// Sets and clears DNS-01 TXT records.
    pub dns_writer: Option<DnsWriter>,
    /// Order the platform's `*.<domain>` (DNS-01, the record set by `dns_writer`).
    pub wildcard: bool,
}

/// How DNS-01 TXT records are written.
#[derive(Debug, Clone)]
pub enum DnsWriter {
    /// A program run as `PROGRAM set|clear <fqdn> <value>` (`--acme-dns-hook`).
    Hook(PathBuf),
    /// Dynamic updates to the zone's primary server (`--acme-dns-rfc2136`).
    Rfc2136(DnsUpdate),
}

/// Dynamic updates (RFC 2136), signed with TSIG (RFC 8945) when a key is given.
#[derive(Debug, Clone)]
pub struct DnsUpdate {
    pub server: std::net::SocketAddr,
    /// The zone the records are in (`None`: the name the challenge is for).
    pub zone: Option<String>,
    pub tsig: Option<TsigKey>,
}

/// A TSIG key: its name, algorithm (`hmac-sha256`, …) and secret.
#[derive(Clone)]
pub struct TsigKey {
    pub name: String,
    pub algorithm: String,
    pub secret: Vec<u8>,
}

impl TsigKey {
    /// What signs an update with this key (and checks the answer's signature).
    pub fn signer(&self) -> Result<hickory_proto::rr::TSigner, String> {
        use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
        /// How far apart the DNS server's clock and ours may be (seconds).
        const FUDGE: u16 = 300;
        let algorithm = match self.algorithm.as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => {
                return Err(format!(
                    "--acme-dns-tsig-algorithm {other}: expected hmac-sha256, hmac-sha384 or hmac-sha512"
                ))
            }
        };
        let name = hickory_proto::rr::Name::from_ascii(&self.name)
            .map_err(|e| format!("--acme-dns-tsig-key {}: {e}", self.name))?;
        hickory_proto::rr::TSigner::new(self.secret.clone(), algorithm, name, FUDGE)
            .map_err(|e| format!("the TSIG key {}: {e}", self.name))
    }
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}
