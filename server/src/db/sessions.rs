//! Dashboard sessions (the SHA-256 of each cookie, the token it acts as, its CSRF token)
//! and one-time sign-in links.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, FromRow};

use super::columns::Columns;
use super::DbResult;

/// A dashboard session: only its cookie's SHA-256 is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: String,
    pub hash: String,
    pub token_id: String,
    pub csrf: String,
    pub created_at: String,
    pub last_seen_us: i64,
    /// When it ends whatever its use (its idle limit is counted from `last_seen_us`).
    pub expires_us: i64,
}

impl FromRow<'_, AnyRow> for SessionRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let c = Columns::of(row, "dashboard_sessions");
        Ok(SessionRow {
            id: c.get("id")?,
            hash: c.get("hash")?,
            token_id: c.get("token_id")?,
            csrf: c.get("csrf")?,
            created_at: c.get("created_at")?,
            last_seen_us: c.get("last_seen_us")?,
            expires_us: c.get("expires_us")?,
        })
    }
}

const COLUMNS: &str = "id, hash, token_id, csrf, created_at, last_seen_us, expires_us";

pub(super) async fn insert(pool: &AnyPool, s: &SessionRow) -> DbResult<()> {
    sqlx::query(&format!(
        "INSERT INTO dashboard_sessions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
    ))
    .bind(&s.id)
    .bind(&s.hash)
    .bind(&s.token_id)
    .bind(&s.csrf)
    .bind(&s.created_at)
    .bind(s.last_seen_us)
    .bind(s.expires_us)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn by_hash(pool: &AnyPool, hash: &str) -> DbResult<Option<SessionRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM dashboard_sessions WHERE hash = $1"
    ))
    .bind(hash)
    .fetch_optional(pool)
    .await?)
}

pub(super) async fn seen(pool: &AnyPool, id: &str, now_us: i64) -> DbResult<()> {
    sqlx::query("UPDATE dashboard_sessions SET last_seen_us = $1 WHERE id = $2")
        .bind(now_us)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn delete(pool: &AnyPool, id: &str) -> DbResult<bool> {
    let r = sqlx::query("DELETE FROM dashboard_sessions WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Forgets sessions past their end or idle since `idle_before_us`, and unused links
/// past theirs; then lists the rest, newest first.
pub(super) async fn list(
    pool: &AnyPool,
    now_us: i64,
    idle_before_us: i64,
) -> DbResult<Vec<SessionRow>> {
    prune(pool, now_us, idle_before_us).await?;
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM dashboard_sessions ORDER BY created_at DESC, id"
    ))
    .fetch_all(pool)
    .await?)
}

pub(super) async fn prune(pool: &AnyPool, now_us: i64, idle_before_us: i64) -> DbResult<()> {
    sqlx::query("DELETE FROM dashboard_sessions WHERE expires_us <= $1 OR last_seen_us < $2")
        .bind(now_us)
        .bind(idle_before_us)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM dashboard_links WHERE expires_us <= $1")
        .bind(now_us)
        .execute(pool)
        .await?;
    Ok(())
}

/// Ends every session of a token (it was revoked).
pub(super) async fn delete_for_token(pool: &AnyPool, token_id: &str) -> DbResult<()> {
    sqlx::query("DELETE FROM dashboard_sessions WHERE token_id = $1")
        .bind(token_id)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM dashboard_links WHERE token_id = $1")
        .bind(token_id)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn insert_link(
    pool: &AnyPool,
    hash: &str,
    token_id: &str,
    expires_us: i64,
) -> DbResult<()> {
    sqlx::query("INSERT INTO dashboard_links (hash, token_id, expires_us) VALUES ($1, $2, $3)")
        .bind(hash)
        .bind(token_id)
        .bind(expires_us)
        .execute(pool)
        .await?;
    Ok(())
}

/// Uses a sign-in link: the token it was made with, once, while it is valid. Of two
/// requests with one code only the one whose delete took the row gets it.
pub(super) async fn take_link(pool: &AnyPool, hash: &str, now_us: i64) -> DbResult<Option<String>> {
    let found: Option<(String, i64)> =
        sqlx::query_as("SELECT token_id, expires_us FROM dashboard_links WHERE hash = $1")
            .bind(hash)
            .fetch_optional(pool)
            .await?;
    let Some((token_id, expires_us)) = found else {
        return Ok(None);
    };
    let taken = sqlx::query("DELETE FROM dashboard_links WHERE hash = $1")
        .bind(hash)
        .execute(pool)
        .await?
        .rows_affected()
        == 1;
    Ok((taken && expires_us > now_us).then_some(token_id))
}
