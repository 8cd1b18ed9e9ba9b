//! What can go wrong while answering a request.

use std::sync::Arc;

use cdeploy_core::manifest::ProtectionUnreadable;
use cdeploy_storage::StorageError;

/// What went wrong while answering; turned into a response by [`crate::serve::error_page`].
#[derive(Debug)]
pub enum ProxyError {
    UnknownHost,
    BadRequest(&'static str),
    MethodNotAllowed,
    NotFound,
    /// A rule's 410 without a page.
    Gone,
    /// A rule's upstream did not answer (why, for the log).
    Upstream(String),
    /// A rule proxies to an address the operator does not allow (why, for the log).
    UpstreamRefused(String),
    /// A proxied request came back to this proxy (a rule proxying to the platform).
    LoopDetected,
    /// A deployment's server could not start, crashed, or did not answer (why, for
    /// the log), and in how many seconds it is tried again when that is known.
    Runtime(String, Option<u64>),
    /// Past a limit of work at once.
    Busy(&'static str),
    /// A rule filled in a target longer than the limit.
    UriTooLong,
    Storage(StorageError),
    /// A preview protection record this proxy can't open (sealed, without its key).
    ProtectionUnreadable(Arc<ProtectionUnreadable>),
}

impl From<StorageError> for ProxyError {
    fn from(e: StorageError) -> Self {
        ProxyError::Storage(e)
    }
}

impl From<Arc<StorageError>> for ProxyError {
    fn from(e: Arc<StorageError>) -> Self {
        // Shared by every request that waited on the same read.
        ProxyError::Storage(match Arc::try_unwrap(e) {
            Ok(e) => e,
            Err(shared) => StorageError::Backend(shared.to_string()),
        })
    }
}
