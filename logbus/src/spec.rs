//! Which log bus a server runs, parsed once ([`BusSpec`]), and [`open`] for it.

use std::path::PathBuf;
use std::sync::Arc;

use cdeploy_storage::DynStorage;

use crate::redis::stream;
use crate::{BusError, LogBus, LogLimits, MemoryBus, RedisBus};

/// A log bus: `memory` (the embedded default), or Redis Streams at a `redis://` or
/// `rediss://` URL.
#[derive(Clone, PartialEq, Eq)]
pub enum BusSpec {
    Memory,
    Redis { url: String },
}

impl std::fmt::Debug for BusSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Safe to print: a URL's password is replaced.
impl std::fmt::Display for BusSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusSpec::Memory => f.write_str("memory"),
            BusSpec::Redis { url } => f.write_str(&stream::redact(url)),
        }
    }
}

/// Why a `--bus` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("{0}: expected `memory`, `redis`, or a redis:// or rediss:// URL")]
    Unknown(String),
    #[error(
        "redis: set REDIS_URL or REDIS_HOST (with REDIS_PORT, REDIS_USERNAME, REDIS_PASSWORD)"
    )]
    NoRedisUrl,
    #[error("{0}")]
    Env(String),
}

impl BusSpec {
    /// `given` as the `--bus` setting has it; `redis` (or nothing, when the environment
    /// names a Redis) reads the URL from the `REDIS_*` variables through `env`.
    pub fn resolve(
        given: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<BusSpec, SpecError> {
        let redis = |url: String| BusSpec::Redis { url };
        match given {
            Some("memory") => Ok(BusSpec::Memory),
            Some("redis") => match stream::url_from_env(env) {
                Some(url) => url.map(redis).map_err(|e| SpecError::Env(e.to_string())),
                None => Err(SpecError::NoRedisUrl),
            },
            Some(b) if b.starts_with("redis://") || b.starts_with("rediss://") => {
                Ok(redis(b.to_string()))
            }
            Some(b) => Err(SpecError::Unknown(stream::redact(b))),
            None => match stream::url_from_env(env) {
                Some(url) => url.map(redis).map_err(|e| SpecError::Env(e.to_string())),
                None => Ok(BusSpec::Memory),
            },
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, BusSpec::Redis { .. })
    }
}

/// Where a bus keeps what it needs besides storage.
pub struct BusOptions {
    /// The embedded bus's running logs (`<data-dir>/logs`).
    pub log_dir: PathBuf,
    pub limits: LogLimits,
    /// A private CA for `rediss://` (the `REDIS_CA_CERT` file).
    pub redis_ca: Option<PathBuf>,
}

/// Why a bus could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the log directory {}: {source}", path.display())]
    LogDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Client(String),
    #[error(transparent)]
    Unreachable(#[from] BusError),
}

/// Opens the bus `spec` names. A Redis bus must answer now: a server does not start on
/// a bus it cannot reach.
pub async fn open(
    spec: &BusSpec,
    storage: &DynStorage,
    options: BusOptions,
) -> Result<Arc<dyn LogBus>, OpenError> {
    match spec {
        BusSpec::Memory => {
            let bus = MemoryBus::new(storage.clone(), options.log_dir.clone(), options.limits)
                .map_err(|source| OpenError::LogDir {
                    path: options.log_dir,
                    source,
                })?;
            Ok(Arc::new(bus))
        }
        BusSpec::Redis { url } => {
            let client = stream::client(url, options.redis_ca.as_deref())
                .map_err(|e| OpenError::Client(e.to_string()))?;
            let stream = stream::LogStream::new(client)
                .map_err(|e| OpenError::Client(format!("{}: {e}", stream::redact(url))))?;
            let bus = RedisBus::new(stream, storage.clone(), options.limits);
            bus.check().await?;
            Ok(Arc::new(bus))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let none = |_: &str| None;
        assert_eq!(BusSpec::resolve(None, none), Ok(BusSpec::Memory));
        assert_eq!(BusSpec::resolve(Some("memory"), none), Ok(BusSpec::Memory));
        assert_eq!(
            BusSpec::resolve(Some("redis"), none),
            Err(SpecError::NoRedisUrl)
        );
        let env = |k: &str| (k == "REDIS_URL").then(|| "redis://r:1/".to_string());
        assert_eq!(
            BusSpec::resolve(None, env),
            Ok(BusSpec::Redis {
                url: "redis://r:1/".into()
            })
        );
        let spec = BusSpec::resolve(Some("rediss://u:pw@h:6380/"), none).unwrap();
        assert!(spec.is_shared());
        assert_eq!(spec.to_string(), "rediss://u:***@h:6380/");
        let err = BusSpec::resolve(Some("nats://u:pw@h/"), none).unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
    }
}
