//! Certificates by ACME (RFC 8555) for custom domains: every `--acme-interval-secs` a
//! server looks for domains due (new, failed past their backoff, or two thirds into
//! their certificate's lifetime), takes a domain's lease in the database (so replicas
//! place one order per domain), checks DNS, CAA and the challenge's path itself
//! (HTTP-01, or TLS-ALPN-01 with `--acme-challenge tls-alpn-01`), orders,
//! and stores the certificate where every proxy reads it. Each attempt is recorded with
//! what it saw and the fix (`cdeploy domains inspect`).
//!
//! # Layout
//! * this file — the loop, leases, backoff and what an attempt leaves behind.
//! * [`check`] — DNS (from the operator's resolver), CAA, and the verdicts' fixes.
//! * [`issue`] — one attempt: the checks, the self-check, the order.
//! * [`account`] — the platform's ACME account, sealed in storage.
//! * [`ari`] — renewal windows from the CA (ARI, RFC 9773), when it offers them.
//! * [`dns01`] — the TXT record of the platform's own wildcard: the operator's DNS hook,
//!   or dynamic updates (RFC 2136) signed with TSIG.
//! * [`alpn`] — TLS-ALPN-01: the challenge certificate and its self-check.
//! * [`reseal`] — certificate and account keys sealed again with the current key.
//! * [`retry`] — when a CA that refused with its rate limit is asked again.

pub mod account;
pub mod alpn;
pub mod ari;
pub mod check;
pub mod dns01;
pub mod issue;
pub mod reseal;
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use cdeploy_core::api::DomainAttempt;
use cdeploy_core::layout;
use tokio_util::sync::CancellationToken;

use crate::config::Acme;

use crate::db::{AttemptOutcome, AttemptRow, DomainRow};
use crate::service::domains::{
    publish_route, renew_at, republish_route, rfc3339_us, ATTEMPTS_KEPT,
};
use crate::service::App;

/// How long a server may hold a domain's lease (an order takes well under this).
const LEASE: Duration = Duration::from_secs(600);
/// The longest wait between failed attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// Stores the operator's certificate (`--tls-cert`, `--tls-key`) under every name it
/// holds, where the proxies look for it (`*.<domain>` for a wildcard).
pub async fn store_operator_cert(app: &App) -> anyhow::Result<()> {
    use anyhow::Context;
    let Some((chain_path, key_path)) = &app.config.https.operator_cert else {
        return Ok(());
    };
    let chain = std::fs::read_to_string(chain_path)
        .with_context(|| format!("--tls-cert {}", chain_path.display()))?;
    let key = std::fs::read_to_string(key_path)
        .with_context(|| format!("--tls-key {}", key_path.display()))?;
    let (not_before, not_after) =
        issue::validity(&chain).map_err(|e| anyhow::anyhow!("--tls-cert: {e}"))?;
    let names = issue::dns_names(&chain).map_err(|e| anyhow::anyhow!("--tls-cert: {e}"))?;
    anyhow::ensure!(
        !names.is_empty(),
        "--tls-cert: the certificate names no DNS name"
    );
    for name in names {
        let cert = cdeploy_core::domains::StoredCert {
            chain_pem: chain.clone(),
            key: cdeploy_core::domains::StoredKey::store(
                &name,
                &key,
                app.config.protection_keys.as_deref(),
            ),
            not_before,
            not_after,
            issuer: "operator".into(),
        };
        store_cert(app, &name, &cert)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        tracing::info!(%name, "the operator's certificate is served");
    }
    Ok(())
}

/// Starts the loop that verifies domains and, with a CA, gets their certificates.
pub fn start(app: Arc<App>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let acme = app.config.https.acme.clone();
    let interval = app.config.https.check_interval;
    let dns = check::Dns::new(app.config.https.dns_server)?;
    let owner = format!("server-{}", cdeploy_core::ids::random_id(12));
    tokio::spawn(async move {
        if acme.as_ref().is_some_and(|a| a.wildcard) {
            if let Err(e) = want_wildcard(&app).await {
                tracing::warn!(error = %e, "certificates: cannot record the platform's wildcard");
            }
        }
        loop {
            if let Err(e) = tick(&app, acme.as_ref(), &dns, &owner).await {
                tracing::warn!(error = %e, "domains: a round failed");
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.cancelled() => return,
            }
        }
    });
    Ok(())
}

