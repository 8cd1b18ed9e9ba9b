//! Trusted publishing: a project trusts an OIDC issuer (GitHub Actions, GitLab CI, any
//! issuer with OpenID discovery) with claim rules, and a CI job trades its identity
//! token for a deploy token of that project that lives [`TOKEN_SECS`] — no long-lived
//! secret is stored in CI.
//!
//! * A token is verified against the issuer's keys (`verify`), for this server's URL as
//!   audience (`--api-url`), then each rule's claim is compared with its value, one by
//!   one, as strings: never by parsing `sub`. Rules of the two known CIs must bind the
//!   numeric repository and owner ids (a deleted name can be registered again by
//!   someone else): `repository_id` and `repository_owner_id` on GitHub,
//!   `project_id` and `namespace_id` on GitLab.
//! * Each token's `jti` is accepted once.
//! * Every exchange, accepted or refused, is in the audit log with the reason and the
//!   token's claims.
//!
//! # Layout
//! * [`verify`] — an issuer's keys by discovery, a token's signature and times.

pub mod verify;

use std::collections::BTreeMap;

use cdeploy_core::api::{CreateTrust, ExchangeAnswer, ExchangeRequest, Role, Trust};
use cdeploy_core::ids;
use serde_json::Value;

use super::error::{Error, Result};
use super::App;
use crate::db::{AuditRow, TokenRow, TrustRow};

/// How long a token from an exchange lives.
pub const TOKEN_SECS: u64 = 600;
/// Trusts one project may have.
pub const MAX_TRUSTS: usize = 20;
/// GitHub Actions' issuer.
pub const GITHUB: &str = "https://token.actions.githubusercontent.com";
/// GitLab.com's issuer (a self-managed GitLab's is its own URL).
pub const GITLAB: &str = "https://gitlab.com";
/// What tokens from an exchange are named with (and pruned by once expired).
const TOKEN_NAME: &str = "oidc:";

pub fn json(t: &TrustRow) -> Trust {
    Trust {
        id: t.id.clone(),
        project: t.slug.clone(),
        issuer: t.issuer.clone(),
        claims: t.claims.clone(),
        created_at: t.created_at.clone(),
    }
}

/// The claims a trust in `issuer` must bind, if it is a CI whose names can be re-registered.
fn required_ids(issuer: &str) -> &'static [&'static str] {
    match issuer.trim_end_matches('/') {
        GITHUB => &["repository_id", "repository_owner_id"],
        GITLAB => &["project_id", "namespace_id"],
        _ => &[],
    }
}

/// Adds a trust to a project, checked.
pub async fn add(app: &App, slug: &str, req: &CreateTrust) -> Result<Trust> {
    if app.project(slug).await?.deleting {
        return Err(super::validate::being_deleted(slug));
    }
    let issuer = req.issuer.trim();
    let url = url::Url::parse(issuer).map_err(|_| {
        Error::bad_request("issuer: not a URL (https://token.actions.githubusercontent.com)")
    })?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err(Error::bad_request(
            "issuer: https:// only (http:// on loopback, for a test issuer)",
        ));
    }
    if req.claims.is_empty() || req.claims.len() > 20 {
        return Err(Error::bad_request(
            "claims: 1 to 20 rules (claim=value), e.g. repository_id and ref",
        ));
    }
    for (k, v) in &req.claims {
        let bad = |s: &str| s.is_empty() || s.len() > 256 || s.chars().any(char::is_control);
        if bad(k) || bad(v) {
            return Err(Error::bad_request(format!(
                "claims: {k:?}: names and values of 1 to 256 characters, no control characters"
            )));
        }
        if k == "iss" || k == "aud" {
            return Err(Error::bad_request(format!(
                "claims: {k} is checked already (the issuer, and this server's URL)"
            )));
        }
    }
    let missing: Vec<&str> = required_ids(issuer)
        .iter()
        .copied()
        .filter(|c| !req.claims.contains_key(*c))
        .collect();
    if !missing.is_empty() {
        return Err(Error::bad_request(format!(
            "claims: a trust in {issuer} must bind {} (numeric ids: a deleted name can be registered again by someone else)",
            missing.join(" and ")
        )));
    }
    if app.store.list_trusts(slug).await?.len() >= MAX_TRUSTS {
        return Err(Error::conflict(format!(
            "project {slug} trusts {MAX_TRUSTS} issuers' rules, the most it may; remove one first"
        )));
    }
    let row = TrustRow {
        id: format!("trust_{}", ids::random_id(12)),
        slug: slug.to_string(),
        issuer: issuer.to_string(),
        claims: req.claims.clone(),
        created_at: cdeploy_core::now_rfc3339(),
    };
    app.store.insert_trust(&row).await?;
    Ok(json(&row))
}

