//! A project's stored environment variables.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    type Err = super::UnknownName;
    fn from_str(s: &str) -> Result<EnvTarget, super::UnknownName> {
        EnvTarget::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| super::UnknownName {
                what: "target",
                given: s.to_string(),
                expected: "production or preview",
            })
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
    /// Given to a server app's server at run time too, not only to builds.
    #[serde(default)]
    pub runtime: bool,
}

impl std::fmt::Debug for PutEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutEnv")
            .field("value", &"<redacted>")
            .field("targets", &self.targets)
            .field("sensitive", &self.sensitive)
            .field("runtime", &self.runtime)
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
    /// A server app's server gets it at run time too.
    #[serde(default)]
    pub runtime: bool,
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
