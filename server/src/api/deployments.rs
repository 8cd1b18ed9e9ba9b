//! Deployments: `GET|POST /v1/projects/{slug}/deployments`, `GET|DELETE
//! /v1/deployments/{id}`, `POST /v1/deployments/{id}/cancel`, a server app's
//! `GET /v1/deployments/{id}/runtime-log`; every build under way (`GET /v1/deployments`),
//! a redeploy, a ready deployment's files.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use cdeploy_core::api::{self, CreateDeployment};
use serde::Deserialize;

use super::access::{AuditDetail, Principal};
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

#[derive(Deserialize)]
pub(super) struct DiffQuery {
    /// The deployment to compare with.
    to: String,
}

/// `GET /v1/deployments/{id}/diff?to=<id>`: the files added, removed and changed from one
/// ready deployment to another, and the settings, rules and server that differ
/// (`cdeploy diff`). The token must see both projects.
#[utoipa::path(get, path = "/v1/deployments/{id}/diff", tag = "deployments", params(("id" = String, Path, description = "A deployment id", pattern = r"^[0-9a-z]{16}$"), ("to" = String, Query, description = "The deployment to compare with")), responses((status = 200, body = api::DeploymentDiff), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn diff(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Extension(me): Extension<super::access::Principal>,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> Result<Json<api::DeploymentDiff>, ApiError> {
    let sees = |slug: &str| me.sees(slug);
    Ok(Json(
        crate::service::diff::between(&app, &id, &q.to, sees).await?,
    ))
}

/// `GET /v1/deployments/{id}/inputs`: what its build read (each part hashed, and the
/// digest), the deployment whose output it took if it was skipped, and the parts that
/// differ from the newest earlier deployment of its project and target
/// (`cdeploy inspect --why`).
#[utoipa::path(get, path = "/v1/deployments/{id}/inputs", tag = "deployments", params(("id" = String, Path, description = "A deployment id", pattern = r"^[0-9a-z]{16}$")), responses((status = 200, body = api::DeploymentInputs), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn deployment_inputs(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<api::DeploymentInputs>, ApiError> {
    Ok(Json(crate::service::diff::inputs(&app, &id).await?))
}

#[derive(Deserialize)]
pub(super) struct RuntimeLogQuery {
    /// Lines after this `seq` only (a follower's last).
    after: Option<u64>,
    /// Lines of the last this many seconds only.
    since: Option<u64>,
}

/// `GET /v1/deployments/{id}/runtime-log`: what a server app's server printed, with a
/// line per request (its id and answer) and per start and stop, newest kept.
#[utoipa::path(get, path = "/v1/deployments/{id}/runtime-log", tag = "deployments", params(("id" = String, Path, description = "A deployment id", pattern = r"^[0-9a-z]{16}$"), ("after" = Option<u64>, Query, description = "Only lines after this seq"), ("since" = Option<u64>, Query, description = "Only lines of the last this many seconds")), responses((status = 200, body = api::RuntimeLog), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn runtime_log(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<RuntimeLogQuery>,
) -> Result<Json<api::RuntimeLog>, ApiError> {
    let d = app.deployment(&id).await?;
    let runtimes = app.runtimes.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            api::codes::NOT_FOUND,
            "this server runs no site servers (its proxies run apart): runtime logs are kept by the proxy hosts",
        )
    })?;
    let cutoff = q.since.map(|secs| {
        let at = chrono::Utc::now() - chrono::Duration::seconds(secs.min(10 * 365 * 86_400) as i64);
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    });
    let lines = runtimes
        .logs()
        .after(&d.id, q.after.unwrap_or(0))
        .into_iter()
        .filter(|l| cutoff.as_ref().is_none_or(|c| l.at.as_str() >= c.as_str()))
        .map(|l| api::RuntimeLogLine {
            seq: l.seq,
            at: l.at,
            stream: l.stream.to_string(),
            text: l.text,
        })
        .collect();
    Ok(Json(api::RuntimeLog {
        lines,
        running: runtimes.is_running(&d.id),
    }))
}

/// `GET /v1/deployments`: every queued or running build of the projects the token sees,
/// oldest first (the dashboard's Builds page).
#[utoipa::path(get, path = "/v1/deployments", tag = "deployments", responses((status = 200, body = Vec<api::Deployment>), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn active_deployments(
    State(app): State<Arc<App>>,
    Extension(me): Extension<Principal>,
) -> Result<Json<Vec<api::Deployment>>, ApiError> {
    Ok(Json(deployments::active(&app, |slug| me.sees(slug)).await?))
}

/// `POST /v1/deployments/{id}/redeploy`: builds a finished deployment's source again.
#[utoipa::path(post, path = "/v1/deployments/{id}/redeploy", tag = "deployments", params(("id" = String, Path, description = "A deployment id", pattern = r"^[0-9a-z]{16}$")), responses((status = 202, body = api::Deployment), super::openapi::Errors, (status = 410, description = "The uploaded source is no longer stored", body = cdeploy_core::api::ErrorBody)), security(("bearer" = [])))]
pub(super) async fn redeploy(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Extension<AuditDetail>, Json<api::Deployment>), ApiError> {
    let d = deployments::redeploy(&app, &id).await?;
    let detail = AuditDetail(format!("deployment {} made from {id}", d.id));
    Ok((
        StatusCode::ACCEPTED,
        Extension(detail),
        Json(app.deployment_response(&d).await?),
    ))
}

#[derive(Deserialize)]
pub(super) struct FilesQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/deployments/{id}/files`: a ready deployment's files, in path order.
#[utoipa::path(get, path = "/v1/deployments/{id}/files", tag = "deployments", params(("id" = String, Path, description = "A deployment id", pattern = r"^[0-9a-z]{16}$"), ("after" = Option<String>, Query, description = "A path: the files after it (the previous page's `next`)"), ("limit" = Option<u32>, Query, description = "How many (1-1000, default 200)")), responses((status = 200, body = api::DeploymentFiles), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn deployment_files(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<FilesQuery>,
) -> Result<Json<api::DeploymentFiles>, ApiError> {
    let limit = q.limit.unwrap_or(200);
    Ok(Json(
        deployments::files(&app, &id, q.after.as_deref(), limit).await?,
    ))
}
