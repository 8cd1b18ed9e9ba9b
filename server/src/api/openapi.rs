//! The API's OpenAPI 3.1 document, served at `GET /v1/openapi.json`. It is generated
//! from the handlers' `#[utoipa::path]` annotations, and the router is built from the
//! same annotations ([`crate::api::router`] registers each route through them), so a
//! route and its description cannot drift apart. Not described: the WebSocket event
//! stream (`GET /v1/deployments/{id}/events`, OpenAPI has no way to) and the builder API
//! (`/v1/builds/…`, internal to build tasks); docs/api.md covers both.

use cdeploy_core::api::ErrorBody;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cdeploy",
        description = "The control plane of cdeploy: projects, deployments, files, tokens, stored secrets and git push deploys. Every route but /healthz, /readyz, /v1/openapi.json and the webhook and deploy hook routes takes `Authorization: Bearer <token>`, or the dashboard's session cookie (with `X-CSRF-Token` on every change); what a token may do depends on its role (docs/api.md)."
    ),
    modifiers(&Bearer),
    components(schemas(ErrorBody, cdeploy_core::api::ErrorDetail)),
    tags(
        (name = "projects"), (name = "deployments"), (name = "files"), (name = "tokens"),
        (name = "env", description = "Stored secrets (admin)"),
        (name = "git", description = "Git push deploys: repository links, webhooks, deploy hooks"),
        (name = "domains", description = "Custom domains and their certificates"),
        (name = "notifications", description = "Deploy events sent to a project's endpoints, signed as Standard Webhooks says"),
        (name = "oidc", description = "Trusted publishing: CI identity tokens traded for short-lived deploy tokens"),
        (name = "sessions", description = "Dashboard sessions: a token traded for an HttpOnly cookie"),
        (name = "health")
    )
)]
pub struct ApiDoc;

/// The `{slug}` path parameter of every project route, described once.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only described: handlers take the slug as `Path<String>`
pub struct SlugPath {
    /// The project's slug
    #[param(pattern = r"^[a-z0-9]+(-[a-z0-9]+)*$", max_length = 45)]
    slug: String,
}

/// The bearer token scheme every authenticated operation names.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("cdeploy_session"))),
        );
    }
}

/// The error answers an operation may give, each `{"error":{"code","message"}}`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only described, never built
pub enum Errors {
    /// The request is malformed or a value is out of range.
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorBody),
    /// No token, or an invalid, revoked or expired one.
    #[response(status = 401)]
    Unauthorized(#[to_schema] ErrorBody),
    /// The token's role or projects do not allow this.
    #[response(status = 403)]
    Forbidden(#[to_schema] ErrorBody),
    #[response(status = 404)]
    NotFound(#[to_schema] ErrorBody),
    /// The request conflicts with the state (`missing_files` lists blobs to upload).
    #[response(status = 409)]
    Conflict(#[to_schema] ErrorBody),
    /// A body or value over its documented limit.
    #[response(status = 413)]
    TooLarge(#[to_schema] ErrorBody),
    /// A file whose bytes do not match its hash.
    #[response(status = 422)]
    Unprocessable(#[to_schema] ErrorBody),
    /// Rate-limited or the build queue is full: retry after `Retry-After` seconds.
    #[response(status = 429)]
    TooMany(#[to_schema] ErrorBody),
    /// A backend (the log bus) or the secrets keyring is unavailable.
    #[response(status = 503)]
    Unavailable(#[to_schema] ErrorBody),
}

/// The error answers of the webhook route (its refusals are recorded deliveries).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only described, never built
pub enum HookErrors {
    /// An unknown forge, or a project without a repository link.
    #[response(status = 404)]
    NotFound(#[to_schema] ErrorBody),
    #[response(status = 413)]
    TooLarge(#[to_schema] ErrorBody),
    /// Too many refused deliveries from this address.
    #[response(status = 429)]
    TooMany(#[to_schema] ErrorBody),
    #[response(status = 503)]
    Unavailable(#[to_schema] ErrorBody),
}