pub async fn list(app: &App, slug: &str) -> Result<Vec<Trust>> {
    app.project(slug).await?;
    Ok(app
        .store
        .list_trusts(slug)
        .await?
        .iter()
        .map(json)
        .collect())
}

pub async fn remove(app: &App, slug: &str, id: &str) -> Result<()> {
    app.project(slug).await?;
    if !app.store.delete_trust(slug, id).await? {
        return Err(Error::not_found(format!(
            "trust {id:?} of project {slug:?}"
        )));
    }
    Ok(())
}

/// Why an exchange was refused, and what of the token is known.
pub struct Refused {
    pub reason: String,
    pub issuer: Option<String>,
    pub claims: Option<verify::Claims>,
}

impl Refused {
    fn new(reason: impl Into<String>) -> Refused {
        Refused {
            reason: reason.into(),
            issuer: None,
            claims: None,
        }
    }
}

/// Trades an identity token for a deploy token of the project, or says why not. Every
/// outcome is in the audit log.
pub async fn exchange(
    app: &App,
    req: &ExchangeRequest,
) -> std::result::Result<ExchangeAnswer, Refused> {
    let outcome = trade(app, req).await;
    let (status, trust, detail, token) = match &outcome {
        Ok((answer, claims, row)) => (
            201,
            Some(answer.trust.clone()),
            format!(
                "deploy token for {} ({} min) from {}: {}",
                req.project,
                TOKEN_SECS / 60,
                claims.get("iss").and_then(Value::as_str).unwrap_or("?"),
                claims_text(claims)
            ),
            Some(row),
        ),
        Err(r) => (
            401,
            None,
            format!(
                "refused: {}{}{}",
                r.reason,
                r.issuer
                    .as_deref()
                    .map(|i| format!(" (issuer {i})"))
                    .unwrap_or_default(),
                r.claims
                    .as_ref()
                    .map(|c| format!("; claims: {}", claims_text(c)))
                    .unwrap_or_default()
            ),
            None,
        ),
    };
    audit(app, &req.project, status, trust, detail, token).await;
    outcome.map(|(answer, _, _)| answer)
}

