//! From the merged [`Settings`] to a [`Config`]: defaults filled in, every value
//! checked, with errors that name the flag.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use cdeploy_storage::{SpecError, StorageSpec};

use super::settings::{
    BackendSettings, BuildSettings, HttpsSettings, KeySettings, LimitSettings, RetentionSettings,
    ServeSettings,
};
use super::types::{ForgeApi, ForgeSettings, KeySource, NotifySettings, Retention};
use super::{Config, DispatcherKind, Settings};
use cdeploy_logbus::{BusSpec, LogLimits};

/// The environment, as resolving reads it (tests give their own).
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn resolve(s: Settings) -> anyhow::Result<Config> {
    let env = |k: &str| std::env::var(k).ok();
    let data_dir = s
        .serve
        .data_dir
        .clone()
        .unwrap_or_else(cdeploy_core::default_data_dir);
    let backends = backends(&s.backend, &data_dir, &env)?;
    let builds = builds(&s.build, &data_dir)?;
    let limits = limits(&s.limit)?;
    let secrets_key = secrets_key(&s.key, &backends.database, &data_dir, &env);
    let protection_keys = protection_keys(s.key.protection_key_file.clone(), &env)?;
    let proxy_listen = s
        .serve
        .proxy_listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:8000".into());
    Ok(Config {
        listen: s
            .serve
            .listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:9000".into()),
        proxy_listen: (proxy_listen != "none").then_some(proxy_listen),
        domain: s
            .serve
            .domain
            .clone()
            .unwrap_or_else(|| "localhost:8000".into()),
        ready_file: s.serve.ready_file.clone(),
        storage: backends.storage,
        database: backends.database,
        bus: backends.bus,
        dispatcher: backends.dispatcher,
        builder_api: s.backend.builder_api.clone(),
        ecs_poll: Duration::from_secs(s.backend.ecs_poll_secs.unwrap_or(5).max(1)),
        ecs_stop_grace: Duration::from_secs(s.backend.ecs_stop_grace_secs.unwrap_or(15)),
        concurrency: builds.concurrency,
        queue_size: builds.queue_size,
        build_timeout: builds.timeout,
        toolchain_dir: builds.toolchain_dir,
        toolchain_max_mb: builds.toolchain_max_mb,
        npm_registry: s.build.npm_registry.clone(),
        cache_dir: builds.cache_dir,
        build_dir: builds.build_dir,
        unsafe_no_sandbox: s.build.unsafe_no_sandbox.unwrap_or(false),
        build_uid: builds.uid,
        build_limits: builds.limits,
        build_host_ports: builds.host_ports,
        max_file_bytes: limits.max_file_bytes,
        retention: retention(&s.retention)?,
        gc_interval: match s.retention.gc_interval_mins.unwrap_or(60) {
            0 => None,
            m => Some(Duration::from_secs(m * 60)),
        },
        max_deployment_bytes: limits.max_deployment_bytes,
        max_files: limits.max_files,
        token_rate: limits.token_rate,
        token_burst: limits.token_burst,
        secrets_key,
        protection_keys,
        forges: forges(&s.key, &env)?,
        log_limits: limits.log,
        connections: connections(&s.serve),
        serve_threads: s.serve.serve_threads.unwrap_or(0),
        trusted_proxies: s.serve.trusted_proxies.unwrap_or(0),
        rules_proxy_allow: cdeploy_proxy::upstream::ProxyAllow::parse(
            s.serve.rules_proxy_allow.as_deref().unwrap_or_default(),
        )
        .map_err(|e| anyhow::anyhow!("--rules-proxy-allow: {e}"))?,
        notify: NotifySettings::from_flags(&s.serve)?,
        api_url: super::types::api_url(&s.serve)?,
        https: https(&s.https)?,
        runtime: s
            .runtime
            .resolve(&build_root(&data_dir).join("runtimes"))
            .map_err(anyhow::Error::msg)?,
        data_dir,
    })
}

