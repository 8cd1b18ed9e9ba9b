//! Custom domains: which project each serves, its certificate's state and the lease
//! that lets one server at a time order it, and the attempts made for it.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, FromRow};

use super::columns::Columns;
use super::DbResult;

/// A custom domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRow {
    pub name: String,
    pub slug: String,
    /// Serves this branch's newest preview instead of production.
    pub branch: Option<String>,
    /// Redirects to this other domain (apex ↔ www) instead of serving.
    pub redirect_to: Option<String>,
    /// Plain HTTP redirects to HTTPS once the certificate exists.
    pub https_redirect: bool,
    /// `Strict-Transport-Security` value sent over HTTPS, when opted in.
    pub hsts: Option<String>,
    pub created_at: String,
    /// `pending` (no certificate yet), `active`, or `failed` (the last attempt failed;
    /// an active certificate may still be served).
    pub state: String,
    /// The served certificate's validity (unix seconds).
    pub cert_not_before: Option<i64>,
    pub cert_not_after: Option<i64>,
    /// Failed attempts in a row (the backoff grows with them).
    pub failures: i64,
    /// No attempt before this (unix µs).
    pub next_attempt_us: i64,
    /// What the `_cdeploy.<name>` TXT record proves ownership with.
    pub verify_token: String,
    /// Served (and certified) only once verified: added by an admin, or its DNS
    /// proves the project may have it.
    pub verified: bool,
}

impl FromRow<'_, AnyRow> for DomainRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let c = Columns::of(row, "domains");
        Ok(DomainRow {
            name: c.get("name")?,
            slug: c.get("slug")?,
            branch: c.get("branch")?,
            redirect_to: c.get("redirect_to")?,
            https_redirect: c.flag("https_redirect")?,
            hsts: c.get("hsts")?,
            created_at: c.get("created_at")?,
            state: c.get("state")?,
            cert_not_before: c.get("cert_not_before")?,
            cert_not_after: c.get("cert_not_after")?,
            failures: c.get("failures")?,
            next_attempt_us: c.get("next_attempt_us")?,
            verify_token: c.get("verify_token")?,
            verified: c.flag("verified")?,
        })
    }
}

/// One attempt at a domain's certificate: its report is JSON (`api::DomainAttempt`).
#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub id: String,
    pub name: String,
    pub at: String,
    pub at_us: i64,
    pub ok: bool,
    pub report: String,
}

impl FromRow<'_, AnyRow> for AttemptRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let c = Columns::of(row, "domain_attempts");
        Ok(AttemptRow {
            id: c.get("id")?,
            name: c.get("name")?,
            at: c.get("at")?,
            at_us: c.get("at_us")?,
            ok: c.flag("ok")?,
            report: c.get("report")?,
        })
    }
}

/// Adds a domain unless it exists; returns the row now stored under its name (another
/// project's, when it was taken) and whether it was added.
pub(super) async fn insert(pool: &AnyPool, d: &DomainRow) -> DbResult<(DomainRow, bool)> {
    let r = sqlx::query(
        "INSERT INTO domains (name, slug, branch, redirect_to, https_redirect, hsts, created_at, \
         state, failures, next_attempt_us, verify_token, verified) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0, $9, $10) ON CONFLICT (name) DO NOTHING",
    )
    .bind(&d.name)
    .bind(&d.slug)
    .bind(&d.branch)
    .bind(&d.redirect_to)
    .bind(i64::from(d.https_redirect))
    .bind(&d.hsts)
    .bind(&d.created_at)
    .bind(&d.state)
    .bind(&d.verify_token)
    .bind(i64::from(d.verified))
    .execute(pool)
    .await?;
    let row = get(pool, &d.name).await?.ok_or_else(|| {
        super::StoreError::Failed(format!("domain {} vanished after its insert", d.name))
    })?;
    Ok((row, r.rows_affected() == 1))
}

