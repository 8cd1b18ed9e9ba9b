//! Notification endpoints: `POST|GET /v1/projects/{slug}/notifications` (adding one is
//! for admins), `DELETE …/notifications/{id}` (admin), and `GET
//! …/notifications/{id}/deliveries`, each attempt at sending an event.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use cdeploy_core::api::{CreateNotification, Notification, NotificationDelivery};

use super::error::{ApiError, ApiJson, ApiQuery};
use crate::service::notify::{self, MAX_LISTED};
use crate::service::App;

/// `POST /v1/projects/{slug}/notifications`: the signing secret is in this answer only.
#[utoipa::path(post, path = "/v1/projects/{slug}/notifications", tag = "notifications", params(super::openapi::SlugPath), request_body = CreateNotification, responses((status = 201, body = Notification), super::openapi::Errors), security(("bearer" = [])))]
pub async fn add_notification(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    ApiJson(req): ApiJson<CreateNotification>,
) -> Result<(StatusCode, Json<Notification>), ApiError> {
    let created = notify::add(&app, &slug, &req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /v1/projects/{slug}/notifications`: URLs without their secret parts.
#[utoipa::path(get, path = "/v1/projects/{slug}/notifications", tag = "notifications", params(super::openapi::SlugPath), responses((status = 200, body = Vec<Notification>), super::openapi::Errors), security(("bearer" = [])))]
pub async fn list_notifications(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<Json<Vec<Notification>>, ApiError> {
    Ok(Json(notify::list(&app, &slug).await?))
}

/// `DELETE /v1/projects/{slug}/notifications/{id}`: events waiting for it go too.
#[utoipa::path(delete, path = "/v1/projects/{slug}/notifications/{id}", tag = "notifications", params(super::openapi::SlugPath, ("id" = String, Path, description = "An endpoint id (nh_...)")), responses((status = 204, description = "Removed"), super::openapi::Errors), security(("bearer" = [])))]
pub async fn remove_notification(
    State(app): State<Arc<App>>,
    Path((slug, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    notify::remove(&app, &slug, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, serde::Deserialize)]
pub struct LimitQuery {
    limit: Option<u32>,
}

/// `GET /v1/projects/{slug}/notifications/{id}/deliveries?limit=N` (1–200, default 50),
/// newest first.
#[utoipa::path(get, path = "/v1/projects/{slug}/notifications/{id}/deliveries", tag = "notifications", params(super::openapi::SlugPath, ("id" = String, Path, description = "An endpoint id (nh_...)"), ("limit" = Option<u32>, Query, description = "How many, newest first (1-200, default 50)")), responses((status = 200, body = Vec<NotificationDelivery>), super::openapi::Errors), security(("bearer" = [])))]
pub async fn notification_deliveries(
    State(app): State<Arc<App>>,
    Path((slug, id)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Vec<NotificationDelivery>>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_LISTED).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit: 1 to {MAX_LISTED}")));
    }
    Ok(Json(notify::deliveries(&app, &slug, &id, limit).await?))
}