async fn trade(
    app: &App,
    req: &ExchangeRequest,
) -> std::result::Result<(ExchangeAnswer, verify::Claims, TokenRow), Refused> {
    let audience = app.config.api_url.as_deref().ok_or_else(|| {
        Refused::new("this server has no --api-url: the audience CI identity tokens must name")
    })?;
    let issuer = verify::named_issuer(&req.token).map_err(Refused::new)?;
    let refuse = |reason: String, claims: Option<verify::Claims>| Refused {
        reason,
        issuer: Some(issuer.clone()),
        claims,
    };
    let trusts: Vec<TrustRow> = match ids::validate_slug(&req.project) {
        Ok(()) => app
            .store
            .list_trusts(&req.project)
            .await
            .map_err(|e| refuse(format!("cannot read the project's trusts: {e}"), None))?,
        Err(_) => Vec::new(),
    };
    let trusts: Vec<TrustRow> = trusts.into_iter().filter(|t| t.issuer == issuer).collect();
    if trusts.is_empty() {
        return Err(refuse(
            format!("project {:?} does not trust this issuer", req.project),
            None,
        ));
    }
    let claims = app
        .oidc
        .verify(&req.token, &issuer, audience)
        .await
        .map_err(|why| refuse(why, None))?;
    let trust = matching(&trusts, &claims).map_err(|why| refuse(why, Some(claims.clone())))?;
    if let Err(why) = spend(app, &issuer, &claims).await {
        return Err(refuse(why, Some(claims)));
    }
    let (token, row) = issue(app, &req.project, &claims).await.map_err(|e| {
        refuse(
            format!("cannot store the deploy token: {e}"),
            Some(claims.clone()),
        )
    })?;
    let answer = ExchangeAnswer {
        token,
        project: req.project.clone(),
        expires_at: row.expires_at.clone().unwrap_or_default(),
        trust: trust.id.clone(),
    };
    Ok((answer, claims, row))
}

/// Spends the token's `jti` (kept past its expiry and the clock skew allowed): refused
/// when it has none, or was spent already (a replay).
async fn spend(
    app: &App,
    issuer: &str,
    claims: &verify::Claims,
) -> std::result::Result<(), String> {
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty());
    let Some(jti) = jti else {
        return Err("the token has no jti: it could not be told from a replay".into());
    };
    let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
    let keep_until = (exp + verify::LEEWAY_SECS as i64 + 60) * 1_000_000;
    let now_us = chrono::Utc::now().timestamp_micros();
    match app
        .store
        .spend_identity_token(issuer, jti, keep_until, now_us)
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "the token (jti {jti:?}) was used already: a replay"
        )),
        Err(e) => Err(format!("cannot record the token: {e}")),
    }
}

/// A deploy token of `slug` for [`TOKEN_SECS`], named after the token's `sub`; the
/// ones such exchanges made that expired a day ago go.
async fn issue(
    app: &App,
    slug: &str,
    claims: &verify::Claims,
) -> crate::db::DbResult<(String, TokenRow)> {
    let token = ids::generate_token();
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    let name: String = format!("{TOKEN_NAME}{sub}").chars().take(64).collect();
    let row = TokenRow::new(
        &ids::token_hash(&token),
        &name,
        Role::Deploy,
        vec![slug.to_string()],
        Some(TOKEN_SECS),
    );
    let day_ago = chrono::Utc::now().timestamp_micros() - 86_400_000_000;
    app.store.prune_expired_tokens(TOKEN_NAME, day_ago).await?;
    app.store.insert_token(&row).await?;
    Ok((token, row))
}

/// The first trust whose every rule the claims meet; or why none does (the closest
/// one's first differing claim).
fn matching<'t>(
    trusts: &'t [TrustRow],
    claims: &verify::Claims,
) -> std::result::Result<&'t TrustRow, String> {
    let mut closest: Option<(usize, String)> = None;
    for t in trusts {
        let misses: Vec<String> = t
            .claims
            .iter()
            .filter_map(|(k, want)| {
                let got = claims.get(k).and_then(scalar);
                match got {
                    Some(g) if &g == want => None,
                    Some(g) => Some(format!(
                        "claim {k} is {g:?}, the trust ({}) wants {want:?}",
                        t.id
                    )),
                    None => Some(format!(
                        "the token has no {k} claim, which the trust ({}) binds",
                        t.id
                    )),
                }
            })
            .collect();
        if misses.is_empty() {
            return Ok(t);
        }
        if closest.as_ref().is_none_or(|(n, _)| misses.len() < *n) {
            closest = Some((misses.len(), misses[0].clone()));
        }
    }
    Err(closest
        .map(|(_, why)| why)
        .unwrap_or_else(|| "no trust matched".into()))
}

