//! One attempt at a domain's certificate: the checks, then an order answered by HTTP-01
//! (the key authorization in storage, where every proxy finds it) or TLS-ALPN-01
//! (`alpn`), or for the platform's wildcard DNS-01 through the operator's hook or a
//! dynamic update (one answering loop for the three), the certificate and its key
//! stored for the proxies. Every step is written down for `domains inspect`.

use std::net::IpAddr;
use std::time::Duration;

use cdeploy_core::api::DomainAttempt;
use cdeploy_core::domains::{StoredCert, StoredKey};
use cdeploy_core::layout;
use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeType, Identifier, NewOrder,
    OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::check::{caa_verdict, dns_verdict, Dns};
use crate::config::{Acme, Challenge, DnsWriter};
use crate::db::DomainRow;
use crate::service::App;

/// How long a CA gets to validate and issue.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

/// A failed step: where, and what the report says.
pub struct Failed {
    pub stage: &'static str,
    pub ca_error: Option<String>,
    pub fix: String,
}

impl Failed {
    /// A step of ours that failed, with its fix (the CA was not asked).
    fn at(stage: &'static str, fix: String) -> Failed {
        Failed {
            stage,
            ca_error: None,
            fix,
        }
    }
}

/// How an order's challenges are answered.
enum Answer<'a> {
    /// The key authorization in storage, where every proxy serves it.
    Http01,
    /// A challenge certificate in storage, which every proxy's TLS listener answers
    /// `acme-tls/1` with (`alpn`).
    TlsAlpn01,
    /// A TXT record set by the operator's hook or a dynamic update.
    Dns01 { dns: &'a Dns, writer: &'a DnsWriter },
}

/// What answering left behind, undone once the CA has looked.
enum Undo<'a> {
    Stored(String),
    Record {
        writer: &'a DnsWriter,
        fqdn: String,
        value: String,
    },
}

/// Runs the checks and, when they pass, the order. The report is filled in as it goes.
pub async fn attempt(
    app: &App,
    acme: &Acme,
    dns: &Dns,
    row: &DomainRow,
    report: &mut DomainAttempt,
    replaces: Option<CertificateIdentifier<'static>>,
) -> Result<StoredCert, Failed> {
    if let Some(base) = row.name.strip_prefix("*.") {
        return wildcard(app, acme, dns, base, report, replaces).await;
    }
    report.stage = "dns".into();
    report.dns = dns.answer(&row.name).await;
    let platform = app.config.domain.split(':').next().unwrap_or_default();
    let target = format!("{}.{platform}", row.slug);
    dns_verdict(
        &row.name,
        &report.dns,
        &app.config.https.public_ips,
        &target,
    )
    .map_err(|fix| Failed::at("dns", fix))?;
    report.stage = "caa".into();
    caa_verdict(&report.dns.caa, ca_identity(&acme.directory))
        .map_err(|fix| Failed::at("caa", fix))?;
    report.stage = "self-check".into();
    let checked = match platform_ips(app, &row.name, &report.dns.addresses) {
        Err(e) => Err(e),
        Ok(ips) => match acme.challenge {
            Challenge::Http01 => self_check(app, acme, &row.name, &ips).await,
            Challenge::TlsAlpn01 => {
                super::alpn::self_check(app, &row.name, &ips, acme.tls_port).await
            }
        },
    };
    report.self_check = Some(match (&checked, acme.challenge) {
        (Ok(()), Challenge::Http01) => "ok: the challenge path reaches this platform".into(),
        (Ok(()), Challenge::TlsAlpn01) => {
            "ok: a TLS-ALPN-01 handshake reaches this platform".into()
        }
        (Err(e), _) => e.clone(),
    });
    checked.map_err(|e| Failed::at("self-check", format!("{e}: the CA will see the same")))?;
    report.stage = "order".into();
    let account = account_for(app, acme).await?;
    let answer = match acme.challenge {
        Challenge::Http01 => Answer::Http01,
        Challenge::TlsAlpn01 => Answer::TlsAlpn01,
    };
    order(app, acme, &account, (&row.name, replaces), answer, report).await
}

