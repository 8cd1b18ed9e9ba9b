//! Custom domains: adding one to a project (`409` when another project has it; an admin
//! can move it), what DNS should say, listing, removing, and the report `domains
//! inspect` shows. What the proxies read is written to storage here
//! (`domains/<name>.json`); certificates are the `acme` module's.

use cdeploy_core::api::{self, AddDomain};
use cdeploy_core::domains::{validate_domain, DomainRoute};
use cdeploy_core::{git, ids, layout};

use super::error::{Error, Result};
use super::App;
use crate::db::DomainRow;

/// Attempts kept per domain (what `inspect` shows).
pub const ATTEMPTS_KEPT: u32 = 20;

/// Most domains of one project.
pub const MAX_DOMAINS_PER_PROJECT: usize = 100;

/// Top-level names no project may have: they are this machine's, a network's or
/// reserved (RFC 6761, RFC 6762, RFC 8375).
const RESERVED_TLDS: [&str; 6] = ["arpa", "local", "localhost", "internal", "invalid", "onion"];

/// Adds `body.name` to project `slug`. `admin`: the caller may move it from another
/// project, and a domain an admin adds is trusted at once; anyone else's is served only
/// once DNS proves it (the `_cdeploy` TXT record, or a CNAME to the project's host).
/// Returns the domain and whether it is new.
pub async fn add(
    app: &App,
    slug: &str,
    body: &AddDomain,
    admin: bool,
) -> Result<(api::Domain, bool)> {
    app.project(slug).await?;
    let name = checked_name(app, &body.name).await?;
    if let Some(branch) = &body.branch {
        checked_branch(slug, branch)?;
    }
    let redirect_to = match &body.redirect_to {
        Some(other) => Some(redirect_target(app, slug, &name, other).await?),
        None => None,
    };
    let existing = app.store.list_domains(Some(slug)).await?;
    if existing.len() >= MAX_DOMAINS_PER_PROJECT && !existing.iter().any(|d| d.name == name) {
        return Err(Error::too_large(format!(
            "{slug} has {MAX_DOMAINS_PER_PROJECT} domains, the most a project may have"
        )));
    }
    let wanted = DomainRow {
        name: name.clone(),
        slug: slug.to_string(),
        branch: body.branch.clone(),
        redirect_to,
        https_redirect: body.https_redirect.unwrap_or(true),
        hsts: body.hsts_max_age.map(|s| format!("max-age={s}")),
        created_at: cdeploy_core::now_rfc3339(),
        state: "pending".into(),
        cert_not_before: None,
        cert_not_after: None,
        failures: 0,
        next_attempt_us: 0,
        verify_token: ids::random_id(32),
        verified: admin,
    };
    let (stored, created) = app.store.insert_domain(&wanted).await?;
    let row = if created {
        stored
    } else if stored.slug != slug && !(admin && body.move_from_other) {
        return Err(Error::conflict(if admin {
            format!(
                "{name} is a domain of project {}; pass move (--move) to take it",
                stored.slug
            )
        } else {
            format!("{name} is a domain of another project")
        }));
    } else {
        // The same project's settings change (its proof stays), or an admin moves it.
        let moved = stored.slug != slug;
        let row = DomainRow {
            created_at: stored.created_at.clone(),
            state: stored.state.clone(),
            cert_not_before: stored.cert_not_before,
            cert_not_after: stored.cert_not_after,
            failures: stored.failures,
            next_attempt_us: stored.next_attempt_us,
            verify_token: stored.verify_token.clone(),
            verified: admin || (stored.verified && !moved),
            ..wanted
        };
        app.store.update_domain(&row).await?;
        row
    };
    if row.verified {
        publish_route(app, &row).await?;
    }
    // A new or failing domain is looked at now (its DNS may just have been fixed); one
    // with a certificate keeps its schedule, so adding it again orders nothing.
    if row.state != "active" {
        app.store.retry_domain_now(&row.name).await?;
    }
    Ok((domain_json(app, &row), created))
}

