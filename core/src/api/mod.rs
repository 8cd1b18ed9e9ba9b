//! Request and response bodies of the control-plane API (`/v1`, plus the seed's
//! `POST /project`). Shared by the server and the CLI so both sides agree by construction.
//!
//! # Layout
//! * this file — the error body and its codes, and the sites' URLs.
//! * [`projects`] — projects, deployments, uploads, the seed's `POST /project`.
//! * [`builds`] — the builder API ECS builders speak.
//! * [`tokens`] — tokens, roles, the audit log.
//! * [`env`] — stored environment variables.
//! * [`git`] — repository links, deliveries, deploy hooks.
//! * [`notify`] — notification endpoints, the events sent to them, their deliveries.
//! * [`oidc`] — trusted publishing: trusts in CI issuers, the token exchange.
//! * [`protection`] — preview protection.
//! * [`domains`] — custom domains, their certificates and attempts.
//! * [`runtime`] — a server app's runtime log.
//! * [`sessions`] — dashboard sessions and sign-in links; a deployment's file list.

pub mod builds;
pub mod diff;
pub mod domains;
pub mod env;
pub mod git;
pub mod notify;
pub mod oidc;
pub mod projects;
pub mod protection;
pub mod runtime;
pub mod sessions;
pub mod tokens;

pub use builds::*;
pub use diff::*;
pub use domains::*;
pub use env::*;
pub use git::*;
pub use notify::*;
pub use oidc::*;
pub use projects::*;
pub use protection::*;
pub use runtime::*;
pub use sessions::*;
pub use tokens::*;

use serde::{Deserialize, Serialize};

/// A name outside a closed set (a token's role, a variable's target).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?} ({expected})")]
pub struct UnknownName {
    pub what: &'static str,
    pub given: String,
    /// The names there are, as a reader would list them.
    pub expected: &'static str,
}

/// Every error answer: `{"error":{"code","message"}}` (plus `missing` for `missing_files`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<Vec<String>>,
}

/// Error codes clients match on.
pub mod codes {
    pub const MISSING_FILES: &str = "missing_files";
    pub const NOT_FOUND: &str = "not_found";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const FORBIDDEN: &str = "forbidden";
    pub const BAD_REQUEST: &str = "bad_request";
    pub const INVALID_SLUG: &str = "invalid_slug";
    pub const INVALID_GIT_URL: &str = "invalid_git_url";
    pub const CONFLICT: &str = "conflict";
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    pub const HASH_MISMATCH: &str = "hash_mismatch";
    pub const QUEUE_FULL: &str = "queue_full";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const INTERNAL: &str = "internal";
    /// A backend the server needs (the Redis log bus) is unreachable; retry later.
    pub const UNAVAILABLE: &str = "unavailable";
    /// Builder API: the log bus lost the events it had stored (Redis restarted empty);
    /// the builder writes back the log it has seen (`/restore`), then retries.
    pub const LOG_LOST: &str = "log_lost";
}

/// Joins a slug (and optionally a deployment id, for previews) with the public domain.
pub fn site_url(domain: &str, slug: &str, deployment: Option<&str>) -> String {
    match deployment {
        Some(id) => format!("http://{slug}--{id}.{domain}"),
        None => format!("http://{slug}.{domain}"),
    }
}

/// The URL of a branch's newest preview (`label` from [`crate::ids::branch_label`]).
pub fn branch_url(domain: &str, label: &str, slug: &str) -> String {
    format!("http://{label}--{slug}.{domain}")
}
