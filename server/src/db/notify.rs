//! Deploy events out: a project's notification endpoints (their signing secrets
//! sealed), the outbox of events to send, and each attempt at sending one.
//!
//! An event enters the outbox in the transaction that makes it happen (a deployment
//! inserted, its status changed), one row per endpoint subscribed to it, so a crash
//! right after a status change still sends its event. A sender takes a row by a lease
//! (one replica sends each attempt), and gives it back with the outcome.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, FromRow};

use super::columns::Columns;
use super::DbResult;

/// A notification endpoint of a project.
#[derive(Clone)]
pub struct NotifyHookRow {
    pub id: String,
    pub slug: String,
    pub url: String,
    /// The events it gets (`api::NotifyEvent` names).
    pub events: Vec<String>,
    pub format: String,
    /// The signing secret, sealed (`crate::service::keyring::notify_secret_aad`).
    pub key_id: String,
    pub sealed_secret: String,
    pub created_at: String,
}

impl std::fmt::Debug for NotifyHookRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may be the secret (Slack, Discord): not in debug output.
        f.debug_struct("NotifyHookRow")
            .field("id", &self.id)
            .field("slug", &self.slug)
            .field("events", &self.events)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl FromRow<'_, AnyRow> for NotifyHookRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let c = Columns::of(row, "notify_hooks");
        let events: String = c.get("events")?;
        Ok(NotifyHookRow {
            id: c.get("id")?,
            slug: c.get("slug")?,
            url: c.get("url")?,
            events: events
                .split(',')
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect(),
            format: c.get("format")?,
            key_id: c.get("key_id")?,
            sealed_secret: c.get("sealed_secret")?,
            created_at: c.get("created_at")?,
        })
    }
}

/// An event waiting in the outbox (or sent, or given up).
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// The message id, the same on every attempt.
    pub id: String,
    pub hook: String,
    pub slug: String,
    pub event: String,
    pub deployment: String,
    /// The deployment's error when the event was recorded (`failed`).
    pub error: Option<String>,
    pub at: String,
    pub at_us: i64,
    /// Attempts made so far.
    pub attempts: i64,
}

impl FromRow<'_, AnyRow> for OutboxRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let c = Columns::of(row, "notify_outbox");
        Ok(OutboxRow {
            id: c.get("id")?,
            hook: c.get("hook")?,
            slug: c.get("slug")?,
            event: c.get("event")?,
            deployment: c.get("deployment")?,
            error: c.get("error")?,
            at: c.get("at")?,
            at_us: c.get("at_us")?,
            attempts: c.get("attempts")?,
        })
    }
}

/// One attempt at sending a message.
#[derive(Debug, Clone)]
pub struct NotifyAttemptRow {
    pub id: String,
    pub message: String,
    pub hook: String,
    pub event: String,
    pub deployment: String,
    pub attempt: i64,
    pub at: String,
    pub at_us: i64,
    pub status: Option<i64>,
    pub error: Option<String>,
    pub ms: i64,
    /// `delivered`, `retrying` or `failed`.
    pub outcome: String,
    /// The next attempt, while `retrying`.
    pub next_us: Option<i64>,
}

impl FromRow<'_, AnyRow> for NotifyAttemptRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let c = Columns::of(row, "notify_attempts");
        Ok(NotifyAttemptRow {
            id: c.get("id")?,
            message: c.get("message")?,
            hook: c.get("hook")?,
            event: c.get("event")?,
            deployment: c.get("deployment")?,
            attempt: c.get("attempt")?,
            at: c.get("at")?,
            at_us: c.get("at_us")?,
            status: c.get("status")?,
            error: c.get("error")?,
            ms: c.get("ms")?,
            outcome: c.get("outcome")?,
            next_us: c.get("next_us")?,
        })
    }
}

const HOOK_COLUMNS: &str =
    "SELECT id, slug, url, events, format, key_id, sealed_secret, created_at FROM notify_hooks";
const OUTBOX_COLUMNS: &str = "SELECT id, hook, slug, event, deployment, error, at, at_us, \
     attempts FROM notify_outbox";

pub(super) async fn insert_hook(pool: &AnyPool, h: &NotifyHookRow) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO notify_hooks (id, slug, url, events, format, key_id, sealed_secret, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&h.id)
    .bind(&h.slug)
    .bind(&h.url)
    .bind(format!(",{},", h.events.join(",")))
    .bind(&h.format)
    .bind(&h.key_id)
    .bind(&h.sealed_secret)
    .bind(&h.created_at)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn list_hooks(pool: &AnyPool, slug: Option<&str>) -> DbResult<Vec<NotifyHookRow>> {
    Ok(match slug {
        Some(slug) => {
            sqlx::query_as(&format!(
                "{HOOK_COLUMNS} WHERE slug = $1 ORDER BY created_at, id"
            ))
            .bind(slug)
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query_as(&format!("{HOOK_COLUMNS} ORDER BY created_at, id"))
                .fetch_all(pool)
                .await?
        }
    })
}

