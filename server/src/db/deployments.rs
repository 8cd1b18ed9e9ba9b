//! Deployments (their rows, statuses and request hashes) and the branch aliases that
//! point at previews.

use std::collections::BTreeMap;

use cdeploy_core::api::{GitSource, NotifyEvent, SourceKind};
use cdeploy_core::config::{BuildConfig, SiteConfig};
use cdeploy_core::event::Status;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, FromRow};

use super::columns::Columns;
use super::{now_us, DbResult};

#[derive(Debug, Clone)]
pub struct DeploymentRow {
    pub id: String,
    pub slug: String,
    pub status: Status,
    pub source: SourceKind,
    pub git: Option<GitSource>,
    pub build: BuildConfig,
    pub env: BTreeMap<String, String>,
    pub site: SiteConfig,
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    /// The ECS task running the build (ARN), once one was started.
    pub task: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Built as a preview: its build does not make it production.
    pub preview: bool,
    /// The branch a preview is of (its alias is `<label>--<slug>`).
    pub branch: Option<String>,
    /// The commit a git build cloned, once its build has read it.
    pub commit: Option<String>,
    /// The deployment whose output this one took instead of building.
    pub reused_from: Option<String>,
}

impl FromRow<'_, AnyRow> for DeploymentRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let c = Columns::of(row, "deployments");
        let git_url: Option<String> = c.get("git_url")?;
        Ok(DeploymentRow {
            id: c.get("id")?,
            slug: c.get("slug")?,
            status: c.parsed("status", Status::parse)?,
            source: c.parsed("source", SourceKind::parse)?,
            git: match git_url {
                Some(url) => Some(GitSource {
                    url,
                    git_ref: c.get("git_ref")?,
                }),
                None => None,
            },
            build: c.json("build")?,
            env: c.json("env")?,
            site: c.json("site")?,
            error: c.get("error")?,
            idempotency_key: c.get("idempotency_key")?,
            task: c.get("task")?,
            created_at: c.get("created_at")?,
            updated_at: c.get("updated_at")?,
            preview: c.flag("preview")?,
            branch: c.get("branch")?,
            commit: c.get("commit_sha")?,
            reused_from: c.get("reused_from")?,
        })
    }
}

/// The columns a [`DeploymentRow`] reads (not the build's claim and capability).
const SELECT: &str = "SELECT id, slug, status, source, git_url, git_ref, build, env, site, error, \
     idempotency_key, task, created_at, updated_at, created_us, preview, branch, commit_sha, \
     reused_from FROM deployments";

/// The statuses of a deployment still under way.
pub(super) const RUNNING: &str = "('queued', 'building', 'uploading')";

