//! Stored secrets: one sealed value per project, name and target (see `crate::service::secrets`
//! for the sealing).

use cdeploy_core::api::EnvTarget;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, FromRow};

use super::columns::Columns;
use super::DbResult;

/// A stored secret of one project and target, sealed (see `crate::service::secrets`).
#[derive(Clone)]
pub struct SecretRow {
    pub slug: String,
    pub name: String,
    pub target: EnvTarget,
    pub sensitive: bool,
    /// Given to a server app's server at run time too (builds get every variable).
    pub runtime: bool,
    /// The id of the key that sealed it.
    pub key_id: String,
    /// Base64 of the nonce and the ciphertext.
    pub sealed: String,
    pub created_at: String,
    pub updated_at: String,
}

impl std::fmt::Debug for SecretRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRow")
            .field("slug", &self.slug)
            .field("name", &self.name)
            .field("target", &self.target)
            .field("sensitive", &self.sensitive)
            .field("runtime", &self.runtime)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl FromRow<'_, AnyRow> for SecretRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let c = Columns::of(row, "secrets");
        Ok(SecretRow {
            slug: c.get("slug")?,
            name: c.get("name")?,
            target: c.parsed("target", |s| s.parse().ok())?,
            sensitive: c.flag("sensitive")?,
            runtime: c.flag("runtime")?,
            key_id: c.get("key_id")?,
            sealed: c.get("sealed")?,
            created_at: c.get("created_at")?,
            updated_at: c.get("updated_at")?,
        })
    }
}

pub(super) async fn put(pool: &AnyPool, s: &SecretRow) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO secrets (slug, name, target, sensitive, key_id, sealed, created_at, updated_at, runtime) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (slug, name, target) DO UPDATE SET sensitive = excluded.sensitive, \
         key_id = excluded.key_id, sealed = excluded.sealed, updated_at = excluded.updated_at, \
         runtime = excluded.runtime",
    )
    .bind(&s.slug)
    .bind(&s.name)
    .bind(s.target.as_str())
    .bind(i64::from(s.sensitive))
    .bind(&s.key_id)
    .bind(&s.sealed)
    .bind(&s.created_at)
    .bind(&s.updated_at)
    .bind(i64::from(s.runtime))
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn list(pool: &AnyPool, slug: &str) -> DbResult<Vec<SecretRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM secrets WHERE slug = $1 ORDER BY name, target")
            .bind(slug)
            .fetch_all(pool)
            .await?,
    )
}

pub(super) async fn all(pool: &AnyPool) -> DbResult<Vec<SecretRow>> {
    Ok(sqlx::query_as("SELECT * FROM secrets")
        .fetch_all(pool)
        .await?)
}

pub(super) async fn reseal(
    pool: &AnyPool,
    s: &SecretRow,
    key_id: &str,
    sealed: &str,
) -> DbResult<bool> {
    let r = sqlx::query(
        "UPDATE secrets SET key_id = $1, sealed = $2 \
         WHERE slug = $3 AND name = $4 AND target = $5 AND sealed = $6",
    )
    .bind(key_id)
    .bind(sealed)
    .bind(&s.slug)
    .bind(&s.name)
    .bind(s.target.as_str())
    .bind(&s.sealed)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub(super) async fn delete(
    pool: &AnyPool,
    slug: &str,
    name: &str,
    target: Option<EnvTarget>,
) -> DbResult<u64> {
    let r = match target {
        Some(t) => {
            sqlx::query("DELETE FROM secrets WHERE slug = $1 AND name = $2 AND target = $3")
                .bind(slug)
                .bind(name)
                .bind(t.as_str())
                .execute(pool)
                .await?
        }
        None => {
            sqlx::query("DELETE FROM secrets WHERE slug = $1 AND name = $2")
                .bind(slug)
                .bind(name)
                .execute(pool)
                .await?
        }
    };
    Ok(r.rows_affected())
}
