//! Projects: their rows, the production pointer (which only moves forward on its own, see
//! [`Advance`]) and a project's deletion with everything that belongs to it.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, FromRow};

use super::columns::Columns;
use super::DbResult;

#[derive(Debug, Clone)]
pub struct ProjectRow {
    pub slug: String,
    pub git: Option<String>,
    pub production: Option<String>,
    pub created_at: String,
    /// Being deleted: refuses new deployments and activations.
    pub deleting: bool,
}

impl FromRow<'_, AnyRow> for ProjectRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let c = Columns::of(row, "projects");
        Ok(ProjectRow {
            slug: c.get("slug")?,
            git: c.get("git")?,
            production: c.get("production")?,
            created_at: c.get("created_at")?,
            deleting: c.flag("deleting")?,
        })
    }
}

/// What became of a request to make a deployment production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// It is production now.
    Advanced,
    /// A deployment created after it is production already: it stays a preview.
    Superseded,
    /// The project is gone or being deleted, or the deployment is gone.
    Gone,
}

pub(super) async fn get(pool: &AnyPool, slug: &str) -> DbResult<Option<ProjectRow>> {
    Ok(sqlx::query_as("SELECT * FROM projects WHERE slug = $1")
        .bind(slug)
        .fetch_optional(pool)
        .await?)
}

pub(super) async fn list(pool: &AnyPool) -> DbResult<Vec<ProjectRow>> {
    Ok(sqlx::query_as("SELECT * FROM projects ORDER BY slug")
        .fetch_all(pool)
        .await?)
}

pub(super) async fn create(pool: &AnyPool, slug: &str, git: Option<&str>) -> DbResult<bool> {
    let r = sqlx::query(
        "INSERT INTO projects (slug, git, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (slug) DO NOTHING",
    )
    .bind(slug)
    .bind(git)
    .bind(cdeploy_core::now_rfc3339())
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub(super) async fn set_git(pool: &AnyPool, slug: &str, git: Option<&str>) -> DbResult<()> {
    sqlx::query("UPDATE projects SET git = $1 WHERE slug = $2")
        .bind(git)
        .bind(slug)
        .execute(pool)
        .await?;
    Ok(())
}

/// Makes `deployment` production by hand, writing the event it makes (`promoted` or
/// `rolled_back`, with its message key) in the same transaction.
pub(super) async fn promote(
    pool: &AnyPool,
    slug: &str,
    deployment: &str,
    event: Option<(&str, &str)>,
) -> DbResult<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE projects SET production = $1 WHERE slug = $2")
        .bind(deployment)
        .bind(slug)
        .execute(&mut *tx)
        .await?;
    if let Some((event, key)) = event {
        super::notify::enqueue(&mut tx, deployment, event, key, super::now_us()).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn mark_deleting(pool: &AnyPool, slug: &str) -> DbResult<bool> {
    let r = sqlx::query("UPDATE projects SET deleting = 1 WHERE slug = $1")
        .bind(slug)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub(super) async fn advance_production(pool: &AnyPool, slug: &str, id: &str) -> DbResult<Advance> {
    let r = sqlx::query(
        "UPDATE projects SET production = $2 WHERE slug = $1 AND deleting = 0 \
         AND EXISTS (SELECT 1 FROM deployments n WHERE n.id = $2 AND n.slug = projects.slug) AND ( \
           production IS NULL \
           OR NOT EXISTS (SELECT 1 FROM deployments p WHERE p.id = projects.production) \
           OR (SELECT p.created_us FROM deployments p WHERE p.id = projects.production) \
              <= (SELECT d.created_us FROM deployments d WHERE d.id = $2))",
    )
    .bind(slug)
    .bind(id)
    .execute(pool)
    .await?;
    if r.rows_affected() == 1 {
        return Ok(Advance::Advanced);
    }
    let live: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM projects p WHERE p.slug = $1 AND p.deleting = 0 \
         AND EXISTS (SELECT 1 FROM deployments n WHERE n.id = $2 AND n.slug = p.slug)",
    )
    .bind(slug)
    .bind(id)
    .fetch_one(pool)
    .await?;
    Ok(if live == 0 {
        Advance::Gone
    } else {
        Advance::Superseded
    })
}

/// Deletes a project and everything of it, in one transaction.
pub(super) async fn delete(pool: &AnyPool, slug: &str) -> DbResult<bool> {
    let mut tx = pool.begin().await?;
    for statement in [
        "DELETE FROM commit_targets WHERE deployment IN (SELECT id FROM deployments WHERE slug = $1)",
        "DELETE FROM deployments WHERE slug = $1",
        "DELETE FROM aliases WHERE slug = $1",
        "DELETE FROM secrets WHERE slug = $1",
        "DELETE FROM git_links WHERE slug = $1",
        "DELETE FROM deliveries WHERE slug = $1",
        "DELETE FROM deploy_hooks WHERE slug = $1",
        "DELETE FROM notify_outbox WHERE slug = $1",
        "DELETE FROM notify_attempts WHERE hook IN (SELECT id FROM notify_hooks WHERE slug = $1)",
        "DELETE FROM notify_hooks WHERE slug = $1",
        "DELETE FROM pr_comments WHERE slug = $1",
        "DELETE FROM oidc_trusts WHERE slug = $1",
    ] {
        sqlx::query(statement).bind(slug).execute(&mut *tx).await?;
    }
    let r = sqlx::query("DELETE FROM projects WHERE slug = $1")
        .bind(slug)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(r.rows_affected() == 1)
}
