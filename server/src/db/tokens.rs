//! API tokens: only each token's SHA-256 is stored, with its role, the projects it acts
//! on, its expiry and its last use.

use cdeploy_core::api::Role;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, FromRow};

use super::columns::Columns;
use super::{now_us, DbResult};

/// An API token: only its SHA-256 is stored.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: String,
    pub hash: String,
    pub name: String,
    pub role: Role,
    /// The projects a `deploy` or `read` token acts on.
    pub projects: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    /// Microseconds since the epoch, for comparisons.
    pub expires_us: Option<i64>,
    pub last_used_at: Option<String>,
    pub last_used_us: Option<i64>,
}

impl TokenRow {
    /// A new token's row (`expires_in`: seconds from now).
    pub fn new(
        hash: &str,
        name: &str,
        role: Role,
        projects: Vec<String>,
        expires_in: Option<u64>,
    ) -> TokenRow {
        let now = chrono::Utc::now();
        let expires = expires_in
            .map(|s| now + chrono::Duration::seconds(s.min(i64::MAX as u64 / 2_000_000) as i64));
        TokenRow {
            id: format!("tok_{}", cdeploy_core::ids::random_id(16)),
            hash: hash.to_string(),
            name: name.to_string(),
            role,
            projects,
            created_at: cdeploy_core::now_rfc3339(),
            expires_at: expires.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            expires_us: expires.map(|t| t.timestamp_micros()),
            last_used_at: None,
            last_used_us: None,
        }
    }

    pub fn expired(&self) -> bool {
        self.expires_us.is_some_and(|t| t <= now_us())
    }
}

impl FromRow<'_, AnyRow> for TokenRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let c = Columns::of(row, "tokens");
        let projects: String = c.get("projects")?;
        Ok(TokenRow {
            id: c.get("id")?,
            hash: c.get("hash")?,
            name: c.get("name")?,
            // The role is kept in the column `scope`, its name before roles.
            role: c.parsed("scope", |s| s.parse().ok())?,
            projects: projects
                .split(',')
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect(),
            created_at: c.get("created_at")?,
            expires_at: c.get("expires_at")?,
            expires_us: c.get("expires_us")?,
            last_used_at: c.get("last_used_at")?,
            last_used_us: c.get("last_used_us")?,
        })
    }
}

pub(super) async fn count(pool: &AnyPool) -> DbResult<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
        .fetch_one(pool)
        .await?)
}

pub(super) async fn insert(pool: &AnyPool, t: &TokenRow) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO tokens (hash, name, created_at, scope, id, projects, expires_at, expires_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&t.hash)
    .bind(&t.name)
    .bind(&t.created_at)
    .bind(t.role.as_str())
    .bind(&t.id)
    .bind(t.projects.join(","))
    .bind(&t.expires_at)
    .bind(t.expires_us)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn exists(pool: &AnyPool, hash: &str) -> DbResult<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens WHERE hash = $1")
        .bind(hash)
        .fetch_one(pool)
        .await?;
    Ok(n > 0)
}

pub(super) async fn by_hash(pool: &AnyPool, hash: &str) -> DbResult<Option<TokenRow>> {
    Ok(sqlx::query_as("SELECT * FROM tokens WHERE hash = $1")
        .bind(hash)
        .fetch_optional(pool)
        .await?)
}

pub(super) async fn by_id(pool: &AnyPool, id: &str) -> DbResult<Option<TokenRow>> {
    Ok(sqlx::query_as("SELECT * FROM tokens WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

pub(super) async fn list(pool: &AnyPool) -> DbResult<Vec<TokenRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM tokens ORDER BY created_at, id")
            .fetch_all(pool)
            .await?,
    )
}

pub(super) async fn delete(pool: &AnyPool, id: &str) -> DbResult<bool> {
    let r = sqlx::query("DELETE FROM tokens WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub(super) async fn used(pool: &AnyPool, id: &str) -> DbResult<()> {
    sqlx::query("UPDATE tokens SET last_used_at = $1, last_used_us = $2 WHERE id = $3")
        .bind(cdeploy_core::now_rfc3339())
        .bind(now_us())
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes tokens named with `prefix` (those trusted publishing makes) that expired
/// before `before_us`.
pub(super) async fn prune_expired(pool: &AnyPool, prefix: &str, before_us: i64) -> DbResult<u64> {
    let r = sqlx::query(
        "DELETE FROM tokens WHERE name LIKE $1 AND expires_us IS NOT NULL AND expires_us < $2",
    )
    .bind(format!("{prefix}%"))
    .bind(before_us)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}