/// A branch a domain may serve: one with an alias on the project.
fn checked_branch(slug: &str, branch: &str) -> Result<()> {
    git::validate_git_ref(branch).map_err(|e| Error::bad_request(format!("branch: {e}")))?;
    if ids::branch_label(branch, slug).is_none() {
        return Err(Error::bad_request(format!(
            "branch {branch:?} has no alias on {slug} (a slug of 16 letters and digits has none)"
        )));
    }
    Ok(())
}

/// A name a project may add: valid, not the platform's, not reserved, not one the
/// operator's own certificate holds.
async fn checked_name(app: &App, raw: &str) -> Result<String> {
    let name =
        validate_domain(raw, &app.config.domain).map_err(|e| Error::bad_request(e.to_string()))?;
    let tld = name.rsplit('.').next().unwrap_or_default();
    if RESERVED_TLDS.contains(&tld) || name.ends_with(".home.arpa") {
        return Err(Error::bad_request(format!(
            "{name} is under .{tld}, which is reserved: no project may have it"
        )));
    }
    let operator: Option<cdeploy_core::domains::StoredCert> =
        cdeploy_storage::get_json(app.storage.as_ref(), &layout::cert(&name)).await?;
    if operator.is_some_and(|c| c.issuer == "operator") {
        return Err(Error::conflict(format!(
            "{name} is served with the operator's own certificate"
        )));
    }
    Ok(name)
}

/// `redirect_to` must be another domain of the same project.
async fn redirect_target(app: &App, slug: &str, name: &str, other: &str) -> Result<String> {
    let other = validate_domain(other, &app.config.domain)
        .map_err(|e| Error::bad_request(format!("redirect_to: {e}")))?;
    if other == name {
        return Err(Error::bad_request("a domain cannot redirect to itself"));
    }
    match app.store.get_domain(&other).await? {
        Some(d) if d.slug == slug => Ok(other),
        _ => Err(Error::bad_request(format!(
            "redirect_to: {other} is not a domain of {slug}; add it first"
        ))),
    }
}

/// Writes what the proxies read for a domain, and makes the embedded one forget its copy.
pub async fn publish_route(app: &App, row: &DomainRow) -> Result<()> {
    let route = domain_route(row);
    cdeploy_storage::put_json(app.storage.as_ref(), &layout::domain(&row.name), &route).await?;
    if let Some(proxy) = &app.lifecycle.proxy {
        proxy.invalidate_domain(&row.name).await;
    }
    Ok(())
}

/// [`publish_route`] unless storage holds that route already (after each look at a
/// domain's certificate, most of which change nothing: the proxies keep their copies).
pub async fn republish_route(app: &App, row: &DomainRow) -> Result<()> {
    // One that cannot be read is written again.
    let stored: Option<DomainRoute> =
        cdeploy_storage::get_json(app.storage.as_ref(), &layout::domain(&row.name))
            .await
            .ok()
            .flatten();
    if stored.as_ref() == Some(&domain_route(row)) {
        return Ok(());
    }
    publish_route(app, row).await
}

/// What the proxies read for a domain.
fn domain_route(row: &DomainRow) -> DomainRoute {
    DomainRoute {
        slug: row.slug.clone(),
        branch: row.branch.clone(),
        redirect: row.redirect_to.clone(),
        // Only while there is a certificate to redirect to.
        https_redirect: row.https_redirect
            && row
                .cert_not_after
                .is_some_and(|na| na > chrono::Utc::now().timestamp()),
        hsts: row.hsts.clone(),
    }
}

/// The domain `name`, or `404`.
pub async fn get(app: &App, name: &str) -> Result<DomainRow> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    app.store
        .get_domain(&lower)
        .await?
        .ok_or_else(|| Error::not_found(format!("domain {lower:?}")))
}

/// Removes a domain: the proxies stop serving it and its certificate is deleted.
pub async fn remove(app: &App, name: &str) -> Result<DomainRow> {
    let row = get(app, name).await?;
    app.store.delete_domain(&row.name).await?;
    app.storage.delete(&layout::domain(&row.name)).await?;
    app.storage.delete(&layout::cert(&row.name)).await?;
    if let Some(proxy) = &app.lifecycle.proxy {
        proxy.invalidate_domain(&row.name).await;
        proxy.invalidate_cert(&row.name).await;
    }
    Ok(row)
}

