//! Tokens, their roles, and the audit log.

use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    /// Everything: projects, tokens, the audit log, metrics.
    Admin,
    /// Deploy its projects (create deployments, upload files, promote, cancel) and read
    /// their deployments and logs.
    Deploy,
    /// Read its projects' deployments and logs.
    Read,
    /// `GET /metrics` only (a Prometheus scraper).
    Metrics,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Deploy, Role::Read, Role::Metrics];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deploy => "deploy",
            Role::Read => "read",
            Role::Metrics => "metrics",
        }
    }

    /// Whether tokens of this role act on named projects only.
    pub fn is_per_project(self) -> bool {
        matches!(self, Role::Deploy | Role::Read)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = super::UnknownName;
    fn from_str(s: &str) -> Result<Role, super::UnknownName> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| super::UnknownName {
                what: "role",
                given: s.to_string(),
                expected: "admin, deploy, read or metrics",
            })
    }
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateToken {
    pub name: String,
    pub role: Role,
    /// The projects a `deploy` or `read` token acts on (at least one); none for the
    /// other roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    /// Seconds until the token stops working; none: it does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
}

/// A token as listed (its secret is shown once, when it is created, and never stored).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub projects: Vec<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
}

/// `POST /v1/tokens` answers the token itself, once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// One entry of the audit log (`GET /v1/audit`), newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub at: String,
    /// The token's name, and its id.
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// `METHOD /route/{param}`, e.g. `POST /v1/projects/{slug}/deployments`.
    pub action: String,
    /// The project slug, deployment id or token id acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The answer's HTTP status (`403`: refused for the token's role).
    pub status: u16,
    /// The project acted on, when the request named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// What changed, in words: `token "ci" (tok_…) created: role deploy on web`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How many requests this entry stands for: refusals and failures of one token,
    /// action, target and status within a minute are one entry (`at` is the latest).
    #[serde(default = "one")]
    pub count: u64,
    /// The next page: pass it as `before`.
    #[serde(default)]
    pub cursor: String,
}

fn one() -> u64 {
    1
}
