//! Connecting: the `--database` URL picks the backend, each gets the pool settings it
//! needs, and the schema is brought up to date before the store answers.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, ConnectOptions, Executor};

use super::backend::Backend;
use super::Store;

/// The store, for SQLite and Postgres alike: one pool of sqlx's `Any` driver.
pub struct SqlStore {
    pub(super) pool: AnyPool,
    pub(super) backend: Backend,
}

/// Opens the database a `--database` URL names: `sqlite://PATH` or `postgres://…`.
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    Ok(Arc::new(SqlStore::open(url).await?))
}

impl SqlStore {
    /// Connects to (creating a missing SQLite file) and migrates the database at `url`.
    /// Postgres replicas starting together take turns, so each migration runs once.
    pub async fn open(url: &str) -> anyhow::Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            SqlStore {
                pool: postgres_pool(url).await?,
                backend: Backend::Postgres,
            }
        } else {
            SqlStore {
                pool: sqlite_pool(url).await?,
                backend: Backend::Sqlite,
            }
        };
        super::migrate::run(&store.pool, store.backend).await?;
        Ok(store)
    }
}

async fn sqlite_pool(url: &str) -> anyhow::Result<AnyPool> {
    // The `Any` driver takes its options as a URL: the file is named as SQLite's own
    // driver reads `url` (a `#` or a space in the path stays part of the name), and is
    // created if missing. An in-memory database lives in its connection, so it gets
    // one, kept for the pool's life (and its URL as it is: sqlx writes none for it).
    let memory = url.contains(":memory:");
    let opts = if memory {
        AnyConnectOptions::from_str(url)?
    } else {
        let sqlite = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
        AnyConnectOptions::from_url(&sqlite.to_url_lossy())?
    };
    let pool = if memory {
        AnyPoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        AnyPoolOptions::new().max_connections(8)
    };
    // Nor does a URL carry these, so each connection is set up here:
    // WAL (readers never wait for the writer), NORMAL sync (durable in WAL but for the
    // last commits on power loss), waiting up to 10 s for a lock, foreign keys on.
    let pool = pool
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                )
                .await?;
                Ok(())
            })
        })
        .connect_with(opts)
        .await?;
    Ok(pool)
}

async fn postgres_pool(url: &str) -> anyhow::Result<AnyPool> {
    let opts = AnyConnectOptions::from_str(url)?;
    let pool = AnyPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await?;
    Ok(pool)
}
