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
//! * [`exchange`] — an identity token traded for a deploy token, audited.

pub mod exchange;
pub mod verify;

pub use exchange::{exchange, Refused};

use cdeploy_core::api::{CreateTrust, Trust};
use cdeploy_core::ids;

use super::error::{Error, Result};
use super::App;
use crate::db::TrustRow;

/// How long a token from an exchange lives.
pub const TOKEN_SECS: u64 = 600;
/// Trusts one project may have.
pub const MAX_TRUSTS: usize = 20;
/// GitHub Actions' issuer.
pub const GITHUB: &str = "https://token.actions.githubusercontent.com";
/// GitLab.com's issuer (a self-managed GitLab's is its own URL).
pub const GITLAB: &str = "https://gitlab.com";
/// What tokens from an exchange are named with (and pruned by once expired); no other
/// token may be named so.
pub const TOKEN_NAME: &str = "oidc:";

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
    if !verify::issuer_scheme_allowed(&url) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_cis_must_bind_numeric_ids() {
        assert_eq!(
            required_ids(GITHUB),
            ["repository_id", "repository_owner_id"]
        );
        assert_eq!(
            required_ids("https://gitlab.com/"),
            ["project_id", "namespace_id"]
        );
        assert!(required_ids("https://other.example").is_empty());
    }
}
