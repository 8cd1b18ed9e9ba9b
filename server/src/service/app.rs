//! [`App`]: what every operation may use, built once at start (`crate::assemble`).

use std::sync::Arc;

use cdeploy_storage::DynStorage;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::Store;
use crate::dispatch::Dispatcher;
use crate::lifecycle::Lifecycle;

use cdeploy_core::api::codes;

use super::error::{Error, Kind, Result};
use super::{keyring::Keyring, limits};

/// Everything an operation may use: the settings and the services below this layer.
pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub storage: DynStorage,
    pub lifecycle: Arc<Lifecycle>,
    pub dispatcher: Arc<dyn Dispatcher>,
    /// Failed authentications per client address.
    pub auth_failures: limits::AuthLimiter,
    /// Requests per token.
    pub token_rates: limits::TokenLimiter,
    /// KiB of batch-upload members held in memory across all requests (the rest are
    /// spooled to files): stalled or concurrent uploads cannot hold more.
    pub batch_memory: Arc<tokio::sync::Semaphore>,
    /// The connections of the API and the embedded proxy (their counts are metrics).
    pub conns: Arc<cdeploy_conn::Conns>,
    /// Builder API: the blobs of running builds' uploaded sources (each map read once).
    pub source_blobs: moka::future::Cache<String, Arc<std::collections::HashSet<String>>>,
    /// The keys of stored secrets (`None`: this server stores none).
    pub keyring: Option<Arc<Keyring>>,
    /// The embedded proxy's runtimes (server apps' servers), for their logs; `None`
    /// when the proxies run apart.
    pub runtimes: Option<cdeploy_runtime::Runtimes>,
    /// CI issuers' keys, for trusted publishing.
    pub oidc: super::oidc::verify::Issuers,
    /// Fires when the server stops: open event streams end with a 1001 "going away"
    /// close frame, and clients resume with `after=` once a server is back.
    pub shutdown: CancellationToken,
}

impl App {
    /// The keyring, or `503` saying how to give the server one (stored secrets and
    /// webhook secrets both need it).
    pub fn keys(&self) -> Result<&Keyring> {
        self.keyring.as_deref().ok_or_else(|| {
            Error::new(
                Kind::Unavailable,
                codes::UNAVAILABLE,
                "this server has no key to seal secrets with (set CDEPLOY_SECRETS_KEY or --secrets-key-file, the same on every server)",
            )
        })
    }
}
