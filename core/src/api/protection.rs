//! Preview protection.

use serde::{Deserialize, Serialize};

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
