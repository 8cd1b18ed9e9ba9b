//! The builder API (`/v1/builds/{id}/…`): what an ECS builder, holding no storage or
//! Redis credential, exchanges with the control plane. See docs/api.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::SiteConfig;
use crate::rules::RulesConfig;

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
    /// cdeploy.toml's rule tables (the output's `_redirects` and `_headers` are among
    /// the files).
    #[serde(default, skip_serializing_if = "RulesConfig::is_empty")]
    pub rules: RulesConfig,
    /// A server app's server: how it starts and its bundle's files (blobs the builder
    /// uploaded, checked like the site's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<crate::server::ServerOutput>,
}

/// `GET /v1/builds/{id}/state`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BuildState {
    pub cancel_requested: bool,
    pub closed: bool,
}

/// What a build reads, each part hashed, and the digest over all of them: two builds
/// with the same digest make the same output. `POST /v1/builds/{id}/reuse` takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BuildInputs {
    /// SHA-256 (hex) over the parts' names and hashes.
    pub digest: String,
    /// Each input by name (`apps/web/`, `package-lock.json`, `settings`, `node`, …) →
    /// its hash: a tree id, a blob id or a SHA-256.
    pub parts: BTreeMap<String, String>,
    /// The commit a git build cloned (the full id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Whether the build may be skipped when a ready deployment has the same digest
    /// (false: recorded only, for later builds to reuse).
    #[serde(default)]
    pub reuse: bool,
}

/// The answer to `POST /v1/builds/{id}/reuse`: the deployment whose output this one
/// took and went live with, or none (then it builds).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reused {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<crate::manifest::Site>,
}
