//! Dashboard sessions: a browser's sign-in with a token (or a one-time link the CLI
//! made), kept in an `HttpOnly` cookie; and a deployment's file list.

use serde::{Deserialize, Serialize};

use super::tokens::TokenInfo;

/// `POST /v1/sessions`: exactly one of `token` (an API token) or `code` (a one-time
/// sign-in link's code).
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSession {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl std::fmt::Debug for CreateSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateSession")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("code", &self.code.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The session a request's cookie names (`GET /v1/session`), with the CSRF token every
/// change it makes must carry in `X-CSRF-Token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionInfo {
    pub id: String,
    pub csrf: String,
    pub created_at: String,
    pub expires_at: String,
    /// The token the session acts as: its role and projects.
    pub token: TokenInfo,
}

/// `GET /v1/sessions`: a session as an admin sees it (never its cookie or CSRF token).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionEntry {
    pub id: String,
    pub token_id: String,
    pub token_name: String,
    pub created_at: String,
    pub last_seen_at: String,
    pub expires_at: String,
}

/// `POST /v1/sessions/links`: a one-time sign-in link, valid for a minute.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionLink {
    /// The path to open on the server (`/ui/signin#code=…`): the code is in the
    /// fragment, which browsers never send to a server or put in a Referer.
    pub path: String,
    pub expires_at: String,
}

/// `GET /v1/deployments/{id}/files`: a ready deployment's files, by path.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentFiles {
    /// How many files the deployment has, and their bytes.
    pub total: u64,
    pub total_bytes: u64,
    pub files: Vec<DeploymentFile>,
    /// The next page: pass it as `after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentFile {
    pub path: String,
    pub size: u64,
    // No content hash: a blob is published by naming its hash, so a hash would let a
    // token that may read this project put its (perhaps protected) files in another.
    #[serde(rename = "type")]
    pub content_type: String,
}
