//! The audit log: who (which token) did what, when, and the answer. Refusals and
//! failures of one token, action, target and status within a minute share one entry
//! with a count, so a flood of them is a row a minute, never a row a request.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, FromRow};

use super::columns::Columns;
use super::DbResult;

/// One audit log entry.
#[derive(Debug, Clone)]
pub struct AuditRow {
    /// When it happened (for a bucket of refusals, the latest of them).
    pub at: String,
    pub at_us: i64,
    pub token_id: Option<String>,
    pub token_name: String,
    pub action: String,
    pub target: Option<String>,
    pub status: u16,
    /// The project the request acted on, when it named one.
    pub project: Option<String>,
    /// What it changed, in words (`token ci (deploy on web)`).
    pub detail: Option<String>,
    /// How many requests the entry stands for: refusals and failures of one token,
    /// action, target and status within a minute share one entry.
    pub count: i64,
    /// That shared entry's key; `None` for an entry of its own (every change).
    pub bucket: Option<String>,
}

impl FromRow<'_, AnyRow> for AuditRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let c = Columns::of(row, "audit");
        Ok(AuditRow {
            at: c.get("at")?,
            at_us: c.get("at_us")?,
            token_id: c.get("token_id")?,
            token_name: c.get("token_name")?,
            action: c.get("action")?,
            target: c.get("target")?,
            status: c.narrowed("status")?,
            project: c.get("project")?,
            detail: c.get("detail")?,
            count: c.get("count")?,
            bucket: c.get("bucket")?,
        })
    }
}

/// Which audit entries to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub limit: u32,
    /// Entries before this `at_us` (the previous page's last `cursor`).
    pub before_us: Option<i64>,
    pub since_us: Option<i64>,
    /// A token's id or name.
    pub token: Option<String>,
    /// Part of the action (`POST /v1/tokens`, `env`).
    pub action: Option<String>,
    pub project: Option<String>,
    /// Statuses from `.0` to `.1` (`403`, or `400..=499` for `4xx`).
    pub status: Option<(u16, u16)>,
}

pub(super) async fn insert(pool: &AnyPool, a: &AuditRow) -> DbResult<()> {
    // An entry with a bucket (a refusal, a failure) joins the one its token, action,
    // target, status and minute already have.
    sqlx::query(
        "INSERT INTO audit (at_us, at, token_id, token_name, action, target, status, project, \
         detail, count, bucket) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10) \
         ON CONFLICT (bucket) DO UPDATE SET count = audit.count + 1, \
         at_us = excluded.at_us, at = excluded.at",
    )
    .bind(a.at_us)
    .bind(&a.at)
    .bind(&a.token_id)
    .bind(&a.token_name)
    .bind(&a.action)
    .bind(&a.target)
    .bind(i32::from(a.status))
    .bind(&a.project)
    .bind(&a.detail)
    .bind(&a.bucket)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn prune(pool: &AnyPool, before_us: i64) -> DbResult<u64> {
    let r = sqlx::query("DELETE FROM audit WHERE at_us < $1")
        .bind(before_us)
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}

/// A value a filter compares with.
enum Arg {
    Int(i64),
    Text(String),
}

/// A statement built clause by clause, its placeholders numbered as they come.
#[derive(Default)]
struct Built {
    sql: String,
    args: Vec<Arg>,
}

impl Built {
    /// Appends `clause`, each `{}` in it the next placeholder, bound to the next value.
    fn push(&mut self, clause: &str, values: Vec<Arg>) {
        let mut parts = clause.split("{}");
        self.sql.push_str(parts.next().unwrap_or_default());
        for (part, value) in parts.zip(values) {
            self.args.push(value);
            self.sql.push_str(&format!("${}{part}", self.args.len()));
        }
    }
}

pub(super) async fn list(pool: &AnyPool, f: &AuditFilter) -> DbResult<Vec<AuditRow>> {
    let mut q = Built::default();
    q.push("SELECT * FROM audit WHERE true", vec![]);
    if let Some(before) = f.before_us {
        q.push(" AND at_us < {}", vec![Arg::Int(before)]);
    }
    if let Some(since) = f.since_us {
        q.push(" AND at_us >= {}", vec![Arg::Int(since)]);
    }
    if let Some(token) = &f.token {
        q.push(
            " AND (token_id = {} OR token_name = {})",
            vec![Arg::Text(token.clone()), Arg::Text(token.clone())],
        );
    }
    if let Some(action) = &f.action {
        let escaped = action
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        q.push(
            " AND LOWER(action) LIKE {} ESCAPE '\\'",
            vec![Arg::Text(format!("%{escaped}%"))],
        );
    }
    if let Some(project) = &f.project {
        q.push(" AND project = {}", vec![Arg::Text(project.clone())]);
    }
    if let Some((lo, hi)) = f.status {
        q.push(
            " AND status >= {} AND status <= {}",
            vec![Arg::Int(i64::from(lo)), Arg::Int(i64::from(hi))],
        );
    }
    q.push(
        " ORDER BY at_us DESC LIMIT {}",
        vec![Arg::Int(i64::from(f.limit))],
    );
    let mut query = sqlx::query_as(&q.sql);
    for arg in q.args {
        query = match arg {
            Arg::Int(v) => query.bind(v),
            Arg::Text(v) => query.bind(v),
        };
    }
    Ok(query.fetch_all(pool).await?)
}
