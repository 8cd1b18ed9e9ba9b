//! A project's environment variables and secrets (admins only): `GET
//! /v1/projects/{slug}/env`, `PUT` and `DELETE /v1/projects/{slug}/env/{name}`, `GET
//! /v1/projects/{slug}/env/values?target=…`. Sealing is [`crate::service::secrets`]'s.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cdeploy_core::api::{EnvTarget, EnvValues, EnvVar, PutEnv};
use serde::Deserialize;

use super::access::AuditDetail;
use super::error::{ApiError, ApiJson, ApiQuery};
use crate::service::{secrets, App};

/// `GET /v1/projects/{slug}/env`: names, targets and dates, never values.
#[utoipa::path(get, path = "/v1/projects/{slug}/env", operation_id = "list_env", tag = "env", params(super::openapi::SlugPath), responses((status = 200, body = Vec<EnvVar>), super::openapi::Errors), security(("bearer" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<Json<Vec<EnvVar>>, ApiError> {
    Ok(Json(secrets::list(&app, &slug).await?))
}

/// `PUT /v1/projects/{slug}/env/{name}`: stores a value for the targets asked (both by
/// default), replacing what they held. Creates the project, as a first deploy would.
#[utoipa::path(put, path = "/v1/projects/{slug}/env/{name}", tag = "env", params(super::openapi::SlugPath, ("name" = String, Path, description = "The variable's name", pattern = r"^[A-Za-z_][A-Za-z0-9_]*$", max_length = 256)), request_body = PutEnv, responses((status = 200, body = Vec<EnvVar>), super::openapi::Errors), security(("bearer" = [])))]
pub async fn put(
    State(app): State<Arc<App>>,
    Path((slug, name)): Path<(String, String)>,
    ApiJson(req): ApiJson<PutEnv>,
) -> Result<(Extension<AuditDetail>, Json<Vec<EnvVar>>), ApiError> {
    let (targets, written) = secrets::put(&app, &slug, &name, &req).await?;
    let detail = AuditDetail(format!(
        "variable {name} of {slug} written for {}{}",
        targets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and "),
        if req.sensitive { " (sensitive)" } else { "" }
    ));
    Ok((Extension(detail), Json(written)))
}

#[derive(Debug, Deserialize)]
pub struct TargetQuery {
    target: Option<EnvTarget>,
}

/// `DELETE /v1/projects/{slug}/env/{name}[?target=…]`: both targets unless one is named.
#[utoipa::path(delete, path = "/v1/projects/{slug}/env/{name}", operation_id = "remove_env", tag = "env", params(super::openapi::SlugPath, ("name" = String, Path, description = "The variable's name", pattern = r"^[A-Za-z_][A-Za-z0-9_]*$", max_length = 256), ("target" = Option<EnvTarget>, Query, description = "production or preview")), responses((status = 204, description = "Removed"), super::openapi::Errors), security(("bearer" = [])))]
pub async fn remove(
    State(app): State<Arc<App>>,
    Path((slug, name)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<TargetQuery>,
) -> Result<(StatusCode, Extension<AuditDetail>), ApiError> {
    let removed = secrets::remove(&app, &slug, &name, q.target).await?;
    let detail = AuditDetail(match q.target {
        Some(t) => format!("variable {name} of {slug} removed from {t}"),
        None => format!("variable {name} of {slug} removed from {removed} targets"),
    });
    Ok((StatusCode::NO_CONTENT, Extension(detail)))
}

/// `GET /v1/projects/{slug}/env/values?target=…`: a target's values for `env pull`;
/// sensitive ones are named, never answered.
#[utoipa::path(get, path = "/v1/projects/{slug}/env/values", tag = "env", params(super::openapi::SlugPath, ("target" = Option<EnvTarget>, Query, description = "production or preview")), responses((status = 200, body = EnvValues), super::openapi::Errors), security(("bearer" = [])))]
pub async fn values(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    ApiQuery(q): ApiQuery<TargetQuery>,
) -> Result<Json<EnvValues>, ApiError> {
    Ok(Json(secrets::values(&app, &slug, q.target).await?))
}
