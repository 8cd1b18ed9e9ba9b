//! Who is calling: the bearer token's principal (within its request rate, its last use
//! recorded), or a dashboard session's (its cookie, with the CSRF token on every change
//! and no other site's Origin); failed authentications limited per address, and bodies
//! refused by their declared length before they are read. What the principal may do is
//! [`super::access`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, RawPathParams, Request, State};
use axum::http::header::{ORIGIN, UPGRADE};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cdeploy_core::api::codes;
use cdeploy_core::ids;

use subtle::ConstantTimeEq;

use super::access::{self, Principal};
use super::error::ApiError;
use super::sessions::{self, SessionCookie};
use crate::db::{SessionRow, TokenRow};
use crate::service::limits::{count_failure, rate_limited};
use crate::service::sessions as sessions_service;
use crate::service::App;

/// Largest JSON body (a source map of many files).
pub const MAX_JSON_BYTES: usize = 32 * 1024 * 1024;

/// Refuses a body whose declared length is over the route's limit before reading it, so
/// a client sending a huge upload gets its 413 at once. Streamed bodies are cut off by
/// the body limits as they arrive (a batch upload's by its reader, which bounds every
/// member and how many there are).
pub(super) async fn reject_oversized(
    State(app): State<Arc<App>>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let path = req.uri().path();
    let put = req.method() == axum::http::Method::PUT;
    let limit = if put
        && (path.starts_with("/v1/files/")
            || (path.starts_with("/v1/builds/") && path.contains("/files/")))
    {
        app.config.max_file_bytes
    } else if put && path.starts_with("/v1/builds/") && path.contains("/cache/") {
        cdeploy_builder::cache::stored::MAX_ENTRY as usize
    } else if path == "/v1/files/batch" {
        // A deployment's worth of content, a header and padding per member, the end.
        (app.config.max_deployment_bytes as usize)
            .saturating_add(app.config.max_files.saturating_mul(1024))
            .saturating_add(1 << 20)
    } else {
        MAX_JSON_BYTES
    };
    match declared {
        Some(len) if len > limit as u64 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            format!("the request body is {len} bytes; at most {limit} are accepted here"),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

pub(super) async fn auth(
    State(app): State<Arc<App>>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    req: Request,
    next: Next,
) -> Response {
    let token = access::bearer(req.headers());
    if token.is_none() {
        let https = sessions::over_https(&app, req.headers());
        match sessions::session_cookie(req.headers(), https) {
            SessionCookie::One(cookie) => {
                return session_auth(&app, &cookie, path_params(params), req, next).await;
            }
            SessionCookie::Ambiguous => {
                return refuse(&app, &req, "two session cookies: a site of this domain planted one; clear this site's cookies and sign in again (and serve the API over HTTPS, where it cannot happen)");
            }
            SessionCookie::None => {}
        }
    }
    let failure = match token {
        None => {
            "missing bearer token: pass `Authorization: Bearer <token>` (cdeploy login saves one)"
        }
        Some(token) => {
            let hash = ids::token_hash(token);
            match app.store.token_by_hash(&hash).await {
                Ok(Some(t)) if t.expired() => "this token expired: ask an admin for a new one",
                Ok(Some(t)) => {
                    let params = path_params(params);
                    return authorized(&app, hash, t, None, params, req, next).await;
                }
                Ok(None) => "invalid token",
                Err(e) => return ApiError::from(e).into_response(),
            }
        }
    };
    refuse(&app, &req, failure)
}

fn path_params(
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
) -> Vec<(String, String)> {
    params
        .map(|p| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// `401` with `failure`, unless the caller's address failed too often (`429`).
fn refuse(app: &App, req: &Request, failure: &str) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let limited = count_failure(
        &app.auth_failures,
        ip,
        "too many failed authentications from this address; wait and retry with a valid token",
    );
    match limited {
        Ok(()) => {
            ApiError::new(StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED, failure).into_response()
        }
        Err(e) => {
            tracing::warn!(%ip, "too many failed authentications");
            ApiError::from(e).into_response()
        }
    }
}

/// A dashboard session's request: the session must be live, the request must not come
/// from another site's page (`Origin`), a WebSocket must say its origin, and a change
/// must carry the session's CSRF token. Then it is its token's request.
async fn session_auth(
    app: &Arc<App>,
    cookie: &str,
    params: Vec<(String, String)>,
    req: Request,
    next: Next,
) -> Response {
    let (session, token) = match sessions_service::resolve(app, cookie).await {
        Ok(Some(found)) => found,
        // A cookie of ours whose session ended is no guess: not counted as a failure.
        Ok(None) => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                codes::UNAUTHORIZED,
                "your dashboard session ended: sign in again",
            )
            .into_response()
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let headers = req.headers();
    let safe = req.method() == Method::GET || req.method() == Method::HEAD;
    let given = headers
        .get(sessions::CSRF_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let refusal = if !sessions::same_origin(headers, app.config.api_url.as_deref()) {
        Some("this request came from a page of another site (its Origin is not this server)")
    } else if headers.contains_key(UPGRADE) && !headers.contains_key(ORIGIN) {
        Some("a WebSocket opened with a session cookie must carry its Origin")
    } else if !safe && !bool::from(given.ct_eq(session.csrf.as_bytes())) {
        Some("this change needs the session's CSRF token in X-CSRF-Token (GET /v1/session gives it; the dashboard sends it)")
    } else {
        None
    };
    if let Some(why) = refusal {
        let route = req
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default();
        let mut principal = Principal::from(token);
        principal.session = Some(session);
        let acted_on = access::acted_on(app, &route, &params)
            .await
            .unwrap_or_default();
        access::record(
            app,
            &principal,
            req.method(),
            &route,
            acted_on,
            403,
            Some(format!("refused: {why}")),
        )
        .await;
        return ApiError::new(StatusCode::FORBIDDEN, codes::FORBIDDEN, why).into_response();
    }
    let hash = token.hash.clone();
    authorized(app, hash, token, Some(session), params, req, next).await
}

/// A known token: within its request rate, then its role (see [`super::access`]).
async fn authorized(
    app: &Arc<App>,
    hash: String,
    mut token: TokenRow,
    session: Option<SessionRow>,
    params: Vec<(String, String)>,
    req: Request,
    next: Next,
) -> Response {
    if app.token_rates.len() > 100_000 {
        app.token_rates.retain_recent();
    }
    if let Err(not_until) = app.token_rates.check_key(&hash) {
        return ApiError::from(rate_limited(
            &not_until,
            "too many requests with this token; slow down (server settings token_rate, token_burst)",
        ))
        .into_response();
    }
    // Last use, to the minute: not a write per request.
    let stale = token
        .last_used_us
        .is_none_or(|t| chrono::Utc::now().timestamp_micros() - t > 60_000_000);
    if stale {
        match app.store.token_used(&token.id).await {
            // The principal's row says so too (`whoami` answers with it).
            Ok(()) => {
                token.last_used_at = Some(cdeploy_core::now_rfc3339());
                token.last_used_us = Some(chrono::Utc::now().timestamp_micros());
            }
            Err(e) => tracing::warn!(error = %e, "cannot record a token's use"),
        }
    }
    let mut principal = Principal::from(token);
    principal.session = session;
    access::authorize(app, principal, params, req, next).await
}