/// The platform's wildcard: CAA, then an order answered by DNS-01.
async fn wildcard(
    app: &App,
    acme: &Acme,
    dns: &Dns,
    base: &str,
    report: &mut DomainAttempt,
    replaces: Option<CertificateIdentifier<'static>>,
) -> Result<StoredCert, Failed> {
    let Some(writer) = &acme.dns_writer else {
        return Err(Failed::at(
            "dns",
            "a wildcard needs --acme-dns-hook or --acme-dns-rfc2136".into(),
        ));
    };
    report.stage = "caa".into();
    report.dns.server = dns.server().to_string();
    report.dns.caa = dns.caa_of(base).await;
    caa_verdict(&report.dns.caa, ca_identity(&acme.directory))
        .map_err(|fix| Failed::at("caa", fix))?;
    report.stage = "order".into();
    let account = account_for(app, acme).await?;
    let name = format!("*.{base}");
    let answer = Answer::Dns01 { dns, writer };
    order(app, acme, &account, (&name, replaces), answer, report).await
}

/// The name CAA records give the CA by, when known.
fn ca_identity(directory: &str) -> Option<&'static str> {
    directory
        .contains(".letsencrypt.org/")
        .then_some("letsencrypt.org")
}

/// The addresses DNS gives for `name` (at most 8), each of which the CA may ask, when
/// every one is the platform's (the operator's `--public-ip`, else any public one): a
/// self-check is no way to reach the platform's own network.
fn platform_ips(app: &App, name: &str, addresses: &[String]) -> Result<Vec<IpAddr>, String> {
    let ours = &app.config.https.public_ips;
    let public = cdeploy_proxy::upstream::ProxyAllow::default();
    let mut ips = Vec::new();
    for a in addresses.iter().take(8) {
        let Ok(ip) = a.parse::<std::net::IpAddr>() else {
            continue;
        };
        let allowed = if ours.is_empty() {
            public.permits(ip)
        } else {
            ours.contains(&ip)
        };
        if !allowed {
            return Err(format!(
                "{name} resolves to {ip}, which is not this platform's address"
            ));
        }
        ips.push(ip);
    }
    if ips.is_empty() {
        return Err(format!("{name} has no address to check"));
    }
    Ok(ips)
}

/// Fetches a token this server just stored from `http://<name>:<port>/.well-known/…`
/// at each of `ips`, as the CA may. Redirects are not followed, at most 4 KiB is read,
/// and the report says only whether the platform answered.
async fn self_check(app: &App, acme: &Acme, name: &str, ips: &[IpAddr]) -> Result<(), String> {
    let token = format!("cdeploy-check-{}", cdeploy_core::ids::random_id(24));
    let expected = format!("{token}.{}", cdeploy_core::ids::random_id(32));
    let key = layout::acme_http01(&token);
    app.storage
        .put(&key, bytes::Bytes::from(expected.clone()))
        .await
        .map_err(|e| format!("storage: {e}"))?;
    let mut result = Ok(());
    for &ip in ips {
        let got = fetch_token(name, ip, acme.http_port, &token).await;
        if got.as_deref() != Some(expected.as_str()) {
            result = Err(format!(
                "http://{name}/.well-known/acme-challenge/ at {ip} does not reach this platform"
            ));
            break;
        }
    }
    let _ = app.storage.delete(&key).await;
    result
}

/// The first 4 KiB of what `http://<name>:<port>/.well-known/acme-challenge/<token>`
/// answers at `ip` with `200`, if anything.
async fn fetch_token(name: &str, ip: IpAddr, port: u16, token: &str) -> Option<String> {
    use futures_util::StreamExt;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .resolve(name, std::net::SocketAddr::new(ip, port))
        .build()
        .ok()?;
    let url = format!(
        "http://{name}:{port}{}{token}",
        cdeploy_proxy::ACME_CHALLENGE_PREFIX
    );
    let resp = client.get(&url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.ok()?);
        if body.len() > 4096 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&body).trim().to_string())
}

