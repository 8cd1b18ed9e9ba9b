//! Metadata: projects, deployments and API tokens, behind the [`Store`] trait.
//! [`SqliteStore`] is the embedded default.

use std::str::FromStr;

use async_trait::async_trait;
use cdeploy_core::api::{GitSource, SourceKind};
use cdeploy_core::config::{BuildConfig, SiteConfig};
use cdeploy_core::event::Status;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::collections::BTreeMap;

pub type DbResult<T> = Result<T, sqlx::Error>;

#[derive(Debug, Clone)]
pub struct ProjectRow {
    pub slug: String,
    pub git: Option<String>,
    pub production: Option<String>,
    pub created_at: String,
}

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
    pub created_at: String,
    pub updated_at: String,
}

/// What the control plane persists. Every call is one short transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get_project(&self, slug: &str) -> DbResult<Option<ProjectRow>>;
    async fn list_projects(&self) -> DbResult<Vec<ProjectRow>>;
    /// Inserts the project if it does not exist; returns whether it was created.
    async fn create_project(&self, slug: &str, git: Option<&str>) -> DbResult<bool>;
    async fn set_project_git(&self, slug: &str, git: Option<&str>) -> DbResult<()>;
    async fn set_production(&self, slug: &str, deployment: Option<&str>) -> DbResult<()>;
    async fn delete_project(&self, slug: &str) -> DbResult<bool>;

    async fn insert_deployment(&self, d: &DeploymentRow) -> DbResult<()>;
    async fn get_deployment(&self, id: &str) -> DbResult<Option<DeploymentRow>>;
    async fn find_by_idempotency_key(
        &self,
        slug: &str,
        key: &str,
    ) -> DbResult<Option<DeploymentRow>>;
    /// Newest first.
    async fn list_deployments(&self, slug: &str, limit: u32) -> DbResult<Vec<DeploymentRow>>;
    async fn non_terminal_deployments(&self) -> DbResult<Vec<DeploymentRow>>;
    /// Moves a deployment to `status`, unless it is already terminal. Returns whether it changed.
    async fn set_status(&self, id: &str, status: Status, error: Option<&str>) -> DbResult<bool>;

    async fn token_count(&self) -> DbResult<i64>;
    async fn insert_token(&self, hash: &str, name: &str) -> DbResult<()>;
    async fn token_exists(&self, hash: &str) -> DbResult<bool>;
}

pub struct SqliteStore {
    pool: SqlitePool,
}

