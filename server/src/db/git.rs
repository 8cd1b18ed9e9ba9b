//! Git push deploys: a project's link to its repository (with its sealed webhook
//! secret), every webhook delivery and its decision, deploy hooks, and where each
//! deployment's commit status goes.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, FromRow};

use super::columns::Columns;
use super::DbResult;

/// A project's link to its repository (git push deploys).
#[derive(Clone)]
pub struct GitLinkRow {
    pub slug: String,
    pub repo: String,
    pub production_branch: String,
    /// The webhook secret, sealed (`crate::service::keyring::webhook_secret_aad`).
    pub key_id: String,
    pub sealed_secret: String,
    pub created_at: String,
    /// Each forge gets its own secret, derived from the sealed one
    /// (`crate::service::git::forge_secret`); links made before that use the one secret for all.
    pub per_forge_secrets: bool,
    /// The folder its pushes build (`[build] root`): a monorepo's app. `None`: the
    /// repository's cdeploy.toml decides.
    pub root: Option<String>,
}

impl std::fmt::Debug for GitLinkRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitLinkRow")
            .field("slug", &self.slug)
            .field("repo", &self.repo)
            .field("production_branch", &self.production_branch)
            .finish_non_exhaustive()
    }
}

impl FromRow<'_, AnyRow> for GitLinkRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let c = Columns::of(row, "git_links");
        Ok(GitLinkRow {
            slug: c.get("slug")?,
            repo: c.get("repo")?,
            production_branch: c.get("production_branch")?,
            key_id: c.get("key_id")?,
            sealed_secret: c.get("sealed_secret")?,
            created_at: c.get("created_at")?,
            per_forge_secrets: c.flag("per_forge_secrets")?,
            root: c.get("root")?,
        })
    }
}

/// One webhook delivery (or deploy hook call) and what became of it.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: String,
    pub slug: String,
    pub at: String,
    pub at_us: i64,
    pub forge: String,
    pub event: String,
    /// The forge's id of the delivery (`X-GitHub-Delivery`, …).
    pub delivery: Option<String>,
    /// `accepted`, `skipped` (accepted, and its deployment reused an earlier one's
    /// output), `ignored` or `refused`.
    pub decision: String,
    pub reason: String,
    pub deployment: Option<String>,
    /// SHA-256 of the payload (a replay under another delivery id is the same payload).
    pub payload: Option<String>,
}

impl FromRow<'_, AnyRow> for DeliveryRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let c = Columns::of(row, "deliveries");
        Ok(DeliveryRow {
            id: c.get("id")?,
            slug: c.get("slug")?,
            at: c.get("at")?,
            at_us: c.get("at_us")?,
            forge: c.get("forge")?,
            event: c.get("event")?,
            delivery: c.get("delivery")?,
            decision: c.get("decision")?,
            reason: c.get("reason")?,
            deployment: c.get("deployment")?,
            payload: c.get("payload")?,
        })
    }
}

/// A deploy hook: a secret URL (only its SHA-256 is kept) that deploys a branch.
#[derive(Debug, Clone)]
pub struct DeployHookRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub branch: String,
    pub hash: String,
    pub created_at: String,
}

impl FromRow<'_, AnyRow> for DeployHookRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let c = Columns::of(row, "deploy_hooks");
        Ok(DeployHookRow {
            id: c.get("id")?,
            slug: c.get("slug")?,
            name: c.get("name")?,
            branch: c.get("branch")?,
            hash: c.get("hash")?,
            created_at: c.get("created_at")?,
        })
    }
}

/// Where a deployment's commit status goes: a forge, a repository and a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitTarget {
    pub deployment: String,
    pub forge: String,
    /// The linked repository's path (`owner/name`, GitLab's `group/project`); rows from
    /// before 0.x may hold a GitLab project id, which its API takes as well.
    pub repo: String,
    pub sha: String,
    /// The pull request it was made for (its comment is kept up to date).
    pub pr: Option<i64>,
}

impl FromRow<'_, AnyRow> for CommitTarget {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let c = Columns::of(row, "commit_targets");
        Ok(CommitTarget {
            deployment: c.get("deployment")?,
            forge: c.get("forge")?,
            repo: c.get("repo")?,
            sha: c.get("sha")?,
            pr: c.get("pr")?,
        })
    }
}

pub(super) async fn link(pool: &AnyPool, slug: &str) -> DbResult<Option<GitLinkRow>> {
    Ok(sqlx::query_as("SELECT * FROM git_links WHERE slug = $1")
        .bind(slug)
        .fetch_optional(pool)
        .await?)
}

pub(super) async fn put_link(pool: &AnyPool, l: &GitLinkRow) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO git_links (slug, repo, production_branch, key_id, sealed_secret, created_at, \
         per_forge_secrets, root) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (slug) DO UPDATE SET repo = excluded.repo, \
         production_branch = excluded.production_branch, key_id = excluded.key_id, \
         sealed_secret = excluded.sealed_secret, per_forge_secrets = excluded.per_forge_secrets, \
         root = excluded.root",
    )
    .bind(&l.slug)
    .bind(&l.repo)
    .bind(&l.production_branch)
    .bind(&l.key_id)
    .bind(&l.sealed_secret)
    .bind(&l.created_at)
    .bind(i64::from(l.per_forge_secrets))
    .bind(&l.root)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes a link and the project's deploy hooks with it.
