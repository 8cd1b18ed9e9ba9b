//! Trusted publishing: the issuers a project trusts with their claim rules, and the
//! identity tokens already spent.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::{AnyPool, FromRow};

use super::columns::Columns;
use super::DbResult;

/// A project's trust in an OIDC issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustRow {
    pub id: String,
    pub slug: String,
    pub issuer: String,
    /// Claim → the value a token must carry.
    pub claims: BTreeMap<String, String>,
    pub created_at: String,
}

impl FromRow<'_, AnyRow> for TrustRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let c = Columns::of(row, "oidc_trusts");
        Ok(TrustRow {
            id: c.get("id")?,
            slug: c.get("slug")?,
            issuer: c.get("issuer")?,
            claims: c.json("claims")?,
            created_at: c.get("created_at")?,
        })
    }
}

pub(super) async fn insert_trust(pool: &AnyPool, t: &TrustRow) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO oidc_trusts (id, slug, issuer, claims, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&t.id)
    .bind(&t.slug)
    .bind(&t.issuer)
    .bind(serde_json::to_string(&t.claims).expect("serializes"))
    .bind(&t.created_at)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn list_trusts(pool: &AnyPool, slug: &str) -> DbResult<Vec<TrustRow>> {
    Ok(sqlx::query_as(
        "SELECT id, slug, issuer, claims, created_at FROM oidc_trusts WHERE slug = $1 \
         ORDER BY created_at, id",
    )
    .bind(slug)
    .fetch_all(pool)
    .await?)
}

pub(super) async fn delete_trust(pool: &AnyPool, slug: &str, id: &str) -> DbResult<bool> {
    let r = sqlx::query("DELETE FROM oidc_trusts WHERE slug = $1 AND id = $2")
        .bind(slug)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Spends an identity token: false when it was spent already. Tokens past their
/// expiry are forgotten (they are refused as expired anyway).
pub(super) async fn spend(
    pool: &AnyPool,
    issuer: &str,
    jti: &str,
    expires_us: i64,
    now_us: i64,
) -> DbResult<bool> {
    sqlx::query("DELETE FROM oidc_spent WHERE expires_us < $1")
        .bind(now_us)
        .execute(pool)
        .await?;
    let r = sqlx::query(
        "INSERT INTO oidc_spent (issuer, jti, expires_us) VALUES ($1, $2, $3) \
         ON CONFLICT (issuer, jti) DO NOTHING",
    )
    .bind(issuer)
    .bind(jti)
    .bind(expires_us)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}