pub(super) async fn get_hook(pool: &AnyPool, id: &str) -> DbResult<Option<NotifyHookRow>> {
    Ok(sqlx::query_as(&format!("{HOOK_COLUMNS} WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

/// Deletes an endpoint with its outbox and attempts; false when the project has none
/// with that id.
pub(super) async fn delete_hook(pool: &AnyPool, slug: &str, id: &str) -> DbResult<bool> {
    let mut tx = pool.begin().await?;
    let gone = sqlx::query("DELETE FROM notify_hooks WHERE slug = $1 AND id = $2")
        .bind(slug)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    if gone {
        for table in ["notify_outbox", "notify_attempts"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE hook = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(gone)
}

pub(super) async fn reseal_hook(
    pool: &AnyPool,
    h: &NotifyHookRow,
    key_id: &str,
    sealed: &str,
) -> DbResult<bool> {
    let r = sqlx::query(
        "UPDATE notify_hooks SET key_id = $1, sealed_secret = $2 \
         WHERE id = $3 AND key_id = $4 AND sealed_secret = $5",
    )
    .bind(key_id)
    .bind(sealed)
    .bind(&h.id)
    .bind(&h.key_id)
    .bind(&h.sealed_secret)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Puts `event` of deployment `id` in the outbox of every endpoint of its project
/// subscribed to it, inside the caller's transaction. `key` makes the message id: the
/// deployment and event (each happens once), plus a time for those that may repeat.
pub(super) async fn enqueue(
    tx: &mut sqlx::Transaction<'_, Any>,
    id: &str,
    event: &str,
    key: &str,
    now_us: i64,
) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO notify_outbox (id, hook, slug, event, deployment, error, at, at_us, state, \
         attempts, next_us, lease_until) \
         SELECT h.id || '.' || $1, h.id, h.slug, $2, d.id, d.error, $3, $4, 'pending', 0, $4, 0 \
         FROM notify_hooks h JOIN deployments d ON d.slug = h.slug \
         WHERE d.id = $5 AND h.events LIKE $6 \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(key)
    .bind(event)
    .bind(cdeploy_core::now_rfc3339())
    .bind(now_us)
    .bind(id)
    .bind(format!("%,{event},%"))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Messages due now that no sender holds, oldest first.
pub(super) async fn due(pool: &AnyPool, now_us: i64, limit: u32) -> DbResult<Vec<OutboxRow>> {
    Ok(sqlx::query_as(&format!(
        "{OUTBOX_COLUMNS} WHERE state = 'pending' AND next_us <= $1 AND lease_until <= $1 \
         ORDER BY next_us, at_us LIMIT $2"
    ))
    .bind(now_us)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?)
}

/// When the next pending message is due (held ones when their lease ends).
pub(super) async fn next_due(pool: &AnyPool) -> DbResult<Option<i64>> {
    let next: Option<Option<i64>> = sqlx::query_scalar(
        "SELECT MIN(CASE WHEN lease_until > next_us THEN lease_until ELSE next_us END) \
         FROM notify_outbox WHERE state = 'pending'",
    )
    .fetch_optional(pool)
    .await?;
    Ok(next.flatten())
}

/// Takes a due message for `owner` until `until_us`, as it was read (`seen` attempts
/// made): false when another sender has it, or made an attempt since it was read (its
/// next one is not due, or is that sender's to count).
pub(super) async fn claim(
    pool: &AnyPool,
    m: &OutboxRow,
    owner: &str,
    now_us: i64,
    until_us: i64,
) -> DbResult<bool> {
    let r = sqlx::query(
        "UPDATE notify_outbox SET lease_owner = $1, lease_until = $2 \
         WHERE id = $3 AND state = 'pending' AND lease_until <= $4 AND next_us <= $4 \
         AND attempts = $5",
    )
    .bind(owner)
    .bind(until_us)
    .bind(&m.id)
    .bind(now_us)
    .bind(m.attempts)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Records an attempt and its outcome on the message (the lease given back), keeping
/// the endpoint's newest `keep` attempts; false (nothing recorded) when `owner` no
/// longer holds it.
pub(super) async fn finish(
    pool: &AnyPool,
    a: &NotifyAttemptRow,
    owner: &str,
    keep: u32,
) -> DbResult<bool> {
    let mut tx = pool.begin().await?;
    let state = match a.outcome.as_str() {
        "retrying" => "pending",
        other => other,
    };
    let held = sqlx::query(
        "UPDATE notify_outbox SET state = $1, attempts = $2, next_us = $3, lease_owner = NULL, \
         lease_until = 0 WHERE id = $4 AND lease_owner = $5",
    )
    .bind(state)
    .bind(a.attempt)
    .bind(a.next_us.unwrap_or(a.at_us))
    .bind(&a.message)
    .bind(owner)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    // The lease ran out (another sender has it now) or the endpoint was removed: this
    // attempt is not the message's to record.
    if !held {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO notify_attempts (id, message, hook, event, deployment, attempt, at, at_us, \
         status, error, ms, outcome, next_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&a.id)
    .bind(&a.message)
    .bind(&a.hook)
    .bind(&a.event)
    .bind(&a.deployment)
    .bind(a.attempt)
    .bind(&a.at)
    .bind(a.at_us)
    .bind(a.status)
    .bind(&a.error)
    .bind(a.ms)
    .bind(&a.outcome)
    .bind(a.next_us)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM notify_attempts WHERE hook = $1 AND at_us < \
         (SELECT at_us FROM notify_attempts WHERE hook = $1 \
          ORDER BY at_us DESC LIMIT 1 OFFSET $2)",
    )
    .bind(&a.hook)
    .bind(i64::from(keep) - 1)
    .execute(&mut *tx)
    .await?;
    // Sent and given-up messages are kept as long as an attempt of theirs is.
    sqlx::query(
        "DELETE FROM notify_outbox WHERE hook = $1 AND state <> 'pending' AND id NOT IN \
         (SELECT message FROM notify_attempts WHERE hook = $1)",
    )
    .bind(&a.hook)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// An endpoint's newest attempts first.
pub(super) async fn attempts(
    pool: &AnyPool,
    hook: &str,
    limit: u32,
) -> DbResult<Vec<NotifyAttemptRow>> {
    Ok(sqlx::query_as(
        "SELECT id, message, hook, event, deployment, attempt, at, at_us, status, error, ms, \
         outcome, next_us FROM notify_attempts WHERE hook = $1 ORDER BY at_us DESC LIMIT $2",
    )
    .bind(hook)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?)
}
