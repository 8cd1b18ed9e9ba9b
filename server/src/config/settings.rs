//! The settings as flags, environment variables and the settings file all give them:
//! one struct per group, read by clap (flags and their variables) and by serde (the
//! file, same keys as the long flags with `_` for `-`). Every field is optional here;
//! defaults and checks are [`super::resolve`]'s.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Every setting, by group.
#[derive(clap::Args, Debug, Default, Clone, Serialize, Deserialize)]
pub struct Settings {
    #[command(flatten)]
    #[serde(flatten)]
    pub serve: ServeSettings,
    #[command(flatten)]
    #[serde(flatten)]
    pub backend: BackendSettings,
    #[command(flatten)]
    #[serde(flatten)]
    pub build: BuildSettings,
    #[command(flatten)]
    #[serde(flatten)]
    pub limit: LimitSettings,
    #[command(flatten)]
    #[serde(flatten)]
    pub retention: RetentionSettings,
    #[command(flatten)]
    #[serde(flatten)]
    pub key: KeySettings,
    #[command(flatten)]
    #[serde(flatten)]
    pub https: HttpsSettings,
    #[command(flatten)]
    #[serde(flatten)]
    pub runtime: super::runtime::RuntimeSettings,
}

/// Custom domains and HTTPS: the TLS listener, certificates by ACME, and what DNS
/// should say.
#[derive(clap::Args, Debug, Default, Clone, Serialize, Deserialize)]
pub struct HttpsSettings {
    /// The embedded proxy's HTTPS address (`0.0.0.0:443`); with it, custom domains get
    /// certificates by ACME [default: none, plain HTTP only].
    #[arg(long, env = "CDEPLOY_TLS_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<String>,
    /// The proxy's public addresses, comma-separated: the A/AAAA records `domains add`
    /// asks for, and what the DNS check compares with [default: none; subdomains are
    /// asked for a CNAME to `<slug>.<domain>`].
    #[arg(long, env = "CDEPLOY_PUBLIC_IP", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<Vec<String>>,
    /// The ACME CA: `letsencrypt`, `letsencrypt-staging`, `none`, or a directory URL.
    /// Certificates are ordered with `--tls-listen`, or when this is given (a server
    /// whose proxies run apart) [default: letsencrypt].
    #[arg(long, env = "CDEPLOY_ACME_DIRECTORY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme_directory: Option<String>,
    /// PEM file of the roots the CA's API is trusted by (a private CA) [default: the
    /// system's].
    #[arg(long, env = "CDEPLOY_ACME_ROOT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme_root: Option<PathBuf>,
    /// Contact for the ACME account (expiry notices) [default: none].
    #[arg(long, env = "CDEPLOY_ACME_EMAIL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme_email: Option<String>,
    /// External Account Binding: the key id the CA gave [default: none].
    #[arg(long, env = "CDEPLOY_ACME_EAB_KID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme_eab_kid: Option<String>,
    /// External Account Binding: the HMAC key the CA gave, base64url [default: none].
    #[arg(long, env = "CDEPLOY_ACME_EAB_HMAC_KEY", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme_eab_hmac_key: Option<String>,
    /// The port a CA's HTTP-01 check connects to, which the self-check uses too
    /// [default: 80; another only for a test CA such as pebble].
    #[arg(long, env = "CDEPLOY_ACME_HTTP_PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme_http_port: Option<u16>,
    /// How the CA checks that a domain reaches this platform: `http-01` (a token on
    /// port 80) or `tls-alpn-01` (a challenge certificate on port 443, for a platform
    /// whose port 80 the CA can't reach) [default: http-01]. The platform's wildcard
    /// always uses DNS-01.
    #[arg(long, env = "CDEPLOY_ACME_CHALLENGE", value_parser = ["http-01", "tls-alpn-01"])]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme_challenge: Option<String>,
    /// The port a CA's TLS-ALPN-01 check connects to, which the self-check uses too
    /// [default: 443; another only for a test CA such as pebble].
    #[arg(long, env = "CDEPLOY_ACME_TLS_PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme_tls_port: Option<u16>,
    /// Seconds between looks for certificates due (new, failed past their backoff, or
    /// at two thirds of their lifetime) [default: 60].
    #[arg(long, env = "CDEPLOY_ACME_INTERVAL_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme_interval_secs: Option<u64>,
    /// A certificate chain (PEM) the proxies serve for the names it holds, e.g. the
    /// platform's own `*.<domain>`; stored (key sealed) at every start [default: none].
    #[arg(long, env = "CDEPLOY_TLS_CERT", requires = "tls_key")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert` [default: none].
    #[arg(long, env = "CDEPLOY_TLS_KEY", requires = "tls_cert")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// A program that sets and clears DNS-01 TXT records: run as `PROGRAM set|clear
    /// _acme-challenge.<name>. <value>`; exit 0 when done [default: none].
    #[arg(long, env = "CDEPLOY_ACME_DNS_HOOK")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme_dns_hook: Option<PathBuf>,
    /// A DNS server that takes dynamic updates (RFC 2136) for the DNS-01 TXT records,
    /// `IP:PORT` (the zone's primary), instead of a hook [default: none].
    #[arg(
        long,
        env = "CDEPLOY_ACME_DNS_RFC2136",
        conflicts_with = "acme_dns_hook"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme_dns_rfc2136: Option<String>,
    /// The zone the dynamic updates change [default: the platform's domain].
    #[arg(long, env = "CDEPLOY_ACME_DNS_ZONE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme_dns_zone: Option<String>,
    /// The name of the TSIG key (RFC 8945) that signs the dynamic updates [default:
    /// none, unsigned].
    #[arg(long, env = "CDEPLOY_ACME_DNS_TSIG_KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme_dns_tsig_key: Option<String>,
    /// The TSIG key's secret, base64, as the DNS server's `key` clause has it [default:
    /// none].
    #[arg(long, env = "CDEPLOY_ACME_DNS_TSIG_SECRET", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme_dns_tsig_secret: Option<String>,
    /// The TSIG key's algorithm [default: hmac-sha256].
    #[arg(long, env = "CDEPLOY_ACME_DNS_TSIG_ALGORITHM", value_parser = ["hmac-sha256", "hmac-sha384", "hmac-sha512"])]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme_dns_tsig_algorithm: Option<String>,
    /// Get the platform's own wildcard `*.<domain>` by DNS-01, the TXT record written
    /// by `--acme-dns-hook` or `--acme-dns-rfc2136`.
    #[arg(long, env = "CDEPLOY_ACME_WILDCARD")]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acme_wildcard: bool,
    /// The DNS server the domain checks ask, `IP:PORT` [default: the system's].
    #[arg(long, env = "CDEPLOY_DNS_SERVER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_server: Option<String>,
}

