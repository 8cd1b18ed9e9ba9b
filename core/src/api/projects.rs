//! Projects, deployments, uploads and the seed's `POST /project`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{BuildConfig, SiteConfig};
use crate::event::Status;
use crate::rules::RulesConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Project {
    pub slug: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<String>,
    /// The deployment `<slug>.<domain>` serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production: Option<String>,
    pub url: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateProject {
    pub slug: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateProject {
    /// `Some("")` clears the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<String>,
}

/// Where a deployment's files come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SourceKind {
    Git,
    Upload,
    Prebuilt,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Git => "git",
            SourceKind::Upload => "upload",
            SourceKind::Prebuilt => "prebuilt",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "git" => SourceKind::Git,
            "upload" => SourceKind::Upload,
            "prebuilt" => SourceKind::Prebuilt,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GitSource {
    pub url: String,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
}

/// `POST /v1/projects/{slug}/deployments`. Exactly one of `git`, `source`, `files`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateDeployment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    /// Uploaded repository: relative path → blob hash. The server builds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<BTreeMap<String, String>>,
    /// Prebuilt output: URL path → blob hash. Served as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteConfig>,
    /// cdeploy.toml's `[[redirects]]` and `[[headers]]`, for prebuilt output (a build
    /// reads them from the repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<RulesConfig>,
    /// Build without making it production: served at its own URL, and at its branch's
    /// alias when `branch` is given.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preview: bool,
    /// The git branch a preview is of: `<branch>--<slug>` serves its newest ready
    /// preview (the branch sanitised to one DNS label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deployment {
    pub id: String,
    pub slug: String,
    pub status: Status,
    pub source: SourceKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    pub created_at: String,
    pub updated_at: String,
    /// The project's production URL.
    pub url: String,
    /// This deployment's own immutable URL.
    pub preview_url: String,
    /// True while `<slug>.<domain>` serves this deployment.
    #[serde(default)]
    pub production: bool,
    /// Built as a preview (never made production by its build).
    #[serde(default)]
    pub preview: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// `<branch>--<slug>.<domain>`: the newest ready preview of the branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The commit a git build cloned (the full id), once its build has read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Not built: made of this earlier deployment's output, whose build read the same
    /// inputs (see `GET /v1/deployments/{id}/inputs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
}

/// `GET /v1/deployments/{id}/inputs`: what its build read (`cdeploy inspect --why`),
/// and how that differs from the nearest earlier deployment of its project and target.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentInputs {
    pub id: String,
    /// Whether its build recorded them (not: it had not got that far, could not tell
    /// its inputs apart, or ran before inputs were recorded).
    pub recorded: bool,
    /// What its build read, by name (`apps/web/`, `package-lock.json`, `settings`, …).
    /// Their hashes are not shown: some hash values a reader may not see (variables,
    /// settings), and an uploaded file's hash is how a deployment names a blob.
    #[serde(default)]
    pub parts: Vec<String>,
    /// The commit a git build cloned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
    /// The newest earlier deployment of the same project and target with recorded
    /// inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compared_with: Option<String>,
    /// The parts that differ from `compared_with`'s: names in either.
    #[serde(default)]
    pub differing: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MissingRequest {
    pub hashes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MissingResponse {
    pub missing: Vec<String>,
}

/// `POST /v1/files/batch`: what the archive held and what was new to storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchResponse {
    /// Members in the archive (each checked against its hash).
    pub received: usize,
    /// Blobs storage did not have before.
    pub stored: usize,
    /// Bytes of the blobs stored.
    pub stored_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PromoteRequest {
    pub deployment: String,
}

/// The seed's `POST /project` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SeedProjectRequest {
    #[serde(rename = "gitURL")]
    pub git_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SeedProjectResponse {
    pub status: String,
    pub data: SeedProjectData,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SeedProjectData {
    #[serde(rename = "projectSlug")]
    pub project_slug: String,
    pub url: String,
    /// Not in the seed's answer; lets new clients follow the deployment.
    #[serde(
        default,
        rename = "deploymentId",
        skip_serializing_if = "Option::is_none"
    )]
    pub deployment_id: Option<String>,
}

/// `GET /v1/deployments/{id}/route?path=…`: what answers a path of a deployment (the
/// proxy decides by the same rules, [`crate::rules::route`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteAnswer {
    /// The path asked about, decoded, with its query.
    pub path: String,
    /// `file`, `redirect`, `proxy` or `status` (nothing to serve).
    pub kind: String,
    pub status: u16,
    /// The file served (`file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Where a redirect goes or a proxy fetches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The rule that decided, as a `_redirects` line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Where that rule is written (`_redirects:3`, `cdeploy.toml [[redirects]] #1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Why, in words ("the SPA fallback (/index.html)", "rule _redirects:3").
    pub via: String,
    /// Headers rules set on the answer, with the rules that set them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<RouteHeader>,
    /// Headers rules remove (`! Name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// The methods answered so: `any` (redirects and proxies), or `GET, HEAD` (others
    /// get 405).
    #[serde(default)]
    pub methods: String,
    /// A protected project's deployment other than production: a visitor without the
    /// password, a bypass token or its cookie gets the password form (401) instead, and
    /// every answer is `Cache-Control: private`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteHeader {
    pub name: String,
    pub value: String,
    pub sources: Vec<String>,
}
