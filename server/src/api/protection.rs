//! Preview protection (admin): `GET|PUT|DELETE /v1/projects/{slug}/protection`; the
//! records are [`crate::service::protection`]'s.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cdeploy_core::api::{ProtectionInfo, SetProtection};

use super::access::AuditDetail;
use super::error::{ApiError, ApiJson};
use crate::service::protection::{self, info};
use crate::service::App;

/// `GET /v1/projects/{slug}/protection`.
#[utoipa::path(get, path = "/v1/projects/{slug}/protection", operation_id = "show_protection", tag = "projects", params(super::openapi::SlugPath), responses((status = 200, body = ProtectionInfo), super::openapi::Errors), security(("bearer" = [])))]
pub async fn show(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<Json<ProtectionInfo>, ApiError> {
    app.project(&slug).await?;
    let current = protection::current(&app, &slug).await?;
    Ok(Json(info(current.as_ref(), None)))
}

/// `PUT /v1/projects/{slug}/protection`: turns it on or changes it. The bypass token is
/// in the answer when it is made (first time, or `new_token`), never again.
#[utoipa::path(put, path = "/v1/projects/{slug}/protection", tag = "projects", params(super::openapi::SlugPath), request_body = SetProtection, responses((status = 200, body = ProtectionInfo), super::openapi::Errors), security(("bearer" = [])))]
pub async fn set(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    ApiJson(req): ApiJson<SetProtection>,
) -> Result<(Extension<AuditDetail>, Json<ProtectionInfo>), ApiError> {
    let (record, token) = protection::set(&app, &slug, &req).await?;
    let detail = AuditDetail(format!(
        "previews of {slug} protected ({}{})",
        if record.password.is_some() {
            "password and bypass token"
        } else {
            "bypass token only"
        },
        if token.is_some() { ", new token" } else { "" }
    ));
    Ok((Extension(detail), Json(info(Some(&record), token))))
}

/// `DELETE /v1/projects/{slug}/protection`: previews are public again.
#[utoipa::path(delete, path = "/v1/projects/{slug}/protection", operation_id = "remove_protection", tag = "projects", params(super::openapi::SlugPath), responses((status = 204, description = "Previews are public"), super::openapi::Errors), security(("bearer" = [])))]
pub async fn remove(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<(StatusCode, Extension<AuditDetail>), ApiError> {
    protection::remove(&app, &slug).await?;
    let detail = AuditDetail(format!("previews of {slug} made public"));
    Ok((StatusCode::NO_CONTENT, Extension(detail)))
}
