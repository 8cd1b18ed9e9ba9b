//! Dashboard sessions over HTTP: `POST /v1/sessions` trades a token (or a one-time link's
//! code) for an `HttpOnly`, `SameSite=Strict` cookie; `GET|DELETE /v1/session` reads and
//! ends the caller's; `POST /v1/sessions/links` makes a sign-in link (`cdeploy
//! dashboard`); admins list and end sessions. How a cookie authenticates a request, with
//! its CSRF and origin checks, is in [`super::auth`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::header::{HeaderMap, HOST, ORIGIN, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cdeploy_core::api::{codes, CreateSession, SessionEntry, SessionInfo, SessionLink};
use cookie::{Cookie, SameSite};

use super::access::{AuditDetail, Principal};
use super::error::{ApiError, ApiJson};
use crate::service::limits::count_failure;
use crate::service::{sessions, App};

/// The cookie's name over plain HTTP; over HTTPS the `__Host-` prefix binds it to this
/// exact host and to `Secure` (browsers refuse it otherwise).
pub const COOKIE: &str = "cdeploy_session";
pub const SECURE_COOKIE: &str = "__Host-cdeploy_session";
/// The header every change made with a session cookie must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The session cookie a request carries.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionCookie {
    None,
    One(String),
    /// More than one: a site under the same registrable domain can set a cookie of the
    /// same name for the whole domain ("cookie tossing"); which one the browser meant
    /// cannot be told, so neither is used.
    Ambiguous,
}

/// The session cookie of a request. Over HTTPS only the `__Host-` one counts (no other
/// host can set it); over HTTP, the plain one, and only if it is the only one.
pub fn session_cookie(headers: &HeaderMap, https: bool) -> SessionCookie {
    let mut found = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| c.name() == if https { SECURE_COOKIE } else { COOKIE })
        .map(|c| c.value().to_string());
    match (found.next(), found.next()) {
        (None, _) => SessionCookie::None,
        (Some(v), None) => SessionCookie::One(v),
        (Some(_), Some(_)) => SessionCookie::Ambiguous,
    }
}

/// Whether the request's `Origin`, when it has one, is this server: `--api-url`'s
/// origin (scheme, host and port) when it is set, else the request's `Host`. A page
/// of another site may make a browser send a request, never with this origin.
pub fn same_origin(headers: &HeaderMap, api_url: Option<&str>) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if let Some(ours) = api_url.and_then(|u| url::Url::parse(u).ok()) {
        return url::Url::parse(origin)
            .is_ok_and(|o| o.origin() == ours.origin() && o.path() == "/");
    }
    let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// Whether the browser reached us over HTTPS: the operator's `--api-url` says so, or
/// the TLS-terminating proxy in front does.
pub fn over_https(app: &App, headers: &HeaderMap) -> bool {
    app.config
        .api_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn set_cookie(secure: bool, value: &str, max_age_secs: i64) -> HeaderValue {
    let c = Cookie::build((if secure { SECURE_COOKIE } else { COOKIE }, value))
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Strict)
        .max_age(cookie::time::Duration::seconds(max_age_secs))
        .build();
    HeaderValue::from_str(&c.to_string()).expect("a cookie of URL-safe characters")
}

fn cross_site() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        codes::FORBIDDEN,
        "this request came from a page of another site (its Origin is not this server)",
    )
}