/// The platform's `*.<domain>` as a domain of no project, so it is leased, attempted,
/// renewed and inspected like the others (admins only: it names no project).
async fn want_wildcard(app: &App) -> anyhow::Result<()> {
    let host = app.config.domain.split(':').next().unwrap_or_default();
    let row = DomainRow {
        name: format!("*.{host}"),
        slug: String::new(),
        branch: None,
        redirect_to: None,
        https_redirect: false,
        hsts: None,
        created_at: cdeploy_core::now_rfc3339(),
        state: "pending".into(),
        cert_not_before: None,
        cert_not_after: None,
        failures: 0,
        next_attempt_us: 0,
        verify_token: String::new(),
        verified: true,
    };
    app.store.insert_domain(&row).await?;
    Ok(())
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Attempts run at once by one server (each its own domain's).
const PARALLEL: usize = 4;
/// An attempt's deadline, well inside its lease.
const ATTEMPT_DEADLINE: Duration = Duration::from_secs(300);

/// One round: the due domains, soonest first, a few at once, each under its lease.
async fn tick(app: &App, acme: Option<&Acme>, dns: &check::Dns, owner: &str) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let now = now_us();
    let mut due: Vec<DomainRow> = app
        .store
        .list_domains(None)
        .await?
        .into_iter()
        .filter(|d| d.next_attempt_us <= now && (acme.is_some() || !d.verified))
        .collect();
    due.sort_by_key(|d| d.next_attempt_us);
    futures_util::stream::iter(due)
        .for_each_concurrent(PARALLEL, |row| async move {
            use futures_util::FutureExt;
            let name = row.name.clone();
            // A panic in a client library (a CA's absurd Retry-After has made one
            // overflow a clock) ends this attempt, not the loop.
            let attempt = std::panic::AssertUnwindSafe(leased(app, acme, dns, owner, row));
            match attempt.catch_unwind().await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(domain = %name, error = %e, "domains: an attempt could not be recorded")
                }
                Err(_) => tracing::error!(domain = %name, "domains: an attempt panicked"),
            }
        })
        .await;
    Ok(())
}

/// An attempt on one domain, if this server gets its lease.
async fn leased(
    app: &App,
    acme: Option<&Acme>,
    dns: &check::Dns,
    owner: &str,
    row: DomainRow,
) -> anyhow::Result<()> {
    let now = now_us();
    let until = now + LEASE.as_micros() as i64;
    if !app
        .store
        .take_domain_lease(&row.name, owner, now, until)
        .await?
    {
        return Ok(());
    }
    let outcome =
        match tokio::time::timeout(ATTEMPT_DEADLINE, run_attempt(app, acme, dns, &row)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let mut report = DomainAttempt {
                    at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    ..DomainAttempt::default()
                };
                let interval = app.config.https.check_interval;
                failed(
                    interval,
                    &row,
                    &mut report,
                    false,
                    "timeout",
                    None,
                    "the attempt took more than 5 minutes; it is retried".into(),
                )
            }
        };
    app.store
        .finish_domain_attempt(&row.name, owner, &outcome)
        .await?;
    // The route says whether to redirect to HTTPS: that needs the certificate. (The
    // platform's wildcard has no route: its names are the projects'.)
    if let Some(updated) = app
        .store
        .get_domain(&row.name)
        .await?
        .filter(|d| !d.slug.is_empty() && d.verified)
    {
        republish_route(app, &updated).await?;
    }
    Ok(())
}

/// An attempt: verification first (a domain a tenant added is served once DNS proves
/// it), then, with a CA, the certificate. Its report is recorded.
async fn run_attempt(
    app: &App,
    acme: Option<&Acme>,
    dns: &check::Dns,
    row: &DomainRow,
) -> AttemptOutcome {
    let started = chrono::Utc::now();
    let mut report = DomainAttempt {
        at: started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ..DomainAttempt::default()
    };
    let interval = app.config.https.check_interval;
    let has_cert = row
        .cert_not_after
        .is_some_and(|na| na > chrono::Utc::now().timestamp());
    let outcome = match verify(app, dns, row, &mut report).await {
        Err(fix) => failed(interval, row, &mut report, has_cert, "verify", None, fix),
        Ok(()) => match acme {
            None => {
                report.ok = true;
                report.stage = "verified".into();
                AttemptOutcome {
                    state: row.state.clone(),
                    failures: 0,
                    next_attempt_us: i64::MAX,
                    cert: None,
                }
            }
            Some(acme) => match renewal(app, acme, row, has_cert).await {
                // Not an attempt: nothing is recorded, the next look is set.
                Renewal::Wait(outcome) => return outcome,
                Renewal::Now(replaces) => {
                    certify(app, acme, dns, row, &mut report, has_cert, replaces).await
                }
            },
        },
    };
    let attempt = AttemptRow {
        id: cdeploy_core::ids::random_id(16),
        name: row.name.clone(),
        at: report.at.clone(),
        at_us: started.timestamp_micros(),
        ok: report.ok,
        report: serde_json::to_string(&report).unwrap_or_default(),
    };
    if let Err(e) = app
        .store
        .insert_domain_attempt(&attempt, ATTEMPTS_KEPT)
        .await
    {
        tracing::warn!(domain = %row.name, error = %e, "cannot record the attempt");
    }
    outcome
}

