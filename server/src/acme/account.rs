//! The platform's ACME account: created once per CA (with External Account Binding when
//! the CA wants it), its credentials kept in storage (`acme/account.json`) sealed with
//! the protection keyring, so every server uses the same account.

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use cdeploy_core::domains::StoredKey;
use cdeploy_core::layout;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use instant_acme::{Account, AccountCredentials, BodyWrapper, ExternalAccountKey, NewAccount};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::config::Acme;
use crate::service::App;

/// `acme/account.json`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct StoredAccount {
    directory: String,
    /// The credentials' JSON (it holds the account's private key).
    pub(super) credentials: StoredKey,
}

/// What the sealed credentials are bound to.
pub(super) const SEALED_AS: &str = "acme-account";

type Http = HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

/// The HTTP client for the CA's API: the operator's roots (`--acme-root`), else the
/// system's.
fn http(acme: &Acme) -> anyhow::Result<Http> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?;
    let tls = match &acme.root {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("--acme-root {}", path.display()))?
            {
                roots.add(cert.with_context(|| format!("--acme-root {}", path.display()))?)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(HyperClient::builder(TokioExecutor::new()).build(connector))
}

/// The account, from storage or created now.
pub async fn account(app: &App, acme: &Acme) -> anyhow::Result<Account> {
    let keys = app.config.protection_keys.as_deref();
    let stored: Option<StoredAccount> =
        cdeploy_storage::get_json(app.storage.as_ref(), layout::ACME_ACCOUNT).await?;
    if let Some(stored) = stored.filter(|s| s.directory == acme.directory) {
        // One that no longer opens (the protection key changed) is replaced by a new
        // account, rather than failing every order from now on.
        match stored.credentials.open(SEALED_AS, keys) {
            Ok(json) => {
                let credentials: AccountCredentials = serde_json::from_str(&json)?;
                return Account::builder_with_http(Box::new(http(acme)?))
                    .from_credentials(credentials)
                    .await
                    .context("the stored ACME account does not load");
            }
            Err(e) => {
                tracing::warn!(error = %e, "the stored ACME account does not open: making a new one")
            }
        }
    }
    let contact: Vec<String> = acme.email.iter().map(|e| format!("mailto:{e}")).collect();
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let eab = acme
        .eab
        .as_ref()
        .map(|(kid, key)| ExternalAccountKey::new(kid.clone(), key));
    let (account, credentials) = Account::builder_with_http(Box::new(http(acme)?))
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            acme.directory.clone(),
            eab.as_ref(),
        )
        .await
        .context("the CA refused a new account")?;
    let json = serde_json::to_string(&credentials)?;
    let stored = StoredAccount {
        directory: acme.directory.clone(),
        credentials: StoredKey::store(SEALED_AS, &json, keys),
    };
    cdeploy_storage::put_json(app.storage.as_ref(), layout::ACME_ACCOUNT, &stored).await?;
    Ok(account)
}
