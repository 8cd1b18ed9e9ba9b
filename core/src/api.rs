//! Request and response bodies of the control-plane API (`/v1`, plus the seed's
//! `POST /project`). Shared by the server and the CLI so both sides agree by construction.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{BuildConfig, SiteConfig};
use crate::event::Status;

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

// The builder API (`/v1/builds/{id}/…`): what an ECS builder, holding no storage or
// Redis credential, exchanges with the control plane. See docs/api.md.

/// `POST /v1/builds/{id}/claim`: the one-time claim from the task's overrides.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildClaim {
    pub claim: String,
}

/// The answer to a claim: the deployment's capability (a bearer token for the other
/// builder routes, valid until the deployment ends) and what to build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildGrant<S> {
    pub token: String,
    pub spec: S,
}

/// One event as a builder produced it: `n` numbers its events (from 1, per producer) so a
/// retried request stores nothing twice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProducedEvent {
    pub n: u64,
    pub ts: String,
    pub body: crate::event::EventBody,
}

/// `POST /v1/builds/{id}/events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventBatch {
    pub producer: String,
    /// The highest `seq` the builder has seen stored.
    pub floor: u64,
    pub events: Vec<ProducedEvent>,
}

/// The events as stored (numbered), in order; events after the terminal one are dropped.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventsStored {
    pub events: Vec<crate::event::Event>,
}

/// `POST /v1/builds/{id}/restore`: the log a builder has seen, written back after the
/// log bus lost it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRestore {
    pub events: Vec<crate::event::Event>,
}

/// `POST /v1/builds/{id}/activate`: the output (URL path → hash and size); the server
/// checks every blob, writes the manifest and moves the route.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActivateRequest {
    pub files: BTreeMap<String, (String, u64)>,
    #[serde(default)]
    pub site: SiteConfig,
}

/// `GET /v1/builds/{id}/state`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BuildState {
    pub cancel_requested: bool,
    pub closed: bool,
}

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
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?} (admin, deploy, read or metrics)"))
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

/// The deployments a stored variable is given to: production builds, or previews.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EnvTarget {
    Production,
    Preview,
}

impl EnvTarget {
    pub const ALL: [EnvTarget; 2] = [EnvTarget::Production, EnvTarget::Preview];

    pub fn as_str(self) -> &'static str {
        match self {
            EnvTarget::Production => "production",
            EnvTarget::Preview => "preview",
        }
    }

    /// The target a deployment's build takes its variables from.
    pub fn of(preview: bool) -> EnvTarget {
        if preview {
            EnvTarget::Preview
        } else {
            EnvTarget::Production
        }
    }
}

impl std::fmt::Display for EnvTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EnvTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<EnvTarget, String> {
        EnvTarget::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown target {s:?} (production or preview)"))
    }
}

/// `PUT /v1/projects/{slug}/env/{name}`: stores (or replaces) a variable.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PutEnv {
    pub value: String,
    /// The targets it is stored for; none: both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<EnvTarget>,
    /// Write-only: never read back through the API (`env pull` leaves it out).
    #[serde(default)]
    pub sensitive: bool,
}

impl std::fmt::Debug for PutEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutEnv")
            .field("value", &"<redacted>")
            .field("targets", &self.targets)
            .field("sensitive", &self.sensitive)
            .finish()
    }
}

/// One stored variable as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvVar {
    pub name: String,
    pub target: EnvTarget,
    pub sensitive: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// `GET /v1/projects/{slug}/env/values?target=…`: the values of a target's variables
/// that are not sensitive, and the names of those that are (never readable).
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvValues {
    pub values: BTreeMap<String, String>,
    #[serde(default)]
    pub sensitive: Vec<String>,
}

impl std::fmt::Debug for EnvValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvValues")
            .field("values", &self.values.keys().collect::<Vec<_>>())
            .field("sensitive", &self.sensitive)
            .finish()
    }
}

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
    /// `accepted`, `ignored` or `refused`.
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

/// `PUT /v1/projects/{slug}/protection`: puts the project's previews (never production)
/// behind a password and a bypass token.
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetProtection {
    /// Visitors type it once per preview host (8 to 256 characters); none: only the
    /// bypass token opens previews.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Keep the current password (when `password` is not given and protection is on).
    #[serde(default)]
    pub keep_password: bool,
    /// Make a new bypass token even if one exists (the old one stops working).
    #[serde(default)]
    pub new_token: bool,
}

impl std::fmt::Debug for SetProtection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetProtection")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("keep_password", &self.keep_password)
            .field("new_token", &self.new_token)
            .finish()
    }
}

/// A project's preview protection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProtectionInfo {
    pub enabled: bool,
    /// Whether a password opens previews (else only the bypass token does).
    pub password: bool,
    /// The bypass token: only in the answer that made it. CI sends it as the
    /// `x-cdeploy-bypass` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}
