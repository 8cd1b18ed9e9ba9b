//! Two deployments compared: `GET /v1/deployments/{id}/diff?to=<id>` (`cdeploy diff`).

use serde::{Deserialize, Serialize};

/// A file of one side only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiffFile {
    /// The URL path (`/assets/index-3f2a.js`).
    pub path: String,
    pub size: u64,
}

/// A file both sides serve, with other contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangedFile {
    pub path: String,
    pub from_size: u64,
    pub to_size: u64,
}

/// A setting that differs: the site's (`spa`, `clean_urls`), a server's (`server.command`,
/// `server.node`, …), a rule (`redirect`, `header`: one side is `null` for a rule added
/// or removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettingChange {
    pub setting: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// `GET /v1/deployments/{id}/diff?to=<id>`: what changed from the first deployment to the
/// second, from their manifests. Paths are sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentDiff {
    pub from: String,
    pub to: String,
    pub added: Vec<DiffFile>,
    pub removed: Vec<DiffFile>,
    pub changed: Vec<ChangedFile>,
    /// How many files are the same on both sides.
    pub unchanged: usize,
    /// Site settings, rules and the server, in that order; rules in their order.
    pub settings: Vec<SettingChange>,
}
