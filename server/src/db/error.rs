//! What the store can fail with, in its callers' terms (never the driver's types).

/// The result of every [`Store`](super::Store) call.
pub type DbResult<T> = Result<T, StoreError>;

/// What the store can fail with, in its callers' terms (never the driver's types).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row with the same key exists (two requests raced to create it).
    #[error("a record with the same key exists")]
    Conflict,
    /// The database cannot be reached or has no connection free: worth a retry.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a failed statement, a broken row (its message names the table and
    /// the column that did not read).
    #[error("database error: {0}")]
    Failed(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::Decode(_) => StoreError::Failed(format!("a broken row: {e}")),
            other => StoreError::Failed(other.to_string()),
        }
    }
}
