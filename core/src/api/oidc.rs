//! Trusted publishing: a project trusts a CI's OIDC issuer with claim rules, and a CI
//! job trades its identity token for a deploy token that lives minutes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /v1/projects/{slug}/trust`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTrust {
    /// The issuer, exactly as its tokens' `iss` says (`https://token.actions.githubusercontent.com`).
    pub issuer: String,
    /// Claims a token must carry, each equal to the value given (numbers as their
    /// digits): `repository_id`, `ref`, `environment`, `workflow_ref`, …
    pub claims: BTreeMap<String, String>,
}

/// A project's trust in an issuer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Trust {
    pub id: String,
    pub project: String,
    pub issuer: String,
    pub claims: BTreeMap<String, String>,
    pub created_at: String,
}

/// `POST /v1/oidc/exchange`: no bearer token; the identity token is the credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExchangeRequest {
    /// The project to deploy.
    pub project: String,
    /// The CI job's OIDC identity token (a JWT).
    pub token: String,
}

/// A deploy token for one project that lives minutes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExchangeAnswer {
    pub token: String,
    pub project: String,
    pub expires_at: String,
    /// The trust that matched.
    pub trust: String,
}
