//! HTTPS: the proxy's TLS listener. The certificate is picked by SNI from storage
//! (`certs/<name>.json`, else the parent's wildcard, `certs/_wildcard.<parent>.json`),
//! its key opened with the protection keyring when sealed, and each certificate's rustls
//! configuration kept in a cache. HTTP/2 or HTTP/1.1 by ALPN; sessions resume by ticket or by id (one
//! ticketer and one session cache shared by every certificate of this proxy).

use std::sync::Arc;

use cdeploy_core::domains::{cert_names, StoredCert};
use cdeploy_core::layout;
use cdeploy_storage::{get_json, StorageError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::Proxy;

/// What every certificate's configuration shares: the session cache and ticket keys.
pub(crate) struct Sessions {
    cache: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
}

impl Sessions {
    pub(crate) fn new() -> Sessions {
        Sessions {
            cache: ServerSessionMemoryCache::new(20_000),
            ticketer: rustls::crypto::ring::Ticketer::new().expect("the ring ticketer starts"),
        }
    }
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions")
    }
}

/// Why a stored certificate cannot be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertError {
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Key(#[from] cdeploy_core::domains::KeyUnreadable),
    #[error("the certificate of {0} does not parse: {1}")]
    Invalid(String, String),
}

impl Proxy {
    /// The TLS configuration for a client that asked for `sni`, if this proxy has a
    /// certificate for it.
    pub(crate) async fn tls_config(&self, sni: &str) -> Option<Arc<ServerConfig>> {
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        for name in cert_names(&sni) {
            let found = self
                .certs
                .try_get_with_by_ref(&name, async { self.load_cert(&name).await })
                .await;
            match found {
                Ok(Some(config)) => return Some(config),
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(%sni, error = %e, "certificate unavailable");
                    return None;
                }
            }
        }
        None
    }

    async fn load_cert(&self, name: &str) -> Result<Option<Arc<ServerConfig>>, CertError> {
        let Some(stored) =
            get_json::<StoredCert>(self.storage.as_ref(), &layout::cert(name)).await?
        else {
            return Ok(None);
        };
        let invalid = |why: String| CertError::Invalid(name.to_string(), why);
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(stored.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| invalid(e.to_string()))?;
        let pem = stored.key.open(name, self.protection_keys.as_deref())?;
        let key =
            PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| invalid(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(|e| invalid(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.session_storage = self.sessions.cache.clone();
        config.ticketer = self.sessions.ticketer.clone();
        Ok(Some(Arc::new(config)))
    }

    /// Forgets a certificate (it was renewed or removed).
    pub async fn invalidate_cert(&self, name: &str) {
        self.certs.invalidate(name).await;
    }
}

/// The proxy's TLS handshake for `cdeploy_conn::serve_with`: the client's hello first,
/// then the certificate its SNI names.
#[derive(Clone)]
pub struct Tls(pub Arc<Proxy>);

impl cdeploy_conn::Handshake for Tls {
    type Stream = TlsStream<cdeploy_conn::ProgressIo>;

    fn handshake(
        &self,
        io: cdeploy_conn::ProgressIo,
    ) -> impl std::future::Future<Output = std::io::Result<Self::Stream>> + Send + 'static {
        let proxy = self.0.clone();
        async move {
            let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
            let start = acceptor.await?;
            let sni = start.client_hello().server_name().map(str::to_string);
            let Some(sni) = sni else {
                return Err(std::io::Error::other("no SNI: no certificate to choose"));
            };
            let Some(config) = proxy.tls_config(&sni).await else {
                return Err(std::io::Error::other(format!("no certificate for {sni}")));
            };
            start.into_stream(config).await
        }
    }
}
