//! Repository links, webhook deliveries and deploy hooks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `PUT /v1/projects/{slug}/git`: links a project to its repository, for deploys on
/// `git push` (webhooks) and deploy hooks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LinkGit {
    /// The repository builds clone (`https://…`, `git://…`; credentials allowed).
    pub repo: String,
    /// Pushes to it deploy production; other branches deploy previews [default: main].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production_branch: Option<String>,
    /// The folder pushes build (`[build] root`, a monorepo's app); unset: the
    /// repository's cdeploy.toml decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Make a new webhook secret (the old one stops working).
    #[serde(default)]
    pub new_secret: bool,
}

/// A project's repository link, with what a forge's webhook settings need.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GitLink {
    pub repo: String,
    pub production_branch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// The secret each forge signs (or sends) its deliveries with, by forge (`github`,
    /// `gitlab`, `gitea`): each its own, so GitLab's, which it sends in clear, signs
    /// nothing for the others.
    pub webhook_secrets: BTreeMap<String, String>,
    /// Webhook paths on this API, by forge (`github`, `gitlab`, `gitea`).
    pub webhooks: BTreeMap<String, String>,
    pub created_at: String,
}

impl std::fmt::Debug for GitLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitLink")
            .field("repo", &crate::git::redact_url(&self.repo))
            .field("production_branch", &self.production_branch)
            .finish_non_exhaustive()
    }
}

/// One webhook delivery or deploy hook call, and what became of it (newest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    pub id: String,
    pub at: String,
    /// `github`, `gitlab`, `gitea` or `hook`.
    pub forge: String,
    /// The forge's event (`push`, `pull_request`, `Merge Request Hook`, …).
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// `accepted`, `skipped` (accepted; its deployment reused an earlier one's output:
    /// `reason` names it), `ignored` or `refused`.
    pub decision: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}

/// `POST /v1/projects/{slug}/deploy-hooks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateDeployHook {
    pub name: String,
    /// The branch it deploys [default: the production branch].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// A deploy hook as listed; `path` (the secret URL's path) only when it is created.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeployHook {
    pub id: String,
    pub name: String,
    pub branch: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}
