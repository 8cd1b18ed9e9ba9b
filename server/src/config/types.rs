//! Resolved settings other modules read: where the keyring comes from, the forges'
//! APIs, what GC keeps.

use std::path::PathBuf;
use std::time::Duration;

/// Where the keyring comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `--secrets-key-file`: the operator's file.
    File(PathBuf),
    /// `CDEPLOY_SECRETS_KEY`: the keys themselves.
    Env(String),
    /// One machine (SQLite): a key made on first start, beside the database.
    Generated(PathBuf),
    /// Several servers share a database, and none was given: no secrets.
    None,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "File({})", p.display()),
            KeySource::Env(_) => f.write_str("Env(<redacted>)"),
            KeySource::Generated(p) => write!(f, "Generated({})", p.display()),
            KeySource::None => f.write_str("None"),
        }
    }
}

/// A forge's API, and the token statuses are posted with.
#[derive(Clone, PartialEq, Eq)]
pub struct ForgeApi {
    /// e.g. `https://api.github.com`, `https://gitlab.com/api/v4`,
    /// `https://gitea.example.com/api/v1`.
    pub base: String,
    pub token: String,
}

impl std::fmt::Debug for ForgeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgeApi")
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The forges this server reports to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForgeSettings {
    pub github: Option<ForgeApi>,
    pub gitlab: Option<ForgeApi>,
    pub gitea: Option<ForgeApi>,
}

impl ForgeSettings {
    pub fn api(&self, forge: &str) -> Option<&ForgeApi> {
        match forge {
            "github" => self.github.as_ref(),
            "gitlab" => self.gitlab.as_ref(),
            "gitea" => self.gitea.as_ref(),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.github.is_none() && self.gitlab.is_none() && self.gitea.is_none()
    }
}

/// How long the audit log keeps an entry.
pub const AUDIT_KEEP: Duration = Duration::from_secs(365 * 86_400);

/// What to keep.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub keep_deployments: usize,
    pub keep_for: Duration,
    /// Unreferenced blobs younger than this (or touched within it) stay.
    pub grace: Duration,
    /// How long the audit log keeps an entry.
    pub audit_for: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_deployments: 20,
            keep_for: Duration::from_secs(30 * 24 * 3600),
            grace: Duration::from_secs(3600),
            audit_for: AUDIT_KEEP,
        }
    }
}
