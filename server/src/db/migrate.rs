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

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

use anyhow::Context;
use futures_util::FutureExt;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migrate, Migration, MigrationSource, MigrationType, Migrator};
use sqlx::AnyConnection;
use sqlx::AnyPool;

use super::backend::Backend;

/// Every migration, in order: its file name and SQL, embedded at build time. (Listed
/// rather than read by `sqlx::migrate!`: the macro alone made a release build compile
/// sqlx and both drivers a second time, for the host; `every_file_is_listed` fails when
/// a file in `server/migrations/` is missing here.)
const FILES: &[(&str, &str)] = &[
    (
        "0001_initial.sql",
        include_str!("../../migrations/0001_initial.sql"),
    ),
    (
        "0002_build_tasks.sql",
        include_str!("../../migrations/0002_build_tasks.sql"),
    ),
    (
        "0003_build_claims.sql",
        include_str!("../../migrations/0003_build_claims.sql"),
    ),
    (
        "0004_hostile_load.sql",
        include_str!("../../migrations/0004_hostile_load.sql"),
    ),
    (
        "0005_team_tokens_and_audit.sql",
        include_str!("../../migrations/0005_team_tokens_and_audit.sql"),
    ),
    (
        "0006_previews.sql",
        include_str!("../../migrations/0006_previews.sql"),
    ),
    (
        "0007_secrets.sql",
        include_str!("../../migrations/0007_secrets.sql"),
    ),
    (
        "0008_git_push.sql",
        include_str!("../../migrations/0008_git_push.sql"),
    ),
    (
        "0009_replays.sql",
        include_str!("../../migrations/0009_replays.sql"),
    ),
    (
        "0010_audit_buckets.sql",
        include_str!("../../migrations/0010_audit_buckets.sql"),
    ),
    (
        "0011_domains.sql",
        include_str!("../../migrations/0011_domains.sql"),
    ),
    (
        "0012_runtime_secrets.sql",
        include_str!("../../migrations/0012_runtime_secrets.sql"),
    ),
    (
        "0013_notifications.sql",
        include_str!("../../migrations/0013_notifications.sql"),
    ),
    (
        "0014_oidc.sql",
        include_str!("../../migrations/0014_oidc.sql"),
    ),
    (
        "0015_dashboard_sessions.sql",
        include_str!("../../migrations/0015_dashboard_sessions.sql"),
    ),
    (
        "0016_build_inputs.sql",
        include_str!("../../migrations/0016_build_inputs.sql"),
    ),
];

/// [`FILES`] as sqlx's migrations, named the way its folder source names them
/// (`0005_team_tokens.sql` is version 5, "team tokens"), so databases migrated by
/// `sqlx::migrate!` find the same versions and checksums.
#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(async {
            FILES
                .iter()
                .map(|(file, sql)| {
                    let (version, rest) = file.split_once('_').ok_or("no version")?;
                    let description = rest.trim_end_matches(".sql").replace('_', " ");
                    let no_tx = sql.starts_with("-- no-transaction");
                    Ok(Migration::new(
                        version.parse()?,
                        description.into(),
                        MigrationType::Simple,
                        (*sql).into(),
                        no_tx,
                    ))
                })
                .collect()
        })
    }
}

/// The migrator over [`FILES`].
pub(super) static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    Migrator::new(Embedded)
        .now_or_never()
        .expect("embedded migrations resolve at once")
        .expect("embedded migrations are named NNNN_description.sql")
});

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let listed: Vec<&str> = FILES.iter().map(|(f, _)| *f).collect();
        assert_eq!(on_disk, listed);
        let versions: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        assert_eq!(versions, (1..=FILES.len() as i64).collect::<Vec<_>>());
        assert_eq!(
            MIGRATOR.iter().nth(4).unwrap().description,
            "team tokens and audit"
        );
    }
}
