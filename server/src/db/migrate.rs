//! The schema: `server/migrations/NNNN_*.sql`, run in order by sqlx's migrator, which
//! records each one in `_sqlx_migrations` (Postgres replicas starting together take
//! turns on an advisory lock). Both backends run the same files.
//!
//! Servers before these files kept the same steps in code and marked how many had run:
//! SQLite in `PRAGMA user_version`, Postgres in a one-row table `cdeploy_schema`. Step
//! `n` of that list is migration `n` here, statement for statement. A database with such
//! a marker is adopted before the migrator runs ([`bridge`]): migrations `1..=n` are
//! recorded as applied (with `execution_time` -1: adopted, not run), the marker is
//! removed, and the migrator then runs only what the old server had not. All of that is
//! one transaction, so a failure leaves the old marker in place for the next start.

use anyhow::Context;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::AnyConnection;
use sqlx::AnyPool;

use super::backend::Backend;

/// Every migration, embedded at build time (`server/build.rs` rebuilds on a change).
pub(super) static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The last step the old in-code list had: a marker above it is not ours to adopt.
const LAST_MARKED: i64 = 10;

/// The old Postgres servers' lock around their migrations: the bridge takes it too, so an
/// old server starting beside a new one never runs a step the bridge is adopting.
const OLD_POSTGRES_LOCK: i64 = 727274001;

/// Brings the schema up to date: adopts an old marker, then runs what is missing.
pub(super) async fn run(pool: &AnyPool, backend: Backend) -> anyhow::Result<()> {
    bridge(pool, backend)
        .await
        .context("cannot adopt the schema version of an older server")?;
    MIGRATOR
        .run(pool)
        .await
        .context("cannot migrate the database")?;
    Ok(())
}

/// Adopts the schema marker an older server left, if there is one (see the module docs).
async fn bridge(pool: &AnyPool, backend: Backend) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let marked = match backend {
        Backend::Sqlite => {
            let version: i64 = sqlx::query_scalar("PRAGMA user_version")
                .fetch_one(&mut *tx)
                .await?;
            (version > 0).then_some(version)
        }
        Backend::Postgres => {
            sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                .bind(OLD_POSTGRES_LOCK)
                .execute(&mut *tx)
                .await?;
            let table: Option<String> =
                sqlx::query_scalar("SELECT to_regclass('cdeploy_schema')::text")
                    .fetch_one(&mut *tx)
                    .await?;
            match table {
                Some(_) => Some(
                    sqlx::query_scalar("SELECT version FROM cdeploy_schema")
                        .fetch_one(&mut *tx)
                        .await?,
                ),
                None => None,
            }
        }
    };
    let Some(marked) = marked else {
        return Ok(());
    };
    anyhow::ensure!(
        marked <= LAST_MARKED,
        "the database says schema version {marked}, newer than this server knows ({LAST_MARKED})"
    );
    record_applied(&mut tx, marked).await?;
    let forget = match backend {
        Backend::Sqlite => "PRAGMA user_version = 0",
        Backend::Postgres => "DROP TABLE cdeploy_schema",
    };
    sqlx::query(forget).execute(&mut *tx).await?;
    tx.commit().await?;
    tracing::info!(
        version = marked,
        "adopted the schema version of an older server"
    );
    Ok(())
}

/// Records migrations `1..=marked` as applied, the way the migrator records its own.
async fn record_applied(conn: &mut AnyConnection, marked: i64) -> anyhow::Result<()> {
    conn.ensure_migrations_table().await?;
    for m in MIGRATOR.iter().filter(|m| m.version <= marked) {
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ($1, $2, TRUE, $3, -1) ON CONFLICT (version) DO NOTHING",
        )
        .bind(m.version)
        .bind(m.description.to_string())
        .bind(m.checksum.to_vec())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