pub(super) async fn insert(pool: &AnyPool, d: &DeploymentRow) -> DbResult<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO deployments (id, slug, status, source, git_url, git_ref, build, env, site, \
         error, idempotency_key, task, created_at, updated_at, created_us, preview, branch) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(&d.id)
    .bind(&d.slug)
    .bind(d.status.as_str())
    .bind(d.source.as_str())
    .bind(d.git.as_ref().map(|g| g.url.clone()))
    .bind(d.git.as_ref().and_then(|g| g.git_ref.clone()))
    .bind(serde_json::to_string(&d.build).expect("serializes"))
    .bind(serde_json::to_string(&d.env).expect("serializes"))
    .bind(serde_json::to_string(&d.site).expect("serializes"))
    .bind(&d.error)
    .bind(&d.idempotency_key)
    .bind(&d.task)
    .bind(&d.created_at)
    .bind(&d.updated_at)
    .bind(now_us())
    .bind(i64::from(d.preview))
    .bind(&d.branch)
    .execute(&mut *tx)
    .await?;
    let key = format!("{}.created", d.id);
    super::notify::enqueue(&mut tx, &d.id, "created", &key, now_us()).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn get(pool: &AnyPool, id: &str) -> DbResult<Option<DeploymentRow>> {
    Ok(sqlx::query_as(&format!("{SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

pub(super) async fn by_idempotency_key(
    pool: &AnyPool,
    slug: &str,
    key: &str,
) -> DbResult<Option<DeploymentRow>> {
    Ok(sqlx::query_as(&format!(
        "{SELECT} WHERE slug = $1 AND idempotency_key = $2"
    ))
    .bind(slug)
    .bind(key)
    .fetch_optional(pool)
    .await?)
}

pub(super) async fn list(pool: &AnyPool, slug: &str, limit: u32) -> DbResult<Vec<DeploymentRow>> {
    Ok(sqlx::query_as(&format!(
        "{SELECT} WHERE slug = $1 ORDER BY created_us DESC, created_at DESC, id DESC LIMIT $2"
    ))
    .bind(slug)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?)
}

pub(super) async fn non_terminal(pool: &AnyPool) -> DbResult<Vec<DeploymentRow>> {
    Ok(sqlx::query_as(&format!(
        "{SELECT} WHERE status IN {RUNNING} ORDER BY created_us, created_at"
    ))
    .fetch_all(pool)
    .await?)
}

pub(super) async fn all(pool: &AnyPool) -> DbResult<Vec<DeploymentRow>> {
    Ok(sqlx::query_as(&format!(
        "{SELECT} ORDER BY slug, created_us, created_at, id"
    ))
    .fetch_all(pool)
    .await?)
}

pub(super) async fn delete(pool: &AnyPool, id: &str) -> DbResult<()> {
    sqlx::query("DELETE FROM commit_targets WHERE deployment = $1")
        .bind(id)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM deployments WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn set_status(
    pool: &AnyPool,
    id: &str,
    status: Status,
    error: Option<&str>,
) -> DbResult<bool> {
    let mut tx = pool.begin().await?;
    let r = sqlx::query(&format!(
        "UPDATE deployments SET status = $1, error = COALESCE($2, error), updated_at = $3 \
         WHERE id = $4 AND status IN {RUNNING}"
    ))
    .bind(status.as_str())
    .bind(error)
    .bind(cdeploy_core::now_rfc3339())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let changed = r.rows_affected() == 1;
    // Its event leaves with it or not at all (a crash between the two loses neither).
    if let Some(event) = NotifyEvent::of_status(status).filter(|_| changed) {
        let key = format!("{id}.{event}");
        super::notify::enqueue(&mut tx, id, event.as_str(), &key, now_us()).await?;
    }
    tx.commit().await?;
    Ok(changed)
}

pub(super) async fn set_request_hash(pool: &AnyPool, id: &str, hash: &str) -> DbResult<()> {
    sqlx::query("UPDATE deployments SET request_hash = $1 WHERE id = $2")
        .bind(hash)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn request_hash(pool: &AnyPool, id: &str) -> DbResult<Option<String>> {
    let hash: Option<Option<String>> =
        sqlx::query_scalar("SELECT request_hash FROM deployments WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(hash.flatten())
}

pub(super) async fn set_alias(
    pool: &AnyPool,
    slug: &str,
    label: &str,
    id: &str,
    created_at: &str,
) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO aliases (slug, label, deployment, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (slug, label) DO UPDATE SET deployment = excluded.deployment, \
         created_at = excluded.created_at WHERE aliases.created_at <= excluded.created_at",
    )
    .bind(slug)
    .bind(label)
    .bind(id)
    .bind(created_at)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn alias(pool: &AnyPool, slug: &str, label: &str) -> DbResult<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT deployment FROM aliases WHERE slug = $1 AND label = $2")
            .bind(slug)
            .bind(label)
            .fetch_optional(pool)
            .await?,
    )
}

pub(super) async fn aliased(pool: &AnyPool) -> DbResult<Vec<String>> {
    Ok(sqlx::query_scalar("SELECT deployment FROM aliases")
        .fetch_all(pool)
        .await?)
}

pub(super) async fn delete_alias(pool: &AnyPool, slug: &str, label: &str) -> DbResult<bool> {
    let r = sqlx::query("DELETE FROM aliases WHERE slug = $1 AND label = $2")
        .bind(slug)
        .bind(label)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Records what a deployment's build read: the digest, each part (JSON) and the commit.
pub(super) async fn set_inputs(
    pool: &AnyPool,
    id: &str,
    inputs: &cdeploy_core::api::BuildInputs,
) -> DbResult<()> {
    sqlx::query(
        "UPDATE deployments SET input_digest = $1, inputs = $2, \
         commit_sha = COALESCE($3, commit_sha) WHERE id = $4",
    )
    .bind(&inputs.digest)
    .bind(serde_json::to_string(&inputs.parts).expect("serializes"))
    .bind(&inputs.commit)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// A deployment's recorded inputs (`None`: none were), with the commit.
pub(super) async fn inputs(
    pool: &AnyPool,
    id: &str,
) -> DbResult<Option<cdeploy_core::api::BuildInputs>> {
    let row: Option<(Option<String>, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT input_digest, inputs, commit_sha FROM deployments WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    let Some((Some(digest), Some(parts), commit)) = row else {
        return Ok(None);
    };
    let parts = serde_json::from_str(&parts).map_err(|e| {
        super::StoreError::Failed(format!("deployments.inputs of {id} does not parse: {e}"))
    })?;
    Ok(Some(cdeploy_core::api::BuildInputs {
        digest,
        parts,
        commit,
        reuse: false,
    }))
}

/// Ready deployments of `slug`'s target (`preview`) built from `digest`, newest first,
/// without those known to name themselves in their output: `(id, checked)` where
/// `checked` says whether that is known not to be so.
pub(super) async fn reusable(
    pool: &AnyPool,
    slug: &str,
    preview: bool,
    digest: &str,
    except: &str,
) -> DbResult<Vec<(String, bool)>> {
    let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT id, names_itself FROM deployments WHERE slug = $1 AND input_digest = $2 \
         AND preview = $3 AND status = 'ready' AND id <> $4 \
         AND (names_itself IS NULL OR names_itself = 0) \
         ORDER BY created_us DESC, created_at DESC, id DESC LIMIT 5",
    )
    .bind(slug)
    .bind(digest)
    .bind(i64::from(preview))
    .bind(except)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(id, n)| (id, n == Some(0))).collect())
}

/// Records whether a deployment's output names its own id or URL.
pub(super) async fn set_names_itself(pool: &AnyPool, id: &str, names: bool) -> DbResult<()> {
    sqlx::query("UPDATE deployments SET names_itself = $1 WHERE id = $2")
        .bind(i64::from(names))
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records that `id` took `from`'s output instead of building.
pub(super) async fn set_reused_from(pool: &AnyPool, id: &str, from: &str) -> DbResult<()> {
    sqlx::query("UPDATE deployments SET reused_from = $1 WHERE id = $2")
        .bind(from)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// The newest deployment of `slug`'s target (`preview`) created before `id` whose
/// inputs were recorded.
pub(super) async fn inputs_before(
    pool: &AnyPool,
    slug: &str,
    preview: bool,
    id: &str,
) -> DbResult<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT d.id FROM deployments d, deployments me WHERE me.id = $1 AND d.slug = $2 \
         AND d.preview = $3 AND d.input_digest IS NOT NULL AND d.id <> me.id \
         AND (d.created_us < me.created_us OR (d.created_us = me.created_us AND d.id < me.id)) \
         ORDER BY d.created_us DESC, d.id DESC LIMIT 1",
    )
    .bind(id)
    .bind(slug)
    .bind(i64::from(preview))
    .fetch_optional(pool)
    .await?)
}

/// Whether a deployment of `slug`'s target created before `id` with the same digest is
/// still building (a forced build of the same inputs whose output may be newer).
pub(super) async fn building_same(
    pool: &AnyPool,
    slug: &str,
    preview: bool,
    digest: &str,
    id: &str,
) -> DbResult<bool> {
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM deployments d, deployments me WHERE me.id = $1 \
         AND d.slug = $2 AND d.preview = $3 AND d.input_digest = $4 AND d.id <> me.id \
         AND d.status IN {RUNNING} AND d.created_us <= me.created_us"
    ))
    .bind(id)
    .bind(slug)
    .bind(i64::from(preview))
    .bind(digest)
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}

/// Whether an earlier deployment of `slug` shares deployment `id`'s cache scope (the
/// same preview flag and branch): then `id`'s build may have used what that scope's
/// builds left (`layout::cache_scope`).
pub(super) async fn earlier_in_scope(pool: &AnyPool, slug: &str, id: &str) -> DbResult<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM deployments d, deployments me WHERE me.id = $1 \
         AND d.slug = $2 AND d.id <> me.id AND d.preview = me.preview \
         AND (d.branch = me.branch OR (d.branch IS NULL AND me.branch IS NULL)) \
         AND (d.created_us < me.created_us OR (d.created_us = me.created_us AND d.id < me.id))",
    )
    .bind(id)
    .bind(slug)
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}
