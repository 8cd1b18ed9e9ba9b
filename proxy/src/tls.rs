//! HTTPS: the proxy's TLS listener. The certificate is picked by SNI from storage
//! (`certs/<name>.json`, else the parent's wildcard, `certs/_wildcard.<parent>.json`),
//! its key opened with the protection keyring when sealed, and each certificate's rustls
//! configuration kept in a cache. HTTP/2 or HTTP/1.1 by ALPN; sessions resume by ticket or by id (one
//! ticketer and one session cache shared by every certificate of this proxy).
//!
//! A CA's TLS-ALPN-01 check (RFC 8737: ALPN `acme-tls/1`) is answered with the challenge
//! certificate the ordering server stored for the name (`acme/tls-alpn-01/<name>.json`),
//! and the connection ends with the handshake.

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

/// The ALPN protocol of a CA's TLS-ALPN-01 check.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

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
        let mut config = self.server_config(name, &stored, false)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.session_storage = self.sessions.cache.clone();
        config.ticketer = self.sessions.ticketer.clone();
        Ok(Some(Arc::new(config)))
    }

    /// The configuration for a TLS-ALPN-01 check of `name`, when an order waits on one
    /// (read from storage each time: a CA makes a few such connections per order).
    async fn challenge_config(&self, name: &str) -> Result<Option<ServerConfig>, CertError> {
        let key = layout::acme_tls_alpn(name);
        let _permit = self.reads.acquire().await.expect("never closed");
        let Some(stored) = get_json::<StoredCert>(self.storage.as_ref(), &key).await? else {
            return Ok(None);
        };
        let mut config = self.server_config(name, &stored, true)?;
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        config.send_tls13_tickets = 0;
        Ok(Some(config))
    }

    /// A server configuration for a stored certificate and its key. A challenge
    /// certificate is served as it is: rustls would refuse its critical `acmeIdentifier`
    /// extension, which only the CA reads.
    fn server_config(
        &self,
        name: &str,
        stored: &StoredCert,
        challenge: bool,
    ) -> Result<ServerConfig, CertError> {
        let invalid = |why: String| CertError::Invalid(name.to_string(), why);
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(stored.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| invalid(e.to_string()))?;
        let pem = stored.key.open(name, self.protection_keys.as_deref())?;
        let key =
            PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_no_client_auth();
        if challenge {
            let key = provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| invalid(e.to_string()))?;
            let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, key));
            return Ok(builder.with_cert_resolver(Arc::new(ChallengeCert(certified))));
        }
        builder
            .with_single_cert(chain, key)
            .map_err(|e| invalid(e.to_string()))
    }

    /// Forgets a certificate (it was renewed or removed).
    pub async fn invalidate_cert(&self, name: &str) {
        self.certs.invalidate(name).await;
    }
}

/// The proxy's TLS handshake for `cdeploy_conn::serve_on`: the client's hello first,
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
            let acme_check = start
                .client_hello()
                .alpn()
                .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
            if acme_check {
                return answer_acme_check(&proxy, start, &sni).await;
            }
            let Some(config) = proxy.tls_config(&sni).await else {
                return Err(std::io::Error::other(format!("no certificate for {sni}")));
            };
            start.into_stream(config).await
        }
    }
}

/// A TLS-ALPN-01 challenge certificate, for whatever the CA's hello asks.
#[derive(Debug)]
struct ChallengeCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for ChallengeCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Answers a CA's TLS-ALPN-01 check with the challenge certificate, then ends the
/// connection (RFC 8737: nothing but the handshake is exchanged). Only a custom domain
/// this proxy serves is looked for (its route is cached), so a stranger's handshakes
/// cost no storage read; no challenge waiting for the name: the handshake fails.
async fn answer_acme_check(
    proxy: &Proxy,
    start: tokio_rustls::StartHandshake<cdeploy_conn::ProgressIo>,
    sni: &str,
) -> std::io::Result<TlsStream<cdeploy_conn::ProgressIo>> {
    let name = sni.trim_end_matches('.').to_ascii_lowercase();
    if !matches!(proxy.custom_domain(&name).await, Ok(Some(_))) {
        return Err(std::io::Error::other(format!(
            "a TLS-ALPN-01 check for {name}, not a domain of this platform"
        )));
    }
    let config = match proxy.challenge_config(&name).await {
        Ok(Some(config)) => config,
        Ok(None) => {
            return Err(std::io::Error::other(format!(
                "a TLS-ALPN-01 check for {name}, which no order waits on"
            )))
        }
        Err(e) => {
            tracing::warn!(%name, error = %e, "TLS-ALPN-01 challenge unavailable");
            return Err(std::io::Error::other(e.to_string()));
        }
    };
    let mut tls = start.into_stream(Arc::new(config)).await?;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
    Err(std::io::Error::other("answered a TLS-ALPN-01 check"))
}