/// The order itself: the challenges answered as `answer` says, what that left behind
/// undone once the CA has looked, a fresh key, the chain.
async fn order(
    app: &App,
    acme: &Acme,
    account: &Account,
    (name, replaces): (&str, Option<CertificateIdentifier<'static>>),
    answer: Answer<'_>,
    report: &mut DomainAttempt,
) -> Result<StoredCert, Failed> {
    let mut order = new_order(account, name, replaces, report).await?;
    let mut undo = Vec::new();
    let answered = answer_challenges(app, &answer, &mut order, &mut undo).await;
    let ready = poll_ready(&mut order, answered).await;
    for left in undo {
        match left {
            Undo::Stored(key) => {
                let _ = app.storage.delete(&key).await;
            }
            Undo::Record {
                writer,
                fqdn,
                value,
            } => {
                if let Err(e) = super::dns01::write(writer, false, &fqdn, &value).await {
                    tracing::warn!(%fqdn, error = %e, "a DNS-01 record was not cleared");
                }
            }
        }
    }
    complete(app, acme, &mut order, name, ready, report).await
}

/// A failure in the CA's words.
fn ca_failed(stage: &'static str, e: String) -> Failed {
    Failed {
        stage,
        ca_error: Some(e),
        fix: "see the CA's words; the attempt is retried with backoff".into(),
    }
}

/// The platform's account, or the attempt's failure at `order`.
async fn account_for(app: &App, acme: &Acme) -> Result<Account, Failed> {
    super::account::account(app, acme).await.map_err(|e| {
        let said = format!("{e:#}");
        let fix = if said.contains("externalAccountRequired") {
            "the CA requires External Account Binding: give the key id and HMAC key it issued as --acme-eab-kid and --acme-eab-hmac-key"
        } else {
            "the CA refused or could not be reached; the attempt is retried"
        };
        Failed {
            stage: "order",
            ca_error: Some(said),
            fix: fix.into(),
        }
    })
}

/// A new order for `name`, naming the certificate it `replaces` when the CA gave a
/// renewal window for it; the attempt is at its challenges then.
async fn new_order(
    account: &Account,
    name: &str,
    replaces: Option<CertificateIdentifier<'static>>,
    report: &mut DomainAttempt,
) -> Result<instant_acme::Order, Failed> {
    let ids = [Identifier::Dns(name.to_string())];
    let plain = NewOrder::new(&ids);
    let order = match replaces {
        Some(id) => match account.new_order(&NewOrder::new(&ids).replaces(id)).await {
            // A CA may refuse to replace a certificate (another order replaced it
            // already), or ignore `replaces` (its order then cannot be followed): a
            // plain order renews it all the same. Other refusals stand.
            Err(e) if replaces_refused(&e) => {
                tracing::info!(domain = %name, error = %e, "the CA did not take an order that replaces; ordering without");
                account.new_order(&plain).await
            }
            placed => placed,
        },
        None => account.new_order(&plain).await,
    }
    .map_err(|e| ca_failed("order", e.to_string()))?;
    report.stage = "challenge".into();
    Ok(order)
}

/// Whether the CA refused (or ignored) an order's `replaces`, rather than the order.
fn replaces_refused(e: &instant_acme::Error) -> bool {
    let said = e.to_string();
    [
        "replaces",
        "error:alreadyReplaced",
        "error:malformed",
        "error:conflict",
    ]
    .iter()
    .any(|s| said.contains(s))
}

/// How long and how often the CA is asked about an order.
fn policy() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(ORDER_TIMEOUT)
}

/// Once the challenges are answered (`answered`): the order's state, as the CA says.
async fn poll_ready(
    order: &mut instant_acme::Order,
    answered: Result<(), Failed>,
) -> Result<OrderStatus, Failed> {
    answered?;
    order
        .poll_ready(&policy())
        .await
        .map_err(|e| ca_failed("challenge", e.to_string()))
}

