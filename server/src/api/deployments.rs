//! Deployments: `GET|POST /v1/projects/{slug}/deployments`, `GET|DELETE
//! /v1/deployments/{id}`, `POST /v1/deployments/{id}/cancel`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use cdeploy_core::api::{self, CreateDeployment};
use serde::Deserialize;

use super::access::AuditDetail;
use super::error::{ApiError, ApiJson, ApiQuery};
use crate::db::DeploymentRow;
use crate::service::validate::check_slug;
use crate::service::{deployments, App};

/// `DELETE /v1/deployments/{id}`: one deployment (not the one in production: promote
/// another, or delete the project). A running one is canceled first.
#[utoipa::path(delete, path = "/v1/deployments/{id}", tag = "deployments", params(("id" = String, Path, description = "A deployment id", pattern = r"^[0-9a-z]{16}$")), responses((status = 204, description = "Deleted"), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn delete_deployment(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    deployments::delete(&app, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/projects/{slug}/deployments", tag = "deployments", params(super::openapi::SlugPath, ("limit" = Option<u32>, Query, description = "How many, newest first (1-100, default 20)")), responses((status = 200, body = Vec<api::Deployment>), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn list_deployments(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<api::Deployment>>, ApiError> {
    let p = app.project(&slug).await?;
    let rows = app
        .store
        .list_deployments(&slug, q.limit.unwrap_or(50).clamp(1, 1000))
        .await?;
    Ok(Json(
        rows.iter()
            .map(|d| app.deployment_json(d, p.production.as_deref()))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/deployments/{id}", tag = "deployments", params(("id" = String, Path, description = "A deployment id", pattern = r"^[0-9a-z]{16}$")), responses((status = 200, body = api::Deployment), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn get_deployment(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<api::Deployment>, ApiError> {
    let d = app.deployment(&id).await?;
    Ok(Json(app.deployment_response(&d).await?))
}

#[utoipa::path(post, path = "/v1/deployments/{id}/cancel", tag = "deployments", params(("id" = String, Path, description = "A deployment id", pattern = r"^[0-9a-z]{16}$")), responses((status = 200, body = api::Deployment), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn cancel_deployment(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<api::Deployment>, ApiError> {
    let d = deployments::cancel(&app, &id).await?;
    Ok(Json(app.deployment_response(&d).await?))
}

#[utoipa::path(post, path = "/v1/projects/{slug}/deployments", tag = "deployments", params(super::openapi::SlugPath, ("Idempotency-Key" = Option<String>, Header, description = "A retried request with the same key answers with the same deployment")), request_body = CreateDeployment, responses((status = 202, body = api::Deployment), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn create_deployment(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateDeployment>,
) -> Result<(StatusCode, Extension<AuditDetail>, Json<api::Deployment>), ApiError> {
    check_slug(&slug)?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "Idempotency-Key must be 1 to 255 visible ASCII characters",
                    )
                })?;
            Some(k.to_string())
        }
    };
    let d = deployments::create_keyed(&app, &slug, body, idempotency_key).await?;
    Ok((
        StatusCode::ACCEPTED,
        described(&d),
        Json(app.deployment_response(&d).await?),
    ))
}

/// The audit log's words for a deployment made.
fn described(d: &DeploymentRow) -> Extension<AuditDetail> {
    let kind = match (&d.branch, d.preview) {
        (Some(b), true) => format!("a preview of branch {b}"),
        (None, true) => "a preview".to_string(),
        (_, false) => "production".to_string(),
    };
    Extension(AuditDetail(format!(
        "deployment {} of {} ({kind}, {:?} source)",
        d.id, d.slug, d.source
    )))
}

#[derive(Deserialize)]
pub(super) struct RouteQuery {
    /// The path (and query) to explain.
    path: String,
    /// The host asked for [default: the project's `<slug>.<domain>`].
    host: Option<String>,
}

/// `GET /v1/deployments/{id}/route?path=/x`: which rule or file answers a path, and the
/// headers rules add (`cdeploy inspect <id> --route /x`).
#[utoipa::path(get, path = "/v1/deployments/{id}/route", tag = "deployments", params(("id" = String, Path, description = "A deployment id", pattern = r"^[0-9a-z]{16}$"), ("path" = String, Query, description = "A path, optionally with a query (/store?id=3)"), ("host" = Option<String>, Query, description = "The host asked for (default: the project's own)")), responses((status = 200, body = api::RouteAnswer), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn route(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<RouteQuery>,
) -> Result<Json<api::RouteAnswer>, ApiError> {
    Ok(Json(
        crate::service::route::explain(&app, &id, &q.path, q.host.as_deref()).await?,
    ))
}