pub(super) async fn delete_link(pool: &AnyPool, slug: &str) -> DbResult<bool> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM deploy_hooks WHERE slug = $1")
        .bind(slug)
        .execute(&mut *tx)
        .await?;
    let r = sqlx::query("DELETE FROM git_links WHERE slug = $1")
        .bind(slug)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(r.rows_affected() == 1)
}

pub(super) async fn all_links(pool: &AnyPool) -> DbResult<Vec<GitLinkRow>> {
    Ok(sqlx::query_as("SELECT * FROM git_links")
        .fetch_all(pool)
        .await?)
}

pub(super) async fn reseal_link(
    pool: &AnyPool,
    l: &GitLinkRow,
    key_id: &str,
    sealed: &str,
) -> DbResult<bool> {
    let r = sqlx::query(
        "UPDATE git_links SET key_id = $1, sealed_secret = $2 \
         WHERE slug = $3 AND sealed_secret = $4",
    )
    .bind(key_id)
    .bind(sealed)
    .bind(&l.slug)
    .bind(&l.sealed_secret)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub(super) async fn insert_delivery(pool: &AnyPool, d: &DeliveryRow, keep: u32) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO deliveries (id, slug, at, at_us, forge, event, delivery, decision, reason, \
         deployment, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&d.id)
    .bind(&d.slug)
    .bind(&d.at)
    .bind(d.at_us)
    .bind(&d.forge)
    .bind(&d.event)
    .bind(&d.delivery)
    .bind(&d.decision)
    .bind(&d.reason)
    .bind(&d.deployment)
    .bind(&d.payload)
    .execute(pool)
    .await?;
    // Deliveries anyone can send (refused and ignored ones) never grow without bound.
    // Accepted ones (and skipped ones: accepted, their deployment reused an earlier
    // output), each signed by the forge and each a deployment or an alias removed, are
    // kept: they are what a replay is recognized by, so no volume of other deliveries
    // may push them out.
    sqlx::query(
        "DELETE FROM deliveries WHERE slug = $1 AND decision NOT IN ('accepted', 'skipped') \
         AND at_us < (SELECT at_us FROM deliveries WHERE slug = $1 \
          AND decision NOT IN ('accepted', 'skipped') ORDER BY at_us DESC LIMIT 1 OFFSET $2)",
    )
    .bind(&d.slug)
    .bind(i64::from(keep) - 1)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn list_deliveries(
    pool: &AnyPool,
    slug: &str,
    limit: u32,
) -> DbResult<Vec<DeliveryRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM deliveries WHERE slug = $1 ORDER BY at_us DESC LIMIT $2")
            .bind(slug)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?,
    )
}

pub(super) async fn accepted_delivery(
    pool: &AnyPool,
    slug: &str,
    forge: &str,
    delivery: &str,
) -> DbResult<Option<DeliveryRow>> {
    Ok(sqlx::query_as(
        "SELECT * FROM deliveries WHERE slug = $1 AND forge = $2 AND delivery = $3 \
         AND decision IN ('accepted', 'skipped') ORDER BY at_us LIMIT 1",
    )
    .bind(slug)
    .bind(forge)
    .bind(delivery)
    .fetch_optional(pool)
    .await?)
}

pub(super) async fn accepted_payload(
    pool: &AnyPool,
    slug: &str,
    payload: &str,
    since_us: Option<i64>,
) -> DbResult<Option<DeliveryRow>> {
    Ok(sqlx::query_as(
        "SELECT * FROM deliveries WHERE slug = $1 AND payload = $2 \
         AND decision IN ('accepted', 'skipped') \
         AND at_us >= $3 ORDER BY at_us LIMIT 1",
    )
    .bind(slug)
    .bind(payload)
    .bind(since_us.unwrap_or(i64::MIN))
    .fetch_optional(pool)
    .await?)
}

pub(super) async fn insert_deploy_hook(pool: &AnyPool, h: &DeployHookRow) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO deploy_hooks (id, slug, name, branch, hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&h.id)
    .bind(&h.slug)
    .bind(&h.name)
    .bind(&h.branch)
    .bind(&h.hash)
    .bind(&h.created_at)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn list_deploy_hooks(pool: &AnyPool, slug: &str) -> DbResult<Vec<DeployHookRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM deploy_hooks WHERE slug = $1 ORDER BY created_at, id")
            .bind(slug)
            .fetch_all(pool)
            .await?,
    )
}

pub(super) async fn deploy_hook_by_hash(
    pool: &AnyPool,
    hash: &str,
) -> DbResult<Option<DeployHookRow>> {
    Ok(sqlx::query_as("SELECT * FROM deploy_hooks WHERE hash = $1")
        .bind(hash)
        .fetch_optional(pool)
        .await?)
}