/// `POST /v1/sessions`: signs in. A failed sign-in counts against the address with
/// failed authentications (20 a minute; past them, `429`). A session the request's
/// cookie names ends: one browser, one session.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = CreateSession, responses((status = 201, body = SessionInfo, description = "Signed in: the session cookie is set"), (status = 400, description = "Neither or both of token and code", body = cdeploy_core::api::ErrorBody), (status = 401, description = "An unknown or expired token, or a used or expired code", body = cdeploy_core::api::ErrorBody), (status = 403, description = "Sent from a page of another site", body = cdeploy_core::api::ErrorBody), super::openapi::HookErrors))]
pub async fn create_session(
    State(app): State<Arc<App>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateSession>,
) -> Result<Response, ApiError> {
    if !same_origin(&headers, app.config.api_url.as_deref()) {
        return Err(cross_site());
    }
    let started = match sessions::sign_in(&app, &body).await {
        Ok(started) => started,
        Err(e) if e.kind != crate::service::error::Kind::Unauthenticated => return Err(e.into()),
        Err(e) => {
            count_failure(
                &app.auth_failures,
                super::access::peer_ip(peer),
                "too many failed sign-ins from this address; wait a minute",
            )?;
            return Err(e.into());
        }
    };
    if let SessionCookie::One(previous) = session_cookie(&headers, over_https(&app, &headers)) {
        sessions::end_by_cookie(&app, &previous).await?;
    }
    let principal = Principal::from(started.token.clone());
    let detail = format!(
        "dashboard session {} started ({})",
        started.session.id,
        if body.code.is_some() {
            "sign-in link"
        } else {
            "token"
        }
    );
    super::access::record(
        &app,
        &principal,
        &axum::http::Method::POST,
        "/v1/sessions",
        (None, Some(started.session.id.clone())),
        201,
        Some(detail),
    )
    .await;
    let secure = over_https(&app, &headers);
    let max_age = (started.session.expires_us - chrono::Utc::now().timestamp_micros()) / 1_000_000;
    let info = session_info(&started.session, &started.token);
    let mut response = (StatusCode::CREATED, Json(info)).into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        set_cookie(secure, &started.cookie, max_age.max(0)),
    );
    Ok(response)
}

fn session_info(s: &crate::db::SessionRow, token: &crate::db::TokenRow) -> SessionInfo {
    SessionInfo {
        id: s.id.clone(),
        csrf: s.csrf.clone(),
        created_at: s.created_at.clone(),
        expires_at: sessions::rfc3339(sessions::ends_us(s)),
        token: super::tokens::info(token),
    }
}

fn no_session() -> ApiError {
    ApiError::not_found(
        "session (this request was made with a bearer token, not a dashboard session)",
    )
}

/// `GET /v1/session`: the caller's session and its CSRF token.
#[utoipa::path(get, path = "/v1/session", tag = "sessions", responses((status = 200, body = SessionInfo), super::openapi::Errors), security(("bearer" = []), ("session" = [])))]
pub async fn get_session(
    Extension(me): Extension<Principal>,
) -> Result<Json<SessionInfo>, ApiError> {
    let s = me.session.as_ref().ok_or_else(no_session)?;
    Ok(Json(session_info(s, &me.token)))
}

/// `DELETE /v1/session`: signs out (the cookie is cleared).
#[utoipa::path(delete, path = "/v1/session", tag = "sessions", responses((status = 204, description = "Signed out"), super::openapi::Errors), security(("bearer" = []), ("session" = [])))]
pub async fn end_session(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Extension(me): Extension<Principal>,
) -> Result<Response, ApiError> {
    let s = me.session.as_ref().ok_or_else(no_session)?;
    sessions::end(&app, &s.id).await?;
    let mut response = (
        StatusCode::NO_CONTENT,
        Extension(AuditDetail(format!(
            "dashboard session {} ended (signed out)",
            s.id
        ))),
    )
        .into_response();
    response
        .headers_mut()
        .insert(SET_COOKIE, set_cookie(over_https(&app, &headers), "", 0));
    Ok(response)
}

/// `POST /v1/sessions/links`: a one-time link that signs a browser in as the calling
/// token (what `cdeploy dashboard` opens), valid for a minute. Made with a token only:
/// a session that could make links could outlive its own end (each link starts a new
/// session), and a script in its page could carry one elsewhere.
#[utoipa::path(post, path = "/v1/sessions/links", tag = "sessions", responses((status = 201, body = SessionLink), super::openapi::Errors), security(("bearer" = [])))]
pub async fn create_session_link(
    State(app): State<Arc<App>>,
    Extension(me): Extension<Principal>,
) -> Result<(StatusCode, Json<SessionLink>), ApiError> {
    if me.session.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            codes::FORBIDDEN,
            "sign-in links are made with an API token (cdeploy dashboard), not from a dashboard session",
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(sessions::link(&app, &me.token).await?),
    ))
}