/// The domain, its attempts (newest first) and when the next is due.
pub async fn report(app: &App, name: &str) -> Result<api::DomainReport> {
    let row = get(app, name).await?;
    let attempts = app
        .store
        .domain_attempts(&row.name, ATTEMPTS_KEPT)
        .await?
        .into_iter()
        .filter_map(|a| serde_json::from_str::<api::DomainAttempt>(&a.report).ok())
        .collect();
    let next_attempt = (row.next_attempt_us > 0).then(|| rfc3339_us(row.next_attempt_us));
    Ok(api::DomainReport {
        domain: domain_json(app, &row),
        attempts,
        next_attempt,
    })
}

pub fn rfc3339_us(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn rfc3339_s(s: i64) -> String {
    rfc3339_us(s.saturating_mul(1_000_000))
}

/// When a certificate valid from `not_before` to `not_after` is renewed: at two thirds
/// of its lifetime.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before) * 2 / 3
}

pub fn domain_json(app: &App, row: &DomainRow) -> api::Domain {
    let certificate = match (row.cert_not_before, row.cert_not_after) {
        (Some(nb), Some(na)) => Some(api::CertificateInfo {
            not_before: rfc3339_s(nb),
            not_after: rfc3339_s(na),
            renew_at: rfc3339_s(renew_at(nb, na)),
        }),
        _ => None,
    };
    let https = app.config.https.tls_listen.is_some();
    let port = |listen: Option<&str>| {
        listen
            .and_then(|l| l.rsplit_once(':'))
            .map(|(_, p)| p.to_string())
            .filter(|p| p != "443" && p != "80" && p != "0")
            .map(|p| format!(":{p}"))
            .unwrap_or_default()
    };
    let url = if https {
        format!(
            "https://{}{}",
            row.name,
            port(app.config.https.tls_listen.as_deref())
        )
    } else {
        format!(
            "http://{}{}",
            row.name,
            port(Some(app.config.domain.as_str()))
        )
    };
    api::Domain {
        name: row.name.clone(),
        slug: row.slug.clone(),
        branch: row.branch.clone(),
        redirect_to: row.redirect_to.clone(),
        https_redirect: row.https_redirect,
        hsts: row.hsts.clone(),
        state: row.state.clone(),
        verified: row.verified,
        certificate,
        dns: {
            let mut records = dns_records(app, row);
            if !row.verified && !row.verify_token.is_empty() {
                records.push(api::DnsRecord {
                    kind: "TXT".into(),
                    name: format!("_cdeploy.{}", row.name),
                    value: format!("cdeploy-verify={}", row.verify_token),
                });
            }
            records
        },
        url,
        created_at: row.created_at.clone(),
    }
}

/// What to create at the DNS provider: A/AAAA records to the proxy's public addresses
/// for an apex, else a CNAME to the project's own host.
fn dns_records(app: &App, row: &DomainRow) -> Vec<api::DnsRecord> {
    let ips = &app.config.https.public_ips;
    // An apex allows no CNAME record; the platform's wildcard is one record for every
    // project.
    if cdeploy_core::domains::is_apex(&row.name) || row.name.starts_with("*.") {
        if ips.is_empty() {
            return vec![api::DnsRecord {
                kind: "A".into(),
                name: row.name.clone(),
                value: "<this proxy's public IPv4 address (the operator's --public-ip)>".into(),
            }];
        }
        return ips
            .iter()
            .map(|ip| api::DnsRecord {
                kind: if ip.is_ipv4() { "A" } else { "AAAA" }.into(),
                name: row.name.clone(),
                value: ip.to_string(),
            })
            .collect();
    }
    let platform = app.config.domain.split(':').next().unwrap_or_default();
    vec![api::DnsRecord {
        kind: "CNAME".into(),
        name: row.name.clone(),
        value: format!("{}.{platform}", row.slug),
    }]
}