/// A claim compared as a string: strings as they are, numbers and booleans as written.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The token's scalar claims for the audit log (`k=v`, sorted, each value cut at 120
/// characters, the whole at 2,000).
fn claims_text(claims: &verify::Claims) -> String {
    let sorted: BTreeMap<&String, String> = claims
        .iter()
        .filter_map(|(k, v)| scalar(v).map(|s| (k, s.chars().take(120).collect())))
        .collect();
    let text = sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    text.chars().take(2000).collect()
}

/// The exchange's audit entry: the token it made, or the refusal (refusals of one
/// reason within a minute share an entry with a count).
async fn audit(
    app: &App,
    slug: &str,
    status: u16,
    trust: Option<String>,
    detail: String,
    token: Option<&TokenRow>,
) {
    let now = chrono::Utc::now();
    let action = "POST /v1/oidc/exchange".to_string();
    let bucket = (status >= 400).then(|| {
        let reason: String = detail.chars().take(200).collect();
        format!("oidc|{slug}|{reason}|{}", now.timestamp() / 60)
    });
    let entry = AuditRow {
        at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        at_us: now.timestamp_micros(),
        token_id: token.map(|t| t.id.clone()),
        token_name: token
            .map(|t| t.name.clone())
            .unwrap_or_else(|| "oidc".into()),
        action,
        target: trust,
        status,
        project: ids::validate_slug(slug).is_ok().then(|| slug.to_string()),
        detail: Some(detail),
        count: 1,
        bucket,
    };
    if let Err(e) = app.store.insert_audit(&entry).await {
        tracing::warn!(error = %e, "cannot write the audit log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(id: &str, rules: &[(&str, &str)]) -> TrustRow {
        TrustRow {
            id: id.into(),
            slug: "p".into(),
            issuer: "https://issuer.example".into(),
            claims: rules
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            created_at: String::new(),
        }
    }

    #[test]
    fn claims_are_compared_one_by_one_as_written() {
        let claims: verify::Claims = serde_json::from_value(serde_json::json!({
            "repository_id": 1296269, "ref": "refs/heads/main", "sub": "repo:o/r:ref:refs/heads/main"
        }))
        .unwrap();
        let main = trust(
            "t1",
            &[("repository_id", "1296269"), ("ref", "refs/heads/main")],
        );
        let other = trust("t2", &[("repository_id", "1"), ("ref", "refs/heads/main")]);
        let both = [other.clone(), main.clone()];
        assert_eq!(matching(&both, &claims).unwrap().id, "t1");
        let why = matching(std::slice::from_ref(&other), &claims).unwrap_err();
        assert!(why.contains("claim repository_id is \"1296269\""), "{why}");
        // A rule on a claim the token lacks never matches (no prefix or pattern either).
        let env = trust("t3", &[("environment", "production")]);
        assert!(matching(&[env], &claims)
            .unwrap_err()
            .contains("no environment claim"));
        let prefix = trust("t4", &[("ref", "refs/heads/")]);
        assert!(matching(&[prefix], &claims).is_err());
    }

    #[test]
    fn the_issuer_is_read_from_any_jwt_shape_or_refused() {
        use base64::Engine;
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let token = format!(
            "{}.{}.sig",
            b64("{}"),
            b64(r#"{"iss":"https://i.example"}"#)
        );
        assert_eq!(verify::named_issuer(&token).unwrap(), "https://i.example");
        assert!(verify::named_issuer("not-a-jwt").is_err());
        assert!(verify::named_issuer(&format!("h.{}.s", b64("[]"))).is_err());
        assert!(verify::named_issuer(&format!("h.{}.s", b64(r#"{"iss":7}"#))).is_err());
        assert!(verify::named_issuer(&"a.".repeat(20_000)).is_err());
        assert_eq!(
            required_ids(GITHUB),
            ["repository_id", "repository_owner_id"]
        );
        assert!(required_ids("https://other.example").is_empty());
    }
}
