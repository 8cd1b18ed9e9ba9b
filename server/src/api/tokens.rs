//! Tokens, identity and the audit log: `GET/POST /v1/tokens`, `DELETE /v1/tokens/{id}`,
//! `GET /v1/whoami`, `GET /v1/audit`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cdeploy_core::api::{self, AuditEntry, CreateToken, CreatedToken, Role, TokenInfo};
use cdeploy_core::ids;
use serde::Deserialize;

use super::access::Principal;
use super::error::{ApiError, ApiJson, ApiQuery};
use crate::db::TokenRow;
use crate::service::App;

/// Longest token name.
const MAX_NAME: usize = 64;
/// Most projects one token may name.
const MAX_PROJECTS: usize = 100;
/// Longest lifetime a token may be given: ten years.
const MAX_EXPIRY_SECS: u64 = 10 * 365 * 86_400;

pub(super) fn info(t: &TokenRow) -> TokenInfo {
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

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateToken, responses((status = 201, body = CreatedToken), super::openapi::Errors), security(("bearer" = [])))]
pub async fn create(
    State(app): State<Arc<App>>,
    ApiJson(req): ApiJson<CreateToken>,
) -> Result<
    (
        StatusCode,
        axum::Extension<super::access::AuditDetail>,
        Json<CreatedToken>,
    ),
    ApiError,
> {
    let name = req.name.trim();
    check_name(name)?;
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
            crate::service::validate::check_slug(p)?;
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
    let on = if row.projects.is_empty() {
        String::new()
    } else {
        format!(" on {}", row.projects.join(", "))
    };
    let detail = super::access::AuditDetail(format!(
        "token {:?} ({}) created: role {}{on}",
        row.name, row.id, row.role
    ));
    Ok((
        StatusCode::CREATED,
        axum::Extension(detail),
        Json(CreatedToken {
            token,
            info: info(&row),
        }),
    ))
}

#[utoipa::path(get, path = "/v1/tokens", operation_id = "list_tokens", tag = "tokens", responses((status = 200, body = Vec<TokenInfo>), super::openapi::Errors), security(("bearer" = [])))]
pub async fn list(State(app): State<Arc<App>>) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let tokens = app.store.list_tokens().await?;
    Ok(Json(tokens.iter().map(info).collect()))
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path, description = "A token id (tok_...)")), responses((status = 204, description = "Revoked"), super::openapi::Errors), security(("bearer" = [])))]
pub async fn revoke(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, axum::Extension<super::access::AuditDetail>), ApiError> {
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
    let detail = super::access::AuditDetail(format!(
        "token {:?} ({id}, role {}) revoked",
        token.name, token.role
    ));
    Ok((StatusCode::NO_CONTENT, axum::Extension(detail)))
}

#[utoipa::path(get, path = "/v1/whoami", tag = "tokens", responses((status = 200, body = TokenInfo), super::openapi::Errors), security(("bearer" = [])))]
pub async fn whoami(Extension(me): Extension<Principal>) -> Json<TokenInfo> {
    Json(info(&me.token))
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    limit: Option<u32>,
    /// An entry's `cursor`: entries older than it (the next page).
    #[serde(default)]
    before: Option<String>,
    /// RFC 3339: entries from then on.
    #[serde(default)]
    since: Option<String>,
    /// A token's id or name.
    #[serde(default)]
    token: Option<String>,
    /// Part of the action, any case (`tokens`, `POST /v1/projects`).
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    project: Option<String>,
    /// `403`, or a class: `4xx`.
    #[serde(default)]
    status: Option<String>,
}

/// `403` → 403..=403; `4xx` → 400..=499.
fn status_range(s: &str) -> Option<(u16, u16)> {
    let s = s.trim().to_ascii_lowercase();
    if let Some(class) = s.strip_suffix("xx") {
        let c: u16 = class.parse().ok().filter(|c| (1..=5).contains(c))?;
        return Some((c * 100, c * 100 + 99));
    }
    let code: u16 = s.parse().ok().filter(|c| (100..=599).contains(c))?;
    Some((code, code))
}

#[utoipa::path(get, path = "/v1/audit", tag = "tokens", params(
    ("limit" = Option<u32>, Query, description = "How many, newest first (1-1000, default 100)"),
    ("before" = Option<String>, Query, description = "An entry's cursor: the page after it"),
    ("since" = Option<String>, Query, description = "RFC 3339: entries from then on"),
    ("token" = Option<String>, Query, description = "A token's id or name"),
    ("action" = Option<String>, Query, description = "Part of the action (`tokens`, `POST /v1/projects`), any case"),
    ("project" = Option<String>, Query, description = "The project acted on"),
    ("status" = Option<String>, Query, description = "A status (`403`) or a class (`4xx`)"),
), responses((status = 200, body = Vec<AuditEntry>), super::openapi::Errors), security(("bearer" = [])))]
pub async fn audit(
    State(app): State<Arc<App>>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit: 1 to 1000"));
    }
    let before_us = match &q.before {
        None => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            ApiError::bad_request("before: an entry's cursor (the digits it gave)")
        })?),
    };
    let since_us = match &q.since {
        None => None,
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "since: an RFC 3339 time such as 2026-12-01T00:00:00Z, not {t:?}"
                    ))
                })?
                .timestamp_micros(),
        ),
    };
    let status = match &q.status {
        None => None,
        Some(s) => Some(status_range(s).ok_or_else(|| {
            ApiError::bad_request(format!("status: a code (403) or a class (4xx), not {s:?}"))
        })?),
    };
    let text = |v: &Option<String>, what: &str| -> Result<Option<String>, ApiError> {
        match v.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) if v.len() > 200 => Err(ApiError::bad_request(format!(
                "{what}: at most 200 characters"
            ))),
            Some(v) => Ok(Some(v.to_string())),
        }
    };
    let filter = crate::db::AuditFilter {
        limit,
        before_us,
        since_us,
        token: text(&q.token, "token")?,
        action: text(&q.action, "action")?,
        project: text(&q.project, "project")?,
        status,
    };
    let rows = app.store.list_audit(&filter).await?;
    Ok(Json(
        rows.into_iter()
            .map(|a| api::AuditEntry {
                at: a.at,
                token: a.token_name,
                token_id: a.token_id,
                action: a.action,
                target: a.target,
                status: a.status,
                project: a.project,
                detail: a.detail,
                count: a.count.max(1) as u64,
                cursor: a.at_us.to_string(),
            })
            .collect(),
    ))
}

/// A token's name: 1 to [`MAX_NAME`] characters, no control characters, not one of the
/// names trusted publishing gives its tokens.
fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "name: 1 to {MAX_NAME} characters, no control characters"
        )));
    }
    // Tokens trusted publishing makes are named so (and pruned by that name).
    let reserved = crate::service::oidc::TOKEN_NAME;
    if name
        .get(..reserved.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(reserved))
    {
        return Err(ApiError::bad_request(format!(
            "name: {reserved:?} starts the names of tokens CI identities are traded for"
        )));
    }
    Ok(())
}