/// Verifies a domain not yet verified, recording it.
async fn verify(
    app: &App,
    dns: &check::Dns,
    row: &DomainRow,
    report: &mut DomainAttempt,
) -> Result<(), String> {
    if row.verified {
        return Ok(());
    }
    report.stage = "verify".into();
    report.dns = dns.answer(&row.name).await;
    let platform = app.config.domain.split(':').next().unwrap_or_default();
    let own = format!("{}.{platform}", row.slug);
    dns.verify(&row.name, &row.verify_token, &own, &report.dns.cname)
        .await?;
    let mut verified = row.clone();
    verified.verified = true;
    app.store
        .update_domain(&verified)
        .await
        .map_err(|e| format!("cannot record the verification: {e}"))?;
    // Served from now on: a TLS-ALPN-01 check is answered only for a domain the
    // proxies know, and the order follows at once.
    publish_route(app, &verified)
        .await
        .map_err(|e| format!("cannot publish the verified domain: {e}"))?;
    tracing::info!(domain = %row.name, slug = %row.slug, "domain verified");
    Ok(())
}

/// Whether a domain due is ordered a certificate now.
enum Renewal {
    /// Yes, replacing this certificate when its CA named a window for it.
    Now(Option<instant_acme::CertificateIdentifier<'static>>),
    /// Not yet: the CA's window says later (the outcome sets the next look).
    Wait(AttemptOutcome),
}

/// How long to wait before asking the CA about a window again after it did not answer
/// (or gave one not to follow), at least.
const ASK_AGAIN: Duration = Duration::from_secs(3600);
/// How long the CA gets to answer about a window.
const WINDOW_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether a domain due is ordered a certificate now. Without a served certificate, yes
/// (new or failed). With one: as its CA's renewal window (ARI) says when it gives one,
/// else two thirds into its lifetime; until then the domain waits, and the CA is asked
/// again as it says (an hour after it did not answer).
async fn renewal(app: &App, acme: &Acme, row: &DomainRow, has_cert: bool) -> Renewal {
    let (Some(not_before), Some(not_after), true) =
        (row.cert_not_before, row.cert_not_after, has_cert)
    else {
        return Renewal::Now(None);
    };
    let interval = app.config.https.check_interval;
    let now = now_us();
    let two_thirds = renew_at(not_before, not_after) * 1_000_000;
    let ask_again = now + ASK_AGAIN.max(interval).as_micros() as i64;
    let wait = |next_attempt_us| {
        Renewal::Wait(AttemptOutcome {
            state: row.state.clone(),
            failures: row.failures,
            next_attempt_us,
            cert: None,
        })
    };
    // Two thirds into the lifetime, asking the CA again meanwhile when `ask` is given.
    let by_lifetime = |ask: Option<i64>| {
        if now >= two_thirds {
            Renewal::Now(None)
        } else {
            wait(ask.map_or(two_thirds, |at| at.min(two_thirds)))
        }
    };
    // Only the CA that issued a certificate has a window for it.
    let stored: Option<cdeploy_core::domains::StoredCert> = match cdeploy_storage::get_json(
        app.storage.as_ref(),
        &layout::cert(&row.name),
    )
    .await
    {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!(domain = %row.name, error = %e, "cannot read the served certificate");
            return by_lifetime(Some(ask_again));
        }
    };
    let Some(stored) = stored.filter(|c| c.issuer == acme.directory) else {
        return by_lifetime(None);
    };
    match ca_window(app, acme, &stored.chain_pem).await {
        Ok(Some(window)) => match ari::plan(&window, (not_before, not_after), now, interval) {
            Some(ari::Plan::Renew) => {
                tracing::info!(domain = %row.name, window = %window.describe(), "renewing inside the CA's renewal window");
                Renewal::Now(Some(window.id))
            }
            Some(ari::Plan::LookAt(at)) => wait(at),
            None => {
                tracing::warn!(domain = %row.name, window = %window.describe(), "the CA's renewal window is not one to follow (it ends before it starts, or opens after expiry)");
                by_lifetime(Some(ask_again))
            }
        },
        Ok(None) => by_lifetime(None),
        Err(e) => {
            tracing::warn!(domain = %row.name, error = %e, "no renewal window from the CA");
            by_lifetime(Some(ask_again))
        }
    }
}

/// The CA's renewal window for a certificate it issued (`None`: it offers none), within
/// [`WINDOW_TIMEOUT`].
async fn ca_window(app: &App, acme: &Acme, chain_pem: &str) -> Result<Option<ari::Window>, String> {
    let ask = async {
        let account = account::account(app, acme)
            .await
            .map_err(|e| format!("{e:#}"))?;
        ari::window(&account, chain_pem).await
    };
    tokio::time::timeout(WINDOW_TIMEOUT, ask)
        .await
        .map_err(|_| "the CA did not answer about the renewal window within 15 s".to_string())?
}