const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE projects (
    slug        TEXT PRIMARY KEY,
    git         TEXT,
    production  TEXT,
    created_at  TEXT NOT NULL
);
CREATE TABLE deployments (
    id               TEXT PRIMARY KEY,
    slug             TEXT NOT NULL,
    status           TEXT NOT NULL,
    source           TEXT NOT NULL,
    git_url          TEXT,
    git_ref          TEXT,
    build            TEXT NOT NULL,
    env              TEXT NOT NULL,
    site             TEXT NOT NULL,
    error            TEXT,
    idempotency_key  TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX deployments_by_slug ON deployments (slug, created_at);
CREATE INDEX deployments_by_status ON deployments (status);
CREATE UNIQUE INDEX deployments_idempotency ON deployments (slug, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE tokens (
    hash        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
"#];

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `url` (`sqlite://path`).
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *tx)
            .await?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::raw_sql(&format!("PRAGMA user_version = {}", i + 1))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

fn project(row: &sqlx::sqlite::SqliteRow) -> ProjectRow {
    ProjectRow {
        slug: row.get("slug"),
        git: row.get("git"),
        production: row.get("production"),
        created_at: row.get("created_at"),
    }
}

fn deployment(row: &sqlx::sqlite::SqliteRow) -> DeploymentRow {
    let json = |col: &str| row.get::<String, _>(col);
    let git_url: Option<String> = row.get("git_url");
    DeploymentRow {
        id: row.get("id"),
        slug: row.get("slug"),
        status: Status::parse(&row.get::<String, _>("status")).unwrap_or(Status::Failed),
        source: SourceKind::parse(&row.get::<String, _>("source")).unwrap_or(SourceKind::Git),
        git: git_url.map(|url| GitSource {
            url,
            git_ref: row.get("git_ref"),
        }),
        build: serde_json::from_str(&json("build")).unwrap_or_default(),
        env: serde_json::from_str(&json("env")).unwrap_or_default(),
        site: serde_json::from_str(&json("site")).unwrap_or_default(),
        error: row.get("error"),
        idempotency_key: row.get("idempotency_key"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

const DEPLOYMENT_COLS: &str =
    "id, slug, status, source, git_url, git_ref, build, env, site, error, idempotency_key, created_at, updated_at";

#[async_trait]
impl Store for SqliteStore {
    async fn get_project(&self, slug: &str) -> DbResult<Option<ProjectRow>> {
        let row = sqlx::query("SELECT * FROM projects WHERE slug = ?")
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(project))
    }

    async fn list_projects(&self) -> DbResult<Vec<ProjectRow>> {
        let rows = sqlx::query("SELECT * FROM projects ORDER BY slug")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(project).collect())
    }

    async fn create_project(&self, slug: &str, git: Option<&str>) -> DbResult<bool> {
        let r = sqlx::query("INSERT INTO projects (slug, git, created_at) VALUES (?, ?, ?) ON CONFLICT (slug) DO NOTHING")
            .bind(slug)
            .bind(git)
            .bind(cdeploy_core::now_rfc3339())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn set_project_git(&self, slug: &str, git: Option<&str>) -> DbResult<()> {
        sqlx::query("UPDATE projects SET git = ? WHERE slug = ?")
            .bind(git)
            .bind(slug)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_production(&self, slug: &str, deployment: Option<&str>) -> DbResult<()> {
        sqlx::query("UPDATE projects SET production = ? WHERE slug = ?")
            .bind(deployment)
            .bind(slug)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_project(&self, slug: &str) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM deployments WHERE slug = ?")
            .bind(slug)
            .execute(&mut *tx)
            .await?;
        let r = sqlx::query("DELETE FROM projects WHERE slug = ?")
            .bind(slug)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    async fn insert_deployment(&self, d: &DeploymentRow) -> DbResult<()> {
        sqlx::query(&format!("INSERT INTO deployments ({DEPLOYMENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"))
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
            .bind(&d.created_at)
            .bind(&d.updated_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_deployment(&self, id: &str) -> DbResult<Option<DeploymentRow>> {
        let row = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLS} FROM deployments WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(deployment))
    }

    async fn find_by_idempotency_key(
        &self,
        slug: &str,
        key: &str,
    ) -> DbResult<Option<DeploymentRow>> {
        let row = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLS} FROM deployments WHERE slug = ? AND idempotency_key = ?"
        ))
        .bind(slug)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(deployment))
    }

    async fn list_deployments(&self, slug: &str, limit: u32) -> DbResult<Vec<DeploymentRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLS} FROM deployments WHERE slug = ? ORDER BY created_at DESC, rowid DESC LIMIT ?"
        ))
        .bind(slug)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(deployment).collect())
    }

    async fn non_terminal_deployments(&self) -> DbResult<Vec<DeploymentRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLS} FROM deployments WHERE status IN ('queued', 'building', 'uploading') ORDER BY created_at"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(deployment).collect())
    }

    async fn set_status(&self, id: &str, status: Status, error: Option<&str>) -> DbResult<bool> {
        let r = sqlx::query(
            "UPDATE deployments SET status = ?, error = COALESCE(?, error), updated_at = ? \
             WHERE id = ? AND status IN ('queued', 'building', 'uploading')",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(cdeploy_core::now_rfc3339())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn token_count(&self) -> DbResult<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
            .fetch_one(&self.pool)
            .await
    }

    async fn insert_token(&self, hash: &str, name: &str) -> DbResult<()> {
        sqlx::query("INSERT INTO tokens (hash, name, created_at) VALUES (?, ?, ?)")
            .bind(hash)
            .bind(name)
            .bind(cdeploy_core::now_rfc3339())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn token_exists(&self, hash: &str) -> DbResult<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens WHERE hash = ?")
            .bind(hash)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }
}
