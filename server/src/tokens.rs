//! Tokens, identity and the audit log: `GET/POST /v1/tokens`, `DELETE /v1/tokens/{id}`,
//! `GET /v1/whoami`, `GET /v1/audit`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cdeploy_core::api::{self, AuditEntry, CreateToken, CreatedToken, Role, TokenInfo};
use cdeploy_core::ids;
use serde::Deserialize;

use crate::access::Principal;
use crate::db::TokenRow;
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::App;

/// Longest token name.
const MAX_NAME: usize = 64;
/// Most projects one token may name.
const MAX_PROJECTS: usize = 100;
/// Longest lifetime a token may be given: ten years.
const MAX_EXPIRY_SECS: u64 = 10 * 365 * 86_400;

fn info(t: &TokenRow) -> TokenInfo {
    TokenInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        role: t.role,
        projects: t.projects.clone(),
        created_at: t.created_at.clone(),
        expires_at: t.expires_at.clone(),
        last_used_at: t.last_used_at.clone(),
    }
}

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateToken, responses((status = 201, body = CreatedToken), crate::openapi::Errors), security(("bearer" = [])))]
pub async fn create(
    State(app): State<Arc<App>>,
    ApiJson(req): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "name: 1 to {MAX_NAME} characters, no control characters"
        )));
    }
    let mut projects = req.projects.clone();
    projects.sort();
    projects.dedup();
    if req.role.is_per_project() {
        if projects.is_empty() {
            return Err(ApiError::bad_request(format!(
                "a {} token acts on named projects: give at least one (--project)",
                req.role
            )));
        }
        if projects.len() > MAX_PROJECTS {
            return Err(ApiError::bad_request(format!(
                "a token may name at most {MAX_PROJECTS} projects"
            )));
        }
        for p in &projects {
            crate::api::check_slug(p)?;
        }
    } else if !projects.is_empty() {
        return Err(ApiError::bad_request(format!(
            "an {} token acts on every project: leave out projects",
            req.role
        )));
    }
    if let Some(secs) = req.expires_in_secs {
        if secs == 0 || secs > MAX_EXPIRY_SECS {
            return Err(ApiError::bad_request(format!(
                "expires_in_secs: 1 to {MAX_EXPIRY_SECS} (ten years)"
            )));
        }
    }
    let token = ids::generate_token();
    let row = TokenRow::new(
        &ids::token_hash(&token),
        name,
        req.role,
        projects,
        req.expires_in_secs,
    );
    app.store.insert_token(&row).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            info: info(&row),
        }),
    ))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", responses((status = 200, body = Vec<TokenInfo>), crate::openapi::Errors), security(("bearer" = [])))]
pub async fn list(State(app): State<Arc<App>>) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let tokens = app.store.list_tokens().await?;
    Ok(Json(tokens.iter().map(info).collect()))
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path, description = "A token id (tok_...)")), responses((status = 204, description = "Revoked"), crate::openapi::Errors), security(("bearer" = [])))]
pub async fn revoke(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tokens = app.store.list_tokens().await?;
    let Some(token) = tokens.iter().find(|t| t.id == id) else {
        return Err(ApiError::not_found(format!("token {id}")));
    };
    // Never the last way in.
    let admins = tokens
        .iter()
        .filter(|t| t.role == Role::Admin && !t.expired())
        .count();
    if token.role == Role::Admin && !token.expired() && admins <= 1 {
        return Err(ApiError::conflict(
            "this is the last admin token: create another admin token before revoking it",
        ));
    }
    app.store.delete_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/whoami", tag = "tokens", responses((status = 200, body = TokenInfo), crate::openapi::Errors), security(("bearer" = [])))]
pub async fn whoami(Extension(me): Extension<Principal>) -> Json<TokenInfo> {
    Json(info(&me.token))
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "tokens", params(("limit" = Option<u32>, Query, description = "How many, newest first (1-1000, default 100)")), responses((status = 200, body = Vec<AuditEntry>), crate::openapi::Errors), security(("bearer" = [])))]
pub async fn audit(
    State(app): State<Arc<App>>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit: 1 to 1000"));
    }
    let rows = app.store.list_audit(limit).await?;
    Ok(Json(
        rows.into_iter()
            .map(|a| api::AuditEntry {
                at: a.at,
                token: a.token_name,
                token_id: a.token_id,
                action: a.action,
                target: a.target,
                status: a.status,
            })
            .collect(),
    ))
}