/// When a certificate just issued is looked at again: as its CA's renewal window says,
/// else two thirds into its lifetime (asking the CA again meanwhile when it did not
/// answer).
async fn first_look(app: &App, acme: &Acme, cert: &cdeploy_core::domains::StoredCert) -> i64 {
    let two_thirds = renew_at(cert.not_before, cert.not_after) * 1_000_000;
    let interval = app.config.https.check_interval;
    let now = now_us();
    let validity = (cert.not_before, cert.not_after);
    match ca_window(app, acme, &cert.chain_pem).await {
        Ok(Some(window)) => match ari::plan(&window, validity, now, interval) {
            Some(ari::Plan::LookAt(at)) => at,
            // (Not for a new certificate: its first tenth is never renewed.)
            Some(ari::Plan::Renew) => now + interval.as_micros() as i64,
            None => two_thirds,
        },
        Ok(None) => two_thirds,
        Err(e) => {
            tracing::warn!(error = %e, "no renewal window from the CA for a new certificate");
            two_thirds.min(now + ASK_AGAIN.max(interval).as_micros() as i64)
        }
    }
}

/// The certificate attempt, and what it leaves behind.
async fn certify(
    app: &App,
    acme: &Acme,
    dns: &check::Dns,
    row: &DomainRow,
    report: &mut DomainAttempt,
    has_cert: bool,
    replaces: Option<instant_acme::CertificateIdentifier<'static>>,
) -> AttemptOutcome {
    let interval = app.config.https.check_interval;
    match issue::attempt(app, acme, dns, row, report, replaces).await {
        Ok(cert) => {
            // Removed (or moved) while the order ran: its certificate is not stored.
            let still = app.store.get_domain(&row.name).await.ok().flatten();
            if still.is_none_or(|d| d.slug != row.slug) {
                return failed(
                    interval,
                    row,
                    report,
                    has_cert,
                    "store",
                    None,
                    "the domain was removed while its certificate was ordered".into(),
                );
            }
            match store_cert(app, &row.name, &cert).await {
                Ok(()) => {
                    report.ok = true;
                    report.stage = "issued".into();
                    tracing::info!(domain = %row.name, not_after = cert.not_after, "certificate issued");
                    AttemptOutcome {
                        state: "active".into(),
                        failures: 0,
                        next_attempt_us: first_look(app, acme, &cert).await,
                        cert: Some((cert.not_before, cert.not_after)),
                    }
                }
                Err(e) => failed(interval, row, report, has_cert, "store", None, e),
            }
        }
        Err(f) => failed(interval, row, report, has_cert, f.stage, f.ca_error, f.fix),
    }
}

/// A failed attempt's outcome: retried after a backoff that doubles (from the check
/// interval, at most a day); a certificate still valid stays served.
fn failed(
    interval: Duration,
    row: &DomainRow,
    report: &mut DomainAttempt,
    has_cert: bool,
    stage: &str,
    ca_error: Option<String>,
    fix: String,
) -> AttemptOutcome {
    let failures = row.failures + 1;
    let backoff = interval
        .saturating_mul(1u32 << (failures - 1).clamp(0, 16) as u32)
        .min(MAX_BACKOFF);
    let now = now_us();
    let mut next = now + backoff.as_micros() as i64;
    let mut fix = fix;
    if let Some(until) = ca_error
        .as_deref()
        .and_then(|e| retry::rate_limited_until(e, now))
    {
        next = next.max(until);
        fix = format!(
            "the CA's rate limit is reached: the next attempt waits until {}, when the CA said to retry",
            rfc3339_us(until)
        );
    }
    tracing::warn!(domain = %row.name, %stage, %fix, ca_error = ?ca_error, "certificate attempt failed");
    report.stage = stage.to_string();
    report.ca_error = ca_error;
    report.fix = Some(fix);
    report.next_retry = Some(rfc3339_us(next));
    AttemptOutcome {
        state: if has_cert { "active" } else { "failed" }.into(),
        failures,
        next_attempt_us: next,
        cert: None,
    }
}

/// Writes the certificate where the proxies read it, and makes the embedded one forget
/// the old.
async fn store_cert(
    app: &App,
    name: &str,
    cert: &cdeploy_core::domains::StoredCert,
) -> Result<(), String> {
    cdeploy_storage::put_json(app.storage.as_ref(), &layout::cert(name), cert)
        .await
        .map_err(|e| format!("cannot store the certificate: {e}"))?;
    if let Some(proxy) = &app.lifecycle.proxy {
        proxy.invalidate_cert(name).await;
    }
    Ok(())
}
