//! A server app's runtime log: `GET /v1/deployments/{id}/runtime-log`.

use serde::{Deserialize, Serialize};

/// One line a deployment's server printed, or one cdeploy wrote about it (a start, a
/// stop, a request with its id and answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuntimeLogLine {
    /// Increases by one per line of the deployment (`after=` resumes after it).
    pub seq: u64,
    /// RFC 3339, UTC.
    pub at: String,
    /// `stdout`, `stderr` or `system` (cdeploy's own).
    pub stream: String,
    pub text: String,
}

/// `GET /v1/deployments/{id}/runtime-log`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuntimeLog {
    /// Oldest first; only the newest lines are kept (2,000 per deployment, 4 KiB each).
    pub lines: Vec<RuntimeLogLine>,
    /// Whether the deployment's server runs now.
    pub running: bool,
}