/// `GET /v1/sessions`: every live session (admins).
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", responses((status = 200, body = Vec<SessionEntry>), super::openapi::Errors), security(("bearer" = [])))]
pub async fn list_sessions(
    State(app): State<Arc<App>>,
) -> Result<Json<Vec<SessionEntry>>, ApiError> {
    Ok(Json(sessions::list(&app).await?))
}

/// `DELETE /v1/sessions/{id}`: ends a session (admins).
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "A session id (ses_...)")), responses((status = 204, description = "Ended"), super::openapi::Errors), security(("bearer" = [])))]
pub async fn remove_session(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Extension<AuditDetail>), ApiError> {
    if !sessions::end(&app, &id).await? {
        return Err(ApiError::not_found(format!("session {id}")));
    }
    Ok((
        StatusCode::NO_CONTENT,
        Extension(AuditDetail(format!("dashboard session {id} ended"))),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn same_origin_h(h: &HeaderMap) -> bool {
        same_origin(h, None)
    }

    #[test]
    fn with_an_api_url_the_origin_must_be_its_origin() {
        let h = |o: &str| headers(&[("host", "deploy.example.com"), ("origin", o)]);
        let api = Some("https://deploy.example.com");
        assert!(same_origin(&h("https://deploy.example.com"), api));
        assert!(
            !same_origin(&h("http://deploy.example.com"), api),
            "another scheme"
        );
        assert!(
            !same_origin(&h("https://deploy.example.com:8443"), api),
            "another port"
        );
        assert!(!same_origin(&h("https://evil.example.com"), api));
    }

    #[test]
    fn an_origin_must_be_this_host() {
        assert!(same_origin_h(&headers(&[("host", "127.0.0.1:9000")])));
        assert!(same_origin_h(&headers(&[
            ("host", "127.0.0.1:9000"),
            ("origin", "http://127.0.0.1:9000")
        ])));
        assert!(same_origin_h(&headers(&[
            ("host", "Deploy.Example.com"),
            ("origin", "https://deploy.example.com")
        ])));
        assert!(!same_origin_h(&headers(&[
            ("host", "127.0.0.1:9000"),
            ("origin", "http://evil.test")
        ])));
        assert!(!same_origin_h(&headers(&[
            ("host", "127.0.0.1:9000"),
            ("origin", "http://127.0.0.1:9001")
        ])));
        assert!(!same_origin_h(&headers(&[
            ("host", "127.0.0.1:9000"),
            ("origin", "null")
        ])));
        assert!(!same_origin_h(&headers(&[(
            "origin",
            "http://127.0.0.1:9000"
        )])));
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_never_chosen_among_two() {
        let h = headers(&[("cookie", "a=1; cdeploy_session=abc; b=2")]);
        assert_eq!(session_cookie(&h, false), SessionCookie::One("abc".into()));
        let h = headers(&[("cookie", "x=1"), ("cookie", "__Host-cdeploy_session=def")]);
        assert_eq!(session_cookie(&h, true), SessionCookie::One("def".into()));
        assert_eq!(
            session_cookie(&h, false),
            SessionCookie::None,
            "__Host- is for HTTPS"
        );
        let tossed = headers(&[("cookie", "cdeploy_session=planted; cdeploy_session=mine")]);
        assert_eq!(session_cookie(&tossed, false), SessionCookie::Ambiguous);
        let tossed = headers(&[(
            "cookie",
            "cdeploy_session=planted; __Host-cdeploy_session=mine",
        )]);
        assert_eq!(
            session_cookie(&tossed, true),
            SessionCookie::One("mine".into())
        );
        assert_eq!(
            session_cookie(&headers(&[("cookie", "cdeploy=1")]), false),
            SessionCookie::None
        );
    }

    #[test]
    fn the_cookie_is_httponly_strict_and_secure_over_https() {
        let plain = set_cookie(false, "v", 60);
        let plain = plain.to_str().unwrap();
        assert!(plain.starts_with("cdeploy_session=v"), "{plain}");
        for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=60"] {
            assert!(plain.contains(part), "{plain} lacks {part}");
        }
        assert!(!plain.contains("Secure"));
        let secure = set_cookie(true, "v", 60);
        let secure = secure.to_str().unwrap();
        assert!(
            secure.starts_with("__Host-cdeploy_session=v") && secure.contains("Secure"),
            "{secure}"
        );
    }
}