/// The TLS listener, ACME and DNS settings, checked.
fn https(s: &HttpsSettings) -> anyhow::Result<super::Https> {
    let public_ips = s
        .public_ip
        .iter()
        .flatten()
        .map(|ip| {
            ip.trim()
                .parse()
                .with_context(|| format!("--public-ip: {ip:?} is not an IP address"))
        })
        .collect::<anyhow::Result<_>>()?;
    let dns_server = s
        .dns_server
        .as_deref()
        .map(|a| {
            a.parse()
                .with_context(|| format!("--dns-server: {a:?} is not IP:PORT"))
        })
        .transpose()?;
    let directory = match s.acme_directory.as_deref().unwrap_or("letsencrypt") {
        "none" => None,
        "letsencrypt" => Some("https://acme-v02.api.letsencrypt.org/directory".to_string()),
        "letsencrypt-staging" => {
            Some("https://acme-staging-v02.api.letsencrypt.org/directory".to_string())
        }
        url if url.starts_with("https://") => Some(url.to_string()),
        other => anyhow::bail!(
            "--acme-directory: {other:?} is not letsencrypt, letsencrypt-staging, none or an https:// directory URL"
        ),
    };
    let eab = match (&s.acme_eab_kid, &s.acme_eab_hmac_key) {
        (None, None) => None,
        (Some(kid), Some(key)) => {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(key.trim().trim_end_matches('='))
                .context("--acme-eab-hmac-key: not base64url")?;
            Some((kid.clone(), decoded))
        }
        _ => anyhow::bail!("--acme-eab-kid and --acme-eab-hmac-key go together"),
    };
    // ACME runs with a TLS listener, or when a CA is named (a server of a distributed
    // installation without the embedded proxy, whose proxies serve what it gets).
    let wanted = s.tls_listen.is_some() || s.acme_directory.is_some();
    let acme = match (wanted, directory) {
        (true, Some(directory)) => Some(super::Acme {
            directory,
            root: s.acme_root.clone(),
            email: s.acme_email.clone(),
            eab,
            http_port: s.acme_http_port.unwrap_or(80),
            challenge: challenge(s.acme_challenge.as_deref())?,
            tls_port: s.acme_tls_port.unwrap_or(443),
            interval: Duration::from_secs(positive(
                "acme-interval-secs",
                s.acme_interval_secs,
                60,
            )?),
            dns_writer: dns_writer(s)?,
            wildcard: s.acme_wildcard,
        }),
        _ => None,
    };
    Ok(super::Https {
        tls_listen: s.tls_listen.clone(),
        public_ips,
        acme,
        dns_server,
        operator_cert: s.tls_cert.clone().zip(s.tls_key.clone()),
        check_interval: Duration::from_secs(positive(
            "acme-interval-secs",
            s.acme_interval_secs,
            60,
        )?),
    })
}

/// How DNS-01 TXT records are written: the hook, or dynamic updates (with their key).
fn dns_writer(s: &HttpsSettings) -> anyhow::Result<Option<super::DnsWriter>> {
    use super::{DnsUpdate, DnsWriter, TsigKey};
    let tsig_given = s.acme_dns_tsig_key.is_some()
        || s.acme_dns_tsig_secret.is_some()
        || s.acme_dns_tsig_algorithm.is_some();
    let tsig = match (&s.acme_dns_tsig_key, &s.acme_dns_tsig_secret) {
        (None, None) => None,
        (Some(name), Some(secret)) => {
            use base64::Engine;
            let secret = base64::engine::general_purpose::STANDARD
                .decode(secret.trim())
                .context("--acme-dns-tsig-secret: not base64")?;
            Some(TsigKey {
                name: name.clone(),
                algorithm: s
                    .acme_dns_tsig_algorithm
                    .clone()
                    .unwrap_or_else(|| "hmac-sha256".into()),
                secret,
            })
        }
        _ => anyhow::bail!("--acme-dns-tsig-key and --acme-dns-tsig-secret go together"),
    };
    let writer = match (&s.acme_dns_hook, &s.acme_dns_rfc2136) {
        (Some(_), Some(_)) => {
            anyhow::bail!("--acme-dns-hook and --acme-dns-rfc2136: give one of them")
        }
        (Some(hook), None) => Some(DnsWriter::Hook(hook.clone())),
        (None, Some(server)) => {
            if let Some(key) = &tsig {
                key.signer().map_err(anyhow::Error::msg)?;
            }
            if let Some(zone) = &s.acme_dns_zone {
                hickory_proto::rr::Name::from_ascii(zone)
                    .with_context(|| format!("--acme-dns-zone {zone:?} is not a DNS name"))?;
            }
            Some(DnsWriter::Rfc2136(DnsUpdate {
                server: server
                    .parse()
                    .with_context(|| format!("--acme-dns-rfc2136: {server:?} is not IP:PORT"))?,
                zone: s.acme_dns_zone.clone(),
                tsig,
            }))
        }
        (None, None) => None,
    };
    let update_flags = tsig_given || s.acme_dns_zone.is_some();
    if update_flags && s.acme_dns_rfc2136.is_none() {
        anyhow::bail!(
            "--acme-dns-zone and --acme-dns-tsig-* configure --acme-dns-rfc2136, which is not given"
        );
    }
    if s.acme_wildcard && writer.is_none() {
        anyhow::bail!(
            "--acme-wildcard needs --acme-dns-hook or --acme-dns-rfc2136 to write the TXT record"
        );
    }
    Ok(writer)
}

