//! Projects: `GET|POST /v1/projects`, `GET|PATCH|DELETE /v1/projects/{slug}`,
//! `POST /v1/projects/{slug}/promote`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cdeploy_core::api::{self, CreateProject};

use super::access::{AuditDetail, Need, Principal};
use super::error::{ApiError, ApiJson};
use crate::service::validate::check_slug;
use crate::service::{projects, App};

#[utoipa::path(get, path = "/v1/projects", tag = "projects", responses((status = 200, body = Vec<api::Project>), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn list_projects(
    State(app): State<Arc<App>>,
    Extension(me): Extension<Principal>,
) -> Result<Json<Vec<api::Project>>, ApiError> {
    let projects = app.store.list_projects().await?;
    Ok(Json(
        projects
            .iter()
            .filter(|p| me.sees(&p.slug))
            .map(|p| app.project_json(p))
            .collect(),
    ))
}

#[utoipa::path(post, path = "/v1/projects", tag = "projects", request_body = CreateProject, responses((status = 201, body = api::Project), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn create_project(
    State(app): State<Arc<App>>,
    Extension(me): Extension<Principal>,
    ApiJson(body): ApiJson<CreateProject>,
) -> Result<(StatusCode, Extension<AuditDetail>, Json<api::Project>), ApiError> {
    check_slug(&body.slug)?;
    me.check(Need::Deploy, Some(&body.slug))?;
    let p = projects::create(&app, &body.slug, body.git.as_deref()).await?;
    let detail = AuditDetail(format!("project {} created", body.slug));
    Ok((
        StatusCode::CREATED,
        Extension(detail),
        Json(app.project_json(&p)),
    ))
}

#[utoipa::path(get, path = "/v1/projects/{slug}", tag = "projects", params(super::openapi::SlugPath), responses((status = 200, body = api::Project), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn get_project(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<Json<api::Project>, ApiError> {
    let p = app.project(&slug).await?;
    Ok(Json(app.project_json(&p)))
}

#[utoipa::path(patch, path = "/v1/projects/{slug}", tag = "projects", params(super::openapi::SlugPath), request_body = api::UpdateProject, responses((status = 200, body = api::Project), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn update_project(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<api::UpdateProject>,
) -> Result<Json<api::Project>, ApiError> {
    let p = projects::set_git(&app, &slug, body.git.as_deref()).await?;
    Ok(Json(app.project_json(&p)))
}

/// Deletes a project: from the first moment it refuses new deployments and any late
/// build's activation; its builds are stopped, its site and previews go offline, and its
/// deployments' manifests, sources and logs are deleted (blobs go at the next GC).
#[utoipa::path(delete, path = "/v1/projects/{slug}", tag = "projects", params(super::openapi::SlugPath), responses((status = 204, description = "Deleted"), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn delete_project(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<(StatusCode, Extension<AuditDetail>), ApiError> {
    let deleted = projects::delete(&app, &slug).await?;
    let detail = AuditDetail(format!(
        "project {slug} deleted, with its {deleted} deployments"
    ));
    Ok((StatusCode::NO_CONTENT, Extension(detail)))
}

#[utoipa::path(post, path = "/v1/projects/{slug}/promote", tag = "deployments", params(super::openapi::SlugPath), request_body = api::PromoteRequest, responses((status = 200, body = api::Project), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn promote(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<api::PromoteRequest>,
) -> Result<Json<api::Project>, ApiError> {
    let p = projects::promote(&app, &slug, &body.deployment).await?;
    Ok(Json(app.project_json(&p)))
}
