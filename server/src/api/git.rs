//! A project's repository link: `PUT|GET|DELETE /v1/projects/{slug}/git` (admin), and
//! `GET /v1/projects/{slug}/deliveries` (read), every delivery and its decision.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cdeploy_core::api::{Delivery, GitLink, LinkGit};
use serde::Deserialize;

use super::access::AuditDetail;
use super::error::{ApiError, ApiJson, ApiQuery};
use crate::service::git::{self, KEEP_DELIVERIES};
use crate::service::App;

/// `PUT /v1/projects/{slug}/git`.
#[utoipa::path(put, path = "/v1/projects/{slug}/git", tag = "git", params(super::openapi::SlugPath), request_body = LinkGit, responses((status = 200, body = GitLink), super::openapi::Errors), security(("bearer" = [])))]
pub async fn link(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    ApiJson(req): ApiJson<LinkGit>,
) -> Result<(Extension<AuditDetail>, Json<GitLink>), ApiError> {
    let row = git::link(&app, &slug, &req).await?;
    let detail = AuditDetail(format!(
        "{slug} linked to {} (production branch {}){}",
        cdeploy_core::git::redact_url(&row.repo),
        row.production_branch,
        if req.new_secret {
            ", new webhook secrets"
        } else {
            ""
        }
    ));
    Ok((Extension(detail), Json(git::link_json(&app, &row)?)))
}

/// `GET /v1/projects/{slug}/git`.
#[utoipa::path(get, path = "/v1/projects/{slug}/git", operation_id = "show_git_link", tag = "git", params(super::openapi::SlugPath), responses((status = 200, body = GitLink), super::openapi::Errors), security(("bearer" = [])))]
pub async fn show(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<Json<GitLink>, ApiError> {
    let link = git::linked(&app, &slug).await?;
    Ok(Json(git::link_json(&app, &link)?))
}

/// `DELETE /v1/projects/{slug}/git`: webhooks and deploy hooks stop deploying.
#[utoipa::path(delete, path = "/v1/projects/{slug}/git", tag = "git", params(super::openapi::SlugPath), responses((status = 204, description = "Unlinked"), super::openapi::Errors), security(("bearer" = [])))]
pub async fn unlink(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<(StatusCode, Extension<AuditDetail>), ApiError> {
    git::linked(&app, &slug).await?;
    app.store.delete_git_link(&slug).await?;
    let detail = AuditDetail(format!("{slug} unlinked from its repository"));
    Ok((StatusCode::NO_CONTENT, Extension(detail)))
}

#[derive(Debug, Deserialize)]
pub struct LimitQuery {
    limit: Option<u32>,
}

/// `GET /v1/projects/{slug}/deliveries?limit=N` (1–500, default 50), newest first.
#[utoipa::path(get, path = "/v1/projects/{slug}/deliveries", tag = "git", params(super::openapi::SlugPath, ("limit" = Option<u32>, Query, description = "How many, newest first (1-500, default 50)")), responses((status = 200, body = Vec<Delivery>), super::openapi::Errors), security(("bearer" = [])))]
pub async fn deliveries(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Vec<Delivery>>, ApiError> {
    app.project(&slug).await?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=KEEP_DELIVERIES).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: 1 to {KEEP_DELIVERIES}"
        )));
    }
    let rows = app.store.list_deliveries(&slug, limit).await?;
    Ok(Json(rows.iter().map(git::delivery_json).collect()))
}
