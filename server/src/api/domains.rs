//! Custom domains: `GET|POST /v1/projects/{slug}/domains`, `GET|DELETE
//! /v1/domains/{name}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cdeploy_core::api::{self, AddDomain, Role};

use super::access::{AuditDetail, Principal};
use super::error::{ApiError, ApiJson};
use crate::service::{domains, App};

#[utoipa::path(get, path = "/v1/projects/{slug}/domains", tag = "domains", params(super::openapi::SlugPath), responses((status = 200, body = Vec<api::Domain>), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn list(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<Json<Vec<api::Domain>>, ApiError> {
    app.project(&slug).await?;
    let rows = app.store.list_domains(Some(&slug)).await?;
    Ok(Json(
        rows.iter().map(|d| domains::domain_json(&app, d)).collect(),
    ))
}

/// Adds a domain (`201`), or changes the project's own (`200`); `409` when another
/// project has it, unless an admin moves it (`"move": true`).
#[utoipa::path(post, path = "/v1/projects/{slug}/domains", tag = "domains", params(super::openapi::SlugPath), request_body = AddDomain, responses((status = 201, body = api::Domain), (status = 200, body = api::Domain), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn add(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    Extension(me): Extension<Principal>,
    ApiJson(body): ApiJson<AddDomain>,
) -> Result<(StatusCode, Extension<AuditDetail>, Json<api::Domain>), ApiError> {
    let admin = me.role == Role::Admin;
    let (domain, created) = domains::add(&app, &slug, &body, admin).await?;
    let detail = AuditDetail(format!("domain {} → {slug}", domain.name));
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Extension(detail), Json(domain)))
}

#[utoipa::path(get, path = "/v1/domains/{name}", tag = "domains", params(("name" = String, Path, description = "A domain name")), responses((status = 200, body = api::DomainReport), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn inspect(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<api::DomainReport>, ApiError> {
    Ok(Json(domains::report(&app, &name).await?))
}

#[utoipa::path(delete, path = "/v1/domains/{name}", tag = "domains", params(("name" = String, Path, description = "A domain name")), responses((status = 204, description = "Removed"), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn remove(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Extension<AuditDetail>), ApiError> {
    let row = domains::remove(&app, &name).await?;
    let detail = AuditDetail(format!("domain {} removed from {}", row.name, row.slug));
    Ok((StatusCode::NO_CONTENT, Extension(detail)))
}
