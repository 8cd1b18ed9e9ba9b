//! Trusted publishing: `POST|GET /v1/projects/{slug}/trust` (adding: admin), `DELETE
//! …/trust/{id}` (admin), and `POST /v1/oidc/exchange`, which takes no bearer token:
//! the CI's identity token is the credential.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cdeploy_core::api::{CreateTrust, ExchangeAnswer, ExchangeRequest, Trust};

use super::error::{ApiError, ApiJson};
use crate::service::limits::count_failure;
use crate::service::oidc;
use crate::service::App;

/// `POST /v1/projects/{slug}/trust`.
#[utoipa::path(post, path = "/v1/projects/{slug}/trust", tag = "oidc", params(super::openapi::SlugPath), request_body = CreateTrust, responses((status = 201, body = Trust), super::openapi::Errors), security(("bearer" = [])))]
pub async fn add_trust(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    ApiJson(req): ApiJson<CreateTrust>,
) -> Result<(StatusCode, Json<Trust>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(oidc::add(&app, &slug, &req).await?),
    ))
}

/// `GET /v1/projects/{slug}/trust`.
#[utoipa::path(get, path = "/v1/projects/{slug}/trust", tag = "oidc", params(super::openapi::SlugPath), responses((status = 200, body = Vec<Trust>), super::openapi::Errors), security(("bearer" = [])))]
pub async fn list_trusts(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<Json<Vec<Trust>>, ApiError> {
    Ok(Json(oidc::list(&app, &slug).await?))
}

/// `DELETE /v1/projects/{slug}/trust/{id}`.
#[utoipa::path(delete, path = "/v1/projects/{slug}/trust/{id}", tag = "oidc", params(super::openapi::SlugPath, ("id" = String, Path, description = "A trust id (trust_...)")), responses((status = 204, description = "Removed"), super::openapi::Errors), security(("bearer" = [])))]
pub async fn remove_trust(
    State(app): State<Arc<App>>,
    Path((slug, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    oidc::remove(&app, &slug, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/oidc/exchange`: a deploy token of the project for 10 minutes, or `401`
/// with the reason (the audit log has it whole); `429` past 20 exchanges a minute from
/// one address, before any work.
#[utoipa::path(post, path = "/v1/oidc/exchange", tag = "oidc", request_body = ExchangeRequest, responses((status = 201, body = ExchangeAnswer), (status = 400, description = "Not a JSON body with project and token", body = cdeploy_core::api::ErrorBody), (status = 401, description = "Refused, with the reason", body = cdeploy_core::api::ErrorBody), super::openapi::HookErrors))]
pub async fn exchange(
    State(app): State<Arc<App>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ApiJson(req): ApiJson<ExchangeRequest>,
) -> Result<(StatusCode, Json<ExchangeAnswer>), ApiError> {
    let ip = super::access::peer_ip(peer);
    // Counted before anything is read, fetched or written: a CI job exchanges once per
    // deploy, a flood gets 429s and costs nothing.
    count_failure(
        &app.auth_failures,
        ip,
        "too many identity token exchanges from this address",
    )?;
    match oidc::exchange(&app, &req).await {
        Ok(answer) => Ok((StatusCode::CREATED, Json(answer))),
        Err(refused) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            cdeploy_core::api::codes::UNAUTHORIZED,
            refused.public,
        )),
    }
}