/// A ready order finalized with a fresh key; the certificate as stored. Not ready: the
/// CA's words.
async fn complete(
    app: &App,
    acme: &Acme,
    order: &mut instant_acme::Order,
    name: &str,
    ready: Result<OrderStatus, Failed>,
    report: &mut DomainAttempt,
) -> Result<StoredCert, Failed> {
    match ready {
        Ok(OrderStatus::Ready) => {}
        Ok(status) => {
            let why = order
                .state()
                .error
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_else(|| format!("the order is {status:?}"));
            return Err(ca_failed("challenge", why));
        }
        Err(failed) => return Err(failed),
    }
    report.stage = "finalize".into();
    let (chain, key_pem) = finalize(order, name, &policy())
        .await
        .map_err(|e| ca_failed("finalize", e))?;
    let (not_before, not_after) = validity(&chain).map_err(|e| ca_failed("finalize", e))?;
    Ok(StoredCert {
        chain_pem: chain,
        key: StoredKey::store(name, &key_pem, app.config.protection_keys.as_deref()),
        not_before,
        not_after,
        issuer: acme.directory.clone(),
    })
}

/// Answers each pending authorization's challenge as `answer` says, and tells the CA
/// (`undo` collects what to remove once it has looked).
async fn answer_challenges<'a>(
    app: &App,
    answer: &Answer<'a>,
    order: &mut instant_acme::Order,
    undo: &mut Vec<Undo<'a>>,
) -> Result<(), Failed> {
    let (kind, label) = match answer {
        Answer::Http01 => (ChallengeType::Http01, "HTTP-01"),
        Answer::TlsAlpn01 => (ChallengeType::TlsAlpn01, "TLS-ALPN-01"),
        Answer::Dns01 { .. } => (ChallengeType::Dns01, "DNS-01"),
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| ca_failed("challenge", e.to_string()))?;
        if authz.status == AuthorizationStatus::Valid {
            continue;
        }
        let Identifier::Dns(name) = authz.identifier().identifier.clone() else {
            return Err(ca_failed(
                "challenge",
                "the CA asked about something other than a DNS name".into(),
            ));
        };
        let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
            ca_failed("challenge", format!("the CA offered no {label} challenge"))
        })?;
        let key_authorization = challenge.key_authorization();
        // What fails here is ours to fix, not the CA's.
        let ours = |e: String| Failed::at("challenge", e);
        match answer {
            Answer::Http01 => {
                let key = layout::acme_http01(&challenge.token);
                let body = bytes::Bytes::from(key_authorization.as_str().to_string());
                app.storage
                    .put(&key, body)
                    .await
                    .map_err(|e| ours(format!("storage: {e}")))?;
                undo.push(Undo::Stored(key));
            }
            Answer::TlsAlpn01 => {
                let digest = key_authorization.digest();
                let key = super::alpn::store_challenge(app, &name, digest.as_ref())
                    .await
                    .map_err(ours)?;
                undo.push(Undo::Stored(key));
            }
            Answer::Dns01 { dns, writer } => {
                let fqdn = format!("_acme-challenge.{name}.");
                let value = key_authorization.dns_value();
                // Undone even when the answer to the update is lost (deleting a record
                // that is not there changes nothing).
                undo.push(Undo::Record {
                    writer,
                    fqdn: fqdn.clone(),
                    value: value.clone(),
                });
                super::dns01::write(writer, true, &fqdn, &value)
                    .await
                    .map_err(ours)?;
                super::dns01::wait_visible(dns, &fqdn, &value)
                    .await
                    .map_err(ours)?;
            }
        }
        challenge
            .set_ready()
            .await
            .map_err(|e| ca_failed("challenge", e.to_string()))?;
    }
    Ok(())
}

/// A new P-256 key and its CSR for `name`; the chain the CA issues, and the key (PEM).
async fn finalize(
    order: &mut instant_acme::Order,
    name: &str,
    policy: &RetryPolicy,
) -> Result<(String, String), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| e.to_string())?;
    let chain = order
        .poll_certificate(policy)
        .await
        .map_err(|e| e.to_string())?;
    Ok((chain, key.serialize_pem()))
}

/// The DNS names (SANs) of the leaf, lower case.
pub fn dns_names(chain_pem: &str) -> Result<Vec<String>, String> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or("no certificate")?
        .map_err(|e| e.to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| e.to_string())?
        .map(|ext| ext.value.general_names.clone())
        .unwrap_or_default();
    Ok(san
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect())
}

/// The leaf's validity, unix seconds.
pub fn validity(chain_pem: &str) -> Result<(i64, i64), String> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or("the CA sent no certificate")?
        .map_err(|e| e.to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}