/// A positive number, or its default when not given.
fn positive(flag: &str, v: Option<u64>, default: u64) -> anyhow::Result<u64> {
    match v {
        Some(0) => anyhow::bail!("--{flag} must be greater than 0"),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

struct Backends {
    storage: StorageSpec,
    database: String,
    bus: BusSpec,
    dispatcher: DispatcherKind,
}

fn backends(s: &BackendSettings, data_dir: &Path, env: Env) -> anyhow::Result<Backends> {
    let bus = BusSpec::resolve(s.bus.as_deref(), env).map_err(|e| anyhow::anyhow!("--bus {e}"))?;
    let dispatcher = match s.dispatcher.as_deref().unwrap_or("local") {
        "local" => DispatcherKind::Local,
        "ecs" => DispatcherKind::Ecs,
        other => anyhow::bail!("--dispatcher {other}: expected `local` or `ecs`"),
    };
    let storage = match s.storage.clone() {
        Some(s) => s,
        None => match env("S3_BUCKET_NAME").filter(|b| !b.is_empty()) {
            Some(bucket) => format!("s3://{bucket}"),
            None => data_dir.join("storage").display().to_string(),
        },
    };
    // The server writes: a read-only origin is no storage for it.
    let storage = match storage.parse::<StorageSpec>() {
        Ok(spec) if spec.is_writable() => spec,
        Err(e @ (SpecError::InvalidBucket { .. } | SpecError::InvalidPrefix { .. })) => {
            anyhow::bail!("--storage {e}")
        }
        Ok(_) | Err(_) => {
            anyhow::bail!("--storage {storage}: expected a directory or s3://bucket[/prefix]")
        }
    };
    let database = s
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("cdeploy.db").display()));
    if !["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|p| database.starts_with(p))
    {
        anyhow::bail!("--database: expected sqlite://PATH or postgres://…");
    }
    if dispatcher == DispatcherKind::Ecs && !cfg!(feature = "aws") {
        anyhow::bail!(super::NO_AWS_ECS);
    }
    if dispatcher == DispatcherKind::Ecs {
        if !matches!(storage, StorageSpec::S3 { .. }) {
            anyhow::bail!("--dispatcher ecs needs --storage s3://…: build tasks cannot reach this machine's disk");
        }
        if !bus.is_shared() {
            anyhow::bail!("--dispatcher ecs needs the Redis log bus (--bus redis://…): build tasks send their logs through it");
        }
    }
    Ok(Backends {
        storage,
        database,
        bus,
        dispatcher,
    })
}

struct Builds {
    concurrency: usize,
    queue_size: usize,
    timeout: Duration,
    cache_dir: PathBuf,
    toolchain_dir: PathBuf,
    toolchain_max_mb: u64,
    build_dir: PathBuf,
    uid: u32,
    limits: cdeploy_builder::sandbox::Limits,
    host_ports: Vec<u16>,
}

fn builds(s: &BuildSettings, data_dir: &Path) -> anyhow::Result<Builds> {
    let defaults = cdeploy_builder::sandbox::Limits::default();
    let limits = cdeploy_builder::sandbox::Limits {
        memory_bytes: positive(
            "build-memory-mb",
            s.build_memory_mb,
            defaults.memory_bytes >> 20,
        )? << 20,
        pids: positive("build-pids", s.build_pids, defaults.pids)?,
        disk_bytes: positive("build-disk-mb", s.build_disk_mb, defaults.disk_bytes >> 20)? << 20,
    };
    let host_ports = match &s.build_host_ports {
        Some(list) => cdeploy_builder::env::parse_ports(list)
            .map_err(|e| anyhow::anyhow!("--build-host-ports: {e}"))?,
        None => Vec::new(),
    };
    let uid = s.build_uid.unwrap_or(64000);
    if uid == 0 {
        anyhow::bail!("--build-uid must not be 0: builds never run as root");
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cache_dir = s
        .cache_dir
        .clone()
        .unwrap_or_else(|| build_root(data_dir).join("cache"));
    Ok(Builds {
        concurrency: s.concurrency.unwrap_or(cpus.min(4)).max(1),
        queue_size: s.queue_size.unwrap_or(64).max(1),
        timeout: Duration::from_secs(s.build_timeout.unwrap_or(900).max(1)),
        toolchain_dir: s
            .toolchain_dir
            .clone()
            .unwrap_or_else(|| cache_dir.join("toolchains")),
        toolchain_max_mb: s
            .toolchain_max_mb
            .unwrap_or(cdeploy_builder::toolchain::DEFAULT_MAX_MB),
        cache_dir,
        build_dir: s
            .build_dir
            .clone()
            .unwrap_or_else(|| build_root(data_dir).join("builds")),
        uid,
        limits,
        host_ports,
    })
}

struct Limits {
    max_file_bytes: usize,
    max_deployment_bytes: u64,
    max_files: usize,
    token_rate: NonZeroU32,
    token_burst: NonZeroU32,
    log: LogLimits,
}

fn limits(s: &LimitSettings) -> anyhow::Result<Limits> {
    let log_defaults = LogLimits::default();
    Ok(Limits {
        max_file_bytes: (s.max_file_mb.unwrap_or(100) as usize) * 1024 * 1024,
        max_deployment_bytes: positive("max-deployment-mb", s.max_deployment_mb, 1024)? << 20,
        max_files: positive("max-files", s.max_files.map(|n| n as u64), 100_000)? as usize,
        token_rate: NonZeroU32::new(s.token_rate.unwrap_or(100))
            .context("--token-rate must be greater than 0")?,
        token_burst: NonZeroU32::new(s.token_burst.unwrap_or(2000))
            .context("--token-burst must be greater than 0")?,
        log: LogLimits {
            max_events: positive("max-log-lines", s.max_log_lines, log_defaults.max_events)?,
            max_bytes: positive("max-log-mb", s.max_log_mb, log_defaults.max_bytes >> 20)? << 20,
        },
    })
}

fn retention(s: &RetentionSettings) -> anyhow::Result<Retention> {
    Ok(Retention {
        keep_deployments: s.keep_deployments.unwrap_or(20),
        keep_for: Duration::from_secs(s.keep_days.unwrap_or(30) * 24 * 3600),
        grace: Duration::from_secs(s.gc_grace_secs.unwrap_or(3600)),
        audit_for: match s.audit_days.unwrap_or(365) {
            days @ 1..=3650 => Duration::from_secs(days * 86_400),
            other => anyhow::bail!("audit-days: 1 to 3650, not {other}"),
        },
    })
}

/// `--acme-challenge` (the settings file's value is not checked by clap: a typo fails).
fn challenge(name: Option<&str>) -> anyhow::Result<super::Challenge> {
    Ok(match name {
        None | Some("http-01") => super::Challenge::Http01,
        Some("tls-alpn-01") => super::Challenge::TlsAlpn01,
        Some(other) => anyhow::bail!("acme-challenge: http-01 or tls-alpn-01, not {other:?}"),
    })
}

fn connections(s: &ServeSettings) -> cdeploy_conn::ConnSettings {
    cdeploy_conn::ConnSettings {
        max_connections: s.max_connections.unwrap_or(0),
        header_timeout: Duration::from_secs(s.header_timeout.unwrap_or(60).max(1)),
        idle_timeout: Duration::from_secs(s.idle_timeout.unwrap_or(75).max(1)),
    }
}

fn secrets_key(s: &KeySettings, database: &str, data_dir: &Path, env: Env) -> KeySource {
    match s.secrets_key_file.clone() {
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
    }
}

/// The forges commit statuses go to: each whose token is in the environment (never a
/// flag: it would show in `ps`).
fn forges(s: &KeySettings, env: Env) -> anyhow::Result<ForgeSettings> {
    Ok(ForgeSettings {
        github: forge(
            "github",
            s.github_api.clone(),
            Some("https://api.github.com"),
            env,
        )?,
        gitlab: forge(
            "gitlab",
            s.gitlab_api.clone(),
            Some("https://gitlab.com/api/v4"),
            env,
        )?,
        gitea: forge("gitea", s.gitea_api.clone(), None, env)?,
    })
}

fn forge(
    name: &str,
    api: Option<String>,
    default: Option<&str>,
    env: Env,
) -> anyhow::Result<Option<ForgeApi>> {
    let token =
        env(&format!("CDEPLOY_{}_TOKEN", name.to_uppercase())).filter(|t| !t.trim().is_empty());
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
}

/// The protection keyring: the file, else `CDEPLOY_PROTECTION_KEY`, else none.
fn protection_keys(
    file: Option<PathBuf>,
    env: Env,
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

/// Where build, cache and runtime directories go by default: in the data dir, unless the server
/// runs as root and a parent of the data dir is closed to other users (`/root/...`):
/// builds run as an unprivileged uid that must pass through every parent, so they go
/// to `/var/lib/cdeploy/<hash of the data dir>` instead, and the data dir stays closed.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns01_writers_are_one_of_two_and_a_tsig_key_comes_whole() {
        let base = HttpsSettings {
            acme_dns_rfc2136: Some("127.0.0.1:5353".into()),
            acme_wildcard: true,
            ..Default::default()
        };
        let err = |s: &HttpsSettings| format!("{:#}", dns_writer(s).unwrap_err());
        let Some(super::super::DnsWriter::Rfc2136(update)) = dns_writer(&base).unwrap() else {
            panic!("dynamic updates");
        };
        assert!(update.tsig.is_none() && update.zone.is_none());
        let keyed = HttpsSettings {
            acme_dns_tsig_key: Some("cdeploy-acme".into()),
            acme_dns_tsig_secret: Some("c2VjcmV0".into()),
            ..base.clone()
        };
        let Some(super::super::DnsWriter::Rfc2136(update)) = dns_writer(&keyed).unwrap() else {
            panic!("dynamic updates");
        };
        let key = update.tsig.unwrap();
        assert_eq!(
            (key.algorithm.as_str(), &key.secret[..]),
            ("hmac-sha256", &b"secret"[..])
        );
        assert!(
            !format!("{key:?}").contains("secret: "),
            "the secret is not logged"
        );
        let half = HttpsSettings {
            acme_dns_tsig_secret: None,
            ..keyed.clone()
        };
        assert!(err(&half).contains("go together"));
        let both = HttpsSettings {
            acme_dns_hook: Some("/bin/true".into()),
            ..base.clone()
        };
        assert!(err(&both).contains("give one of them"));
        let neither = HttpsSettings {
            acme_dns_rfc2136: None,
            ..base.clone()
        };
        assert!(err(&neither).contains("--acme-wildcard needs"));
        let bad = HttpsSettings {
            acme_dns_rfc2136: Some("ns1.example.com".into()),
            ..base.clone()
        };
        assert!(err(&bad).contains("is not IP:PORT"));
        // A settings file skips the flags' own checks: these are checked at start.
        let md5 = HttpsSettings {
            acme_dns_tsig_algorithm: Some("hmac-md5".into()),
            ..keyed.clone()
        };
        assert!(err(&md5).contains("expected hmac-sha256"));
        let stray = HttpsSettings {
            acme_dns_rfc2136: None,
            acme_dns_hook: Some("/bin/true".into()),
            ..keyed
        };
        assert!(err(&stray).contains("which is not given"));
        let zone = HttpsSettings {
            acme_dns_zone: Some("bad zone..".into()),
            ..base
        };
        assert!(err(&zone).contains("is not a DNS name"));
    }
}