/// Where the server listens and how it treats connections.
#[derive(clap::Args, Debug, Default, Clone, Serialize, Deserialize)]
pub struct ServeSettings {
    /// Data directory [default: $XDG_DATA_HOME/cdeploy].
    #[arg(long, env = "CDEPLOY_DATA_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// API address [default: 127.0.0.1:9000].
    #[arg(long, env = "CDEPLOY_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Embedded proxy address, or `none` [default: 127.0.0.1:8000].
    #[arg(long, env = "CDEPLOY_PROXY_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_listen: Option<String>,
    /// Public domain of sites: `<slug>.<domain>`; a port of 0 (`localhost:0`) is the
    /// embedded proxy's bound port [default: localhost:8000].
    #[arg(long, env = "CDEPLOY_DOMAIN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Once it answers, the server writes its bound addresses to this file as JSON
    /// (`{"api":"127.0.0.1:9000","proxy":"127.0.0.1:8000"}`): with `--listen
    /// 127.0.0.1:0` a supervisor or test learns the ports the system chose [default:
    /// none].
    #[arg(long, env = "CDEPLOY_READY_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_file: Option<PathBuf>,
    /// Most connections at once, API and proxy together [default: the open-file limit
    /// less 192, at most 16384]. At the cap the longest-idle connection is closed.
    #[arg(long, env = "CDEPLOY_MAX_CONNECTIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Seconds from accept to a complete request head (a later head on the connection:
    /// from its first byte) [default: 60, as nginx].
    #[arg(long, env = "CDEPLOY_HEADER_TIMEOUT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<u64>,
    /// Seconds a keep-alive connection may idle between requests [default: 75, as nginx].
    #[arg(long, env = "CDEPLOY_IDLE_TIMEOUT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u64>,
    /// Threads that serve the embedded proxy's connections, each accepted connection
    /// served start to finish on one of them (as nginx's worker processes) [default: 0,
    /// one per core].
    #[arg(long, env = "CDEPLOY_SERVE_THREADS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serve_threads: Option<usize>,
    /// Proxies in front of the embedded proxy that append to X-Forwarded-For (a load
    /// balancer: 1); wrong preview passwords are limited per visitor address, taken that
    /// many entries from the right [default: 0, the connection's peer].
    #[arg(long, env = "CDEPLOY_TRUSTED_PROXIES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<usize>,
    /// Networks sites' proxy rules (`/api/* https://… 200`) may reach besides public
    /// addresses, comma-separated (`10.1.0.0/16,127.0.0.1`) [default: none: loopback,
    /// private and link-local addresses are refused].
    #[arg(long, env = "CDEPLOY_RULES_PROXY_ALLOW", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules_proxy_allow: Option<Vec<String>>,
    /// Networks notification endpoints (`cdeploy notify add`) may be at besides public
    /// addresses, comma-separated [default: none: loopback, private and link-local
    /// addresses are refused].
    #[arg(long, env = "CDEPLOY_NOTIFY_ALLOW", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_allow: Option<Vec<String>>,
    /// The waits between attempts at a deploy event an endpoint did not take, comma-
    /// separated (`ms`, `s`, `m`, `h`); when spent, the event is given up [default:
    /// 5s,5m,30m,2h,5h,10h,10h].
    #[arg(long, env = "CDEPLOY_NOTIFY_RETRY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_retry: Option<String>,
    /// The API's public URL, as clients reach it (`https://cdeploy.example.com`): the
    /// audience CI identity tokens must name to be traded for a deploy token [default:
    /// none: no trusted publishing].
    #[arg(long, env = "CDEPLOY_API_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

/// Storage, the log bus, the database and where builds run.
#[derive(clap::Args, Debug, Default, Clone, Serialize, Deserialize)]
pub struct BackendSettings {
    /// Storage: a directory or `s3://bucket[/prefix]` [default: <data-dir>/storage, or
    /// s3://$S3_BUCKET_NAME when that is set].
    #[arg(long, env = "CDEPLOY_STORAGE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Log bus: `memory`, `redis://…`/`rediss://…`, or `redis` for the REDIS_URL /
    /// REDIS_HOST, REDIS_PORT, REDIS_USERNAME, REDIS_PASSWORD variables [default: redis
    /// when those are set, else memory].
    #[arg(long, env = "CDEPLOY_BUS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    /// Build dispatcher: `local` (builds in this process) or `ecs` (ECS Fargate tasks;
    /// needs S3 storage and the Redis bus) [default: local].
    #[arg(long, env = "CDEPLOY_DISPATCHER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispatcher: Option<String>,
    /// Metadata database: `sqlite://PATH` or `postgres://…` [default: SQLite in the data dir].
    #[arg(long, env = "CDEPLOY_DATABASE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// ECS: the URL build tasks reach this API at (a load balancer in front of the
    /// replicas, or several URLs, comma-separated). Required with --dispatcher ecs.
    #[arg(long, env = "CDEPLOY_BUILDER_API")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder_api: Option<String>,
    /// ECS: seconds between checks of a running build task [default: 5].
    #[arg(long, env = "CDEPLOY_ECS_POLL_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecs_poll_secs: Option<u64>,
    /// ECS: seconds to wait for a stopped task's final log event before the deployment
    /// is marked failed with the task's stop reason [default: 15].
    #[arg(long, env = "CDEPLOY_ECS_STOP_GRACE_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecs_stop_grace_secs: Option<u64>,
}

/// Local builds: how many, where, and their sandbox's limits.
#[derive(clap::Args, Debug, Default, Clone, Serialize, Deserialize)]
pub struct BuildSettings {
    /// Builds that run at once [default: number of CPUs, at most 4].
    #[arg(long, env = "CDEPLOY_CONCURRENCY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Deployments that may wait for a build slot before new ones get 429 [default: 64].
    #[arg(long, env = "CDEPLOY_QUEUE_SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<usize>,
    /// Build timeout in seconds [default: 900].
    #[arg(long, env = "CDEPLOY_BUILD_TIMEOUT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_timeout: Option<u64>,
    /// Build caches: each project's package-manager cache and kept node_modules
    /// [default: <data-dir>/cache]. Must be on the same filesystem as --build-dir.
    #[arg(long, env = "CDEPLOY_CACHE_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// Node.js and package managers fetched for builds, by version, shared by all
    /// projects and read-only to builds [default: <cache-dir>/toolchains].
    #[arg(long, env = "CDEPLOY_TOOLCHAIN_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toolchain_dir: Option<PathBuf>,
    /// The toolchain directory's size cap in MiB: past it, the least recently used
    /// versions no running build holds are removed [default: 10240].
    #[arg(long, env = "CDEPLOY_TOOLCHAIN_MAX_MB")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toolchain_max_mb: Option<u64>,
    /// The npm registry Node.js and package managers are fetched from (a mirror for
    /// hosts without the internet) [default: https://registry.npmjs.org].
    #[arg(long, env = "CDEPLOY_NPM_REGISTRY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub npm_registry: Option<String>,
    /// Where builds' work directories are made [default: <data-dir>/builds]. With a
    /// server running as root, every parent must be traversable (o+x) by --build-uid.
    #[arg(long, env = "CDEPLOY_BUILD_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_dir: Option<PathBuf>,
    /// Run builds WITHOUT a sandbox when none can be made (no bubblewrap/pasta, no user
    /// namespaces). Every build then logs a warning: only for code you trust.
    #[arg(long, env = "CDEPLOY_UNSAFE_NO_SANDBOX", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsafe_no_sandbox: Option<bool>,
    /// The unprivileged uid (and gid) builds run as when the server runs as root; it
    /// must own no file of the platform [default: 64000].
    #[arg(long, env = "CDEPLOY_BUILD_UID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_uid: Option<u32>,
    /// Memory limit of one build, in MiB [default: 4096].
    #[arg(long, env = "CDEPLOY_BUILD_MEMORY_MB")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_memory_mb: Option<u64>,
    /// TCP ports of this host's loopback that builds may reach, comma-separated (a
    /// local git server or registry mirror) [default: none].
    #[arg(long, env = "CDEPLOY_BUILD_HOST_PORTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_host_ports: Option<String>,
    /// Processes and threads one build may have at once [default: 1024].
    #[arg(long, env = "CDEPLOY_BUILD_PIDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_pids: Option<u64>,
    /// Disk one build may use (checkout, HOME, /tmp and its project cache), in MiB
    /// [default: 10240].
    #[arg(long, env = "CDEPLOY_BUILD_DISK_MB")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_disk_mb: Option<u64>,
}

/// What one upload, deployment, log or token may take.
#[derive(clap::Args, Debug, Default, Clone, Serialize, Deserialize)]
pub struct LimitSettings {
    /// Largest single file accepted by PUT /v1/files, in MiB [default: 100].
    #[arg(long, env = "CDEPLOY_MAX_FILE_MB")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_file_mb: Option<u64>,
    /// Summed size of one deployment's files in MiB, a file counted once per path it
    /// is served at (source uploads, prebuilt uploads and build output) [default: 1024].
    #[arg(long, env = "CDEPLOY_MAX_DEPLOYMENT_MB")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_deployment_mb: Option<u64>,
    /// Most files in one deployment [default: 100000].
    #[arg(long, env = "CDEPLOY_MAX_FILES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_files: Option<usize>,
    /// API requests per second one token may make, sustained [default: 100].
    #[arg(long, env = "CDEPLOY_TOKEN_RATE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_rate: Option<u32>,
    /// API requests one token may make in a burst above the rate [default: 2000].
    #[arg(long, env = "CDEPLOY_TOKEN_BURST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_burst: Option<u32>,
    /// Most log lines (events) one deployment keeps; later output is dropped after a
    /// `[log truncated]` notice [default: 100000].
    #[arg(long, env = "CDEPLOY_MAX_LOG_LINES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_log_lines: Option<u64>,
    /// Most log bytes one deployment keeps, in MiB [default: 16].
    #[arg(long, env = "CDEPLOY_MAX_LOG_MB")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_log_mb: Option<u64>,
}

/// What garbage collection keeps, and how often it runs.
#[derive(clap::Args, Debug, Default, Clone, Serialize, Deserialize)]
pub struct RetentionSettings {
    /// Retention: deployments kept per project, newest first (production, running and
    /// recent ones are kept too) [default: 20].
    #[arg(long, env = "CDEPLOY_KEEP_DEPLOYMENTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_deployments: Option<usize>,
    /// Retention: deployments younger than this many days are kept [default: 30].
    #[arg(long, env = "CDEPLOY_KEEP_DAYS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_days: Option<u64>,
    /// Retention: days the audit log keeps an entry, 1 to 3650 [default: 365].
    #[arg(long, env = "CDEPLOY_AUDIT_DAYS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_days: Option<u64>,
    /// Garbage collection: minutes between runs, 0 for none [default: 60].
    #[arg(long, env = "CDEPLOY_GC_INTERVAL_MINS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc_interval_mins: Option<u64>,
    /// Garbage collection: unreferenced blobs younger than this, or checked by an
    /// upload within it, are kept (seconds) [default: 3600].
    #[arg(long, env = "CDEPLOY_GC_GRACE_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc_grace_secs: Option<u64>,
}

/// The operator's keys and the forges commit statuses go to.
#[derive(clap::Args, Debug, Default, Clone, Serialize, Deserialize)]
pub struct KeySettings {
    /// The keys stored secrets are sealed with: a file of base64 keys, one per line, the
    /// first sealing (docs/secrets.md). The keys may instead be given in
    /// CDEPLOY_SECRETS_KEY (never on the command line) [default: with SQLite,
    /// <data-dir>/secrets.key, made on first start; with Postgres, none: no secrets].
    #[arg(long, env = "CDEPLOY_SECRETS_KEY_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets_key_file: Option<PathBuf>,
    /// The keys preview protection records are sealed with, shared with every
    /// `cdeploy-proxy` (a file of base64 keys, one per line, the first sealing; or
    /// CDEPLOY_PROTECTION_KEY). Needed when proxies read a public bucket URL: sealed, the
    /// records give away neither the cookie key nor the password hash [default: none;
    /// records are plain, for storage only the servers and proxies read].
    #[arg(long, env = "CDEPLOY_PROTECTION_KEY_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protection_key_file: Option<PathBuf>,
    /// Commit statuses: GitHub's API (with CDEPLOY_GITHUB_TOKEN set) [default:
    /// https://api.github.com].
    #[arg(long, env = "CDEPLOY_GITHUB_API")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub github_api: Option<String>,
    /// Commit statuses: GitLab's API (with CDEPLOY_GITLAB_TOKEN set) [default:
    /// https://gitlab.com/api/v4].
    #[arg(long, env = "CDEPLOY_GITLAB_API")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gitlab_api: Option<String>,
    /// Commit statuses: a Gitea or Forgejo API, e.g. https://git.example.com/api/v1
    /// (with CDEPLOY_GITEA_TOKEN set).
    #[arg(long, env = "CDEPLOY_GITEA_API")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gitea_api: Option<String>,
}
