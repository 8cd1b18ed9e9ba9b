//! TLS-ALPN-01 (RFC 8737, `--acme-challenge tls-alpn-01`), for a platform whose port 80
//! the CA can't reach (a load balancer that forwards 443 only). The challenge is a
//! self-signed certificate for the name carrying the SHA-256 of the key authorization
//! in its `acmeIdentifier` extension, stored (key sealed) where every proxy finds it;
//! a proxy answers a handshake that asks for ALPN `acme-tls/1` with it, and nothing else.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cdeploy_core::domains::{StoredCert, StoredKey};
use cdeploy_core::layout;
use cdeploy_proxy::ACME_TLS_ALPN;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::service::App;

/// The challenge certificate for `name` that proves `digest` (the SHA-256 of a key
/// authorization), as stored for the proxies.
fn challenge_cert(app: &App, name: &str, digest: &[u8]) -> Result<StoredCert, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok(StoredCert {
        chain_pem: cert.pem(),
        key: StoredKey::store(
            name,
            &key.serialize_pem(),
            app.config.protection_keys.as_deref(),
        ),
        not_before: 0,
        not_after: 0,
        issuer: "tls-alpn-01 challenge".into(),
    })
}

async fn store(app: &App, name: &str, cert: &StoredCert) -> Result<String, String> {
    let key = layout::acme_tls_alpn(name);
    let json = serde_json::to_vec(cert).map_err(|e| e.to_string())?;
    app.storage
        .put(&key, bytes::Bytes::from(json))
        .await
        .map_err(|e| format!("storage: {e}"))?;
    Ok(key)
}

/// Stores the challenge certificate for `name` proving `digest` (the SHA-256 of the
/// CA's key authorization); its storage key, to delete once the CA has looked.
pub async fn store_challenge(app: &App, name: &str, digest: &[u8]) -> Result<String, String> {
    store(app, name, &challenge_cert(app, name, digest)?).await
}

/// Asks each of `ips` at `port` for `name` with ALPN `acme-tls/1`, as the CA will, and
/// checks the answer is a challenge certificate this server just stored.
pub async fn self_check(app: &App, name: &str, ips: &[IpAddr], port: u16) -> Result<(), String> {
    let probe = challenge_cert(app, name, &[0; 32])?;
    let expected =
        CertificateDer::from_pem_slice(probe.chain_pem.as_bytes()).map_err(|e| e.to_string())?;
    let key = store(app, name, &probe).await?;
    let mut result = Ok(());
    for &ip in ips {
        let served = handshake(name, SocketAddr::new(ip, port)).await;
        if served.as_ref() != Ok(&expected) {
            let why = served.err().unwrap_or_else(|| "another certificate".into());
            result = Err(format!(
                "a TLS-ALPN-01 handshake for {name} at {ip}:{port} does not reach this platform ({why})"
            ));
            break;
        }
    }
    let _ = app.storage.delete(&key).await;
    result
}

/// The leaf certificate `addr` answers a TLS-ALPN-01 handshake for `name` with.
async fn handshake(name: &str, addr: SocketAddr) -> Result<CertificateDer<'static>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    let server = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(server, tcp)
            .await
            .map_err(|e| e.to_string())
    };
    let tls = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| "no answer within 10 s".to_string())??;
    let (_, session) = tls.get_ref();
    if session.alpn_protocol() != Some(ACME_TLS_ALPN) {
        return Err("the answer did not speak acme-tls/1".into());
    }
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.clone().into_owned())
        .ok_or_else(|| "no certificate".into())
}

/// The self-check compares the certificate it gets with the one it stored, so any is
/// accepted here, and its handshake signatures unchecked: webpki refuses to parse a
/// certificate with the critical `acmeIdentifier` extension, and the check asks only
/// whether this platform's proxies answer, which the stored probe shows.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
