//! The service layer's error: what went wrong in words a client may read, a stable code
//! from [`cdeploy_core::api::codes`] and a [`Kind`] the HTTP layer turns into a status
//! (`api::error`'s one `From`). Internal causes are logged here, never carried out.

use cdeploy_core::api::codes;
use cdeploy_storage::StorageError;

use crate::db::StoreError;

/// What kind of failure, independent of the protocol that reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed or breaks a rule (400).
    Invalid,
    /// No valid credential (401).
    Unauthenticated,
    /// A credential that may not do this (403).
    Forbidden,
    /// The thing named does not exist (404).
    NotFound,
    /// The current state does not allow it (409).
    Conflict,
    /// It existed and is gone for good (410).
    Gone,
    /// Past a size or count limit (413).
    TooLarge,
    /// A content encoding this route does not speak (415).
    UnsupportedEncoding,
    /// Well-formed but inconsistent: a hash that does not match, a reused key (422).
    Unprocessable,
    /// Too many requests, or a full queue (429).
    RateLimited,
    /// A failure of ours (500).
    Internal,
    /// A backend is down or the server is stopping (503).
    Unavailable,
}

/// A failed operation. `message` is safe to show to the caller.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: Kind,
    pub code: &'static str,
    pub message: String,
    /// The blobs a deployment's file list names that are not stored yet.
    pub missing: Option<Vec<String>>,
    /// Seconds after which a retry may succeed.
    pub retry_after: Option<u64>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> Self {
        Error {
            kind,
            code,
            message: message.into(),
            missing: None,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, codes::BAD_REQUEST, message)
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            Kind::NotFound,
            codes::NOT_FOUND,
            format!("{what} not found"),
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, codes::CONFLICT, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(Kind::TooLarge, codes::PAYLOAD_TOO_LARGE, message)
    }

    /// A backend that is down: retry after `seconds`.
    pub fn unavailable(message: impl Into<String>, seconds: u64) -> Self {
        let mut e = Self::new(Kind::Unavailable, codes::UNAVAILABLE, message);
        e.retry_after = Some(seconds);
        e
    }

    /// A failure of ours: logged with its cause, answered with a generic message.
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{context}");
        Self::new(
            Kind::Internal,
            codes::INTERNAL,
            format!("{context}; see the server log"),
        )
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Error::conflict(
                "a record with the same key is being created by another request; retry",
            ),
            StoreError::Unavailable(why) => {
                tracing::warn!(error = %why, "database unavailable");
                Error::unavailable("the database is unavailable; retry shortly", 5)
            }
            StoreError::Failed(why) => Error::internal("database error", why),
        }
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            // The backend's own words (`S3 PutObject …: InternalError: …`), so a client
            // retries and, if it persists, reports why; they hold no secret.
            StorageError::Backend(msg) => {
                tracing::warn!(error = %msg, "storage unavailable");
                Error::unavailable(format!("storage is unavailable: {msg}"), 5)
            }
            StorageError::HashMismatch { .. } => {
                Error::new(Kind::Unprocessable, codes::HASH_MISMATCH, e.to_string())
            }
            e => Error::internal("storage error", e),
        }
    }
}