pub(super) async fn delete_deploy_hook(pool: &AnyPool, slug: &str, id: &str) -> DbResult<bool> {
    let r = sqlx::query("DELETE FROM deploy_hooks WHERE slug = $1 AND id = $2")
        .bind(slug)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub(super) async fn set_commit_target(pool: &AnyPool, t: &CommitTarget) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO commit_targets (deployment, forge, repo, sha, pr) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (deployment) DO NOTHING",
    )
    .bind(&t.deployment)
    .bind(&t.forge)
    .bind(&t.repo)
    .bind(&t.sha)
    .bind(t.pr)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn commit_target(
    pool: &AnyPool,
    deployment: &str,
) -> DbResult<Option<CommitTarget>> {
    Ok(
        sqlx::query_as("SELECT * FROM commit_targets WHERE deployment = $1")
            .bind(deployment)
            .fetch_optional(pool)
            .await?,
    )
}

/// What a report may do with a pull request's comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrSlot {
    /// Create it: this reporter holds the row until it records the id.
    Create,
    /// Edit the comment with this id.
    Edit(String),
    /// Leave it: another reporter is creating it, or it shows a newer deployment.
    Skip,
}

/// A reservation older than this was abandoned (its reporter died): taken over.
const RESERVATION_US: i64 = 5 * 60 * 1_000_000;

/// Decides, for a report of a deployment created at `deployment_at`, whether it
/// creates the project's comment on pull request `pr`, edits it, or leaves it.
pub(super) async fn pr_slot(
    pool: &AnyPool,
    slug: &str,
    t: &CommitTarget,
    pr: i64,
    deployment_at: &str,
) -> DbResult<PrSlot> {
    let now = super::now_us();
    let key = "slug = $1 AND forge = $2 AND repo = $3 AND pr = $4";
    let mut tx = pool.begin().await?;
    let row: Option<(String, String, i64)> = sqlx::query_as(&format!(
        "SELECT comment_id, deployment_at, updated_us FROM pr_comments WHERE {key}"
    ))
    .bind(slug)
    .bind(&t.forge)
    .bind(&t.repo)
    .bind(pr)
    .fetch_optional(&mut *tx)
    .await?;
    let slot = match row {
        None => {
            let r = sqlx::query(
                "INSERT INTO pr_comments (slug, forge, repo, pr, comment_id, deployment_at, \
                 updated_us) VALUES ($1, $2, $3, $4, '', $5, $6) \
                 ON CONFLICT (slug, forge, repo, pr) DO NOTHING",
            )
            .bind(slug)
            .bind(&t.forge)
            .bind(&t.repo)
            .bind(pr)
            .bind(deployment_at)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 1 {
                PrSlot::Create
            } else {
                PrSlot::Skip
            }
        }
        Some((_, shown, _)) if deployment_at < shown.as_str() => PrSlot::Skip,
        Some((id, _, since)) if id.is_empty() && now - since < RESERVATION_US => PrSlot::Skip,
        Some((id, _, since)) => {
            let r = sqlx::query(&format!(
                "UPDATE pr_comments SET deployment_at = $5, updated_us = $6 \
                 WHERE {key} AND deployment_at <= $5 AND updated_us = $7"
            ))
            .bind(slug)
            .bind(&t.forge)
            .bind(&t.repo)
            .bind(pr)
            .bind(deployment_at)
            .bind(now)
            .bind(since)
            .execute(&mut *tx)
            .await?;
            match (r.rows_affected(), id.is_empty()) {
                (1, true) => PrSlot::Create,
                (1, false) => PrSlot::Edit(id),
                _ => PrSlot::Skip,
            }
        }
    };
    tx.commit().await?;
    Ok(slot)
}

/// Records the comment's id once created (`None`: it could not be, or is gone: the
/// next report creates it).
pub(super) async fn set_pr_comment(
    pool: &AnyPool,
    slug: &str,
    t: &CommitTarget,
    pr: i64,
    comment_id: Option<&str>,
) -> DbResult<()> {
    let key = "slug = $1 AND forge = $2 AND repo = $3 AND pr = $4";
    let q = match comment_id {
        Some(_) => format!("UPDATE pr_comments SET comment_id = $5 WHERE {key}"),
        None => format!("DELETE FROM pr_comments WHERE {key}"),
    };
    let mut q = sqlx::query(&q)
        .bind(slug)
        .bind(&t.forge)
        .bind(&t.repo)
        .bind(pr);
    if let Some(id) = comment_id {
        q = q.bind(id);
    }
    q.execute(pool).await?;
    Ok(())
}

/// The delivery that made deployment `id` (if one did) is marked `skipped`: the
/// deployment reused an earlier one's output, for `reason`.
pub(super) async fn delivery_skipped(pool: &AnyPool, id: &str, reason: &str) -> DbResult<()> {
    sqlx::query(
        "UPDATE deliveries SET decision = 'skipped', reason = $1 \
         WHERE deployment = $2 AND decision = 'accepted'",
    )
    .bind(reason)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}