/// Changes what a domain serves (its project, branch, redirect and HTTPS settings).
pub(super) async fn update(pool: &AnyPool, d: &DomainRow) -> DbResult<()> {
    sqlx::query(
        "UPDATE domains SET slug = $1, branch = $2, redirect_to = $3, https_redirect = $4, \
         hsts = $5, verify_token = $6, verified = $7 WHERE name = $8",
    )
    .bind(&d.slug)
    .bind(&d.branch)
    .bind(&d.redirect_to)
    .bind(i64::from(d.https_redirect))
    .bind(&d.hsts)
    .bind(&d.verify_token)
    .bind(i64::from(d.verified))
    .bind(&d.name)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn get(pool: &AnyPool, name: &str) -> DbResult<Option<DomainRow>> {
    Ok(sqlx::query_as("SELECT * FROM domains WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?)
}

/// A project's domains (every domain when `slug` is `None`), by name.
pub(super) async fn list(pool: &AnyPool, slug: Option<&str>) -> DbResult<Vec<DomainRow>> {
    Ok(match slug {
        Some(slug) => {
            sqlx::query_as("SELECT * FROM domains WHERE slug = $1 ORDER BY name")
                .bind(slug)
                .fetch_all(pool)
                .await?
        }
        None => {
            sqlx::query_as("SELECT * FROM domains ORDER BY name")
                .fetch_all(pool)
                .await?
        }
    })
}

pub(super) async fn delete(pool: &AnyPool, name: &str) -> DbResult<bool> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM domain_attempts WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    let r = sqlx::query("DELETE FROM domains WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(r.rows_affected() == 1)
}

/// Takes the domain's lease for `owner` until `until_us` when nobody holds it (or the
/// holder's has run out) and an attempt is due: only the server holding it may order a
/// certificate, so replicas never place two orders for one domain.
pub(super) async fn take_lease(
    pool: &AnyPool,
    name: &str,
    owner: &str,
    now_us: i64,
    until_us: i64,
) -> DbResult<bool> {
    let r = sqlx::query(
        "UPDATE domains SET lease_owner = $1, lease_until_us = $2 \
         WHERE name = $3 AND lease_until_us < $4 AND next_attempt_us <= $4",
    )
    .bind(owner)
    .bind(until_us)
    .bind(name)
    .bind(now_us)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Records the outcome of an attempt and gives the lease back (if `owner` still holds
/// it). `cert` is the new certificate's validity, when one was issued.
pub(super) async fn finish_attempt(
    pool: &AnyPool,
    name: &str,
    owner: &str,
    outcome: &super::AttemptOutcome,
) -> DbResult<()> {
    sqlx::query(
        "UPDATE domains SET state = $1, failures = $2, next_attempt_us = $3, \
         cert_not_before = COALESCE($4, cert_not_before), \
         cert_not_after = COALESCE($5, cert_not_after), lease_owner = NULL, lease_until_us = 0 \
         WHERE name = $6 AND lease_owner = $7",
    )
    .bind(&outcome.state)
    .bind(outcome.failures)
    .bind(outcome.next_attempt_us)
    .bind(outcome.cert.map(|c| c.0))
    .bind(outcome.cert.map(|c| c.1))
    .bind(name)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// Makes a domain due now (its DNS was fixed, or it was just added).
pub(super) async fn retry_now(pool: &AnyPool, name: &str) -> DbResult<()> {
    sqlx::query("UPDATE domains SET next_attempt_us = 0 WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

/// Keeps an attempt, and at most `keep` of the domain's newest.
pub(super) async fn insert_attempt(pool: &AnyPool, a: &AttemptRow, keep: u32) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO domain_attempts (id, name, at, at_us, ok, report) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&a.id)
    .bind(&a.name)
    .bind(&a.at)
    .bind(a.at_us)
    .bind(i64::from(a.ok))
    .bind(&a.report)
    .execute(pool)
    .await?;
    sqlx::query(
        "DELETE FROM domain_attempts WHERE name = $1 AND at_us < \
         (SELECT at_us FROM domain_attempts WHERE name = $1 \
          ORDER BY at_us DESC LIMIT 1 OFFSET $2)",
    )
    .bind(&a.name)
    .bind(i64::from(keep) - 1)
    .execute(pool)
    .await?;
    Ok(())
}

/// A domain's newest attempts first.
pub(super) async fn attempts(pool: &AnyPool, name: &str, limit: u32) -> DbResult<Vec<AttemptRow>> {
    Ok(
        sqlx::query_as(
            "SELECT * FROM domain_attempts WHERE name = $1 ORDER BY at_us DESC LIMIT $2",
        )
        .bind(name)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?,
    )
}
