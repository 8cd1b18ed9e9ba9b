//! HTTP handlers of the control-plane API, one module per resource: [`projects`],
//! [`deployments`], [`files`], [`seed`] here, and `crate::tokens`, `crate::secrets`
//! (env), `crate::hooks` (git), `crate::protection` beside it. This file holds the
//! router (built from the handlers' OpenAPI annotations), authentication, and the
//! health and metrics routes.

mod deployments;
mod files;
mod projects;
mod seed;

pub(crate) use deployments::{build_spec, start_deployment, start_deployment_of};
pub(crate) use files::{check_file_map, check_hash, missing_files, spool, store_blob};
pub(crate) use projects::{delete_artifacts, stop_builds};

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, RawPathParams, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cdeploy_builder::{BuildSpec, SourceSpec};
use cdeploy_core::api::{self, codes, CreateDeployment, CreateProject, SourceKind};
use cdeploy_core::event::{EventBody, Status};
use cdeploy_core::manifest::validate_tree_path;
use cdeploy_core::publish::OutputFiles;
use cdeploy_core::{git, ids, layout};
use futures_util::StreamExt;
use serde::Deserialize;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::db::{DeploymentRow, ProjectRow};
use crate::dispatch::{DispatchError, Job, JobKind};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::App;

/// Largest JSON body (a source map of many files).
const MAX_JSON_BYTES: usize = 32 * 1024 * 1024;

/// Memory all batch uploads together may hold members in (256 MiB, in KiB).
pub const BATCH_MEMORY_KIB: usize = 256 * 1024;

pub fn router(app: Arc<App>) -> Router {
    let max_file = app.config.max_file_bytes;
    // Each route is registered through its handler's `#[utoipa::path]`: the OpenAPI
    // document and the router come from the same place.
    let authed = OpenApiRouter::new()
        .routes(routes!(seed::seed_create_project))
        .routes(routes!(metrics))
        .routes(routes!(projects::list_projects, projects::create_project))
        .routes(routes!(
            projects::get_project,
            projects::update_project,
            projects::delete_project
        ))
        .routes(routes!(
            deployments::list_deployments,
            deployments::create_deployment
        ))
        .routes(routes!(projects::promote))
        .routes(routes!(files::missing_files))
        .routes(routes!(files::put_file).layer(DefaultBodyLimit::max(max_file)))
        // The archive reader enforces the batch's limits member by member.
        .routes(routes!(files::put_batch).layer(DefaultBodyLimit::disable()))
        .routes(routes!(
            deployments::get_deployment,
            deployments::delete_deployment
        ))
        .routes(routes!(deployments::cancel_deployment))
        // A WebSocket: OpenAPI cannot describe it (docs/api.md does).
        .route("/v1/deployments/{id}/events", get(crate::ws::events))
        .routes(routes!(crate::tokens::list, crate::tokens::create))
        .routes(routes!(crate::tokens::revoke))
        .routes(routes!(crate::secrets::list))
        .routes(routes!(crate::secrets::values))
        .routes(routes!(crate::secrets::put, crate::secrets::remove))
        .routes(routes!(
            crate::hooks::show,
            crate::hooks::link,
            crate::hooks::unlink
        ))
        .routes(routes!(crate::hooks::deliveries))
        .routes(routes!(crate::hooks::list_hooks, crate::hooks::create_hook))
        .routes(routes!(crate::hooks::delete_hook))
        .routes(routes!(
            crate::protection::show,
            crate::protection::set,
            crate::protection::remove
        ))
        .routes(routes!(crate::tokens::whoami))
        .routes(routes!(crate::tokens::audit))
        .layer(middleware::from_fn_with_state(app.clone(), auth));
    let (documented, doc) = OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .merge(authed)
        // Authenticated by the project's webhook secret, or by the hook's secret URL.
        .routes(
            routes!(crate::hooks::receive)
                .layer(DefaultBodyLimit::max(crate::hooks::MAX_PAYLOAD_BYTES)),
        )
        .routes(routes!(crate::hooks::call_hook))
        .split_for_parts();
    let doc = doc
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    documented
        .route(
            "/v1/openapi.json",
            get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    doc.clone(),
                )
            }),
        )
        .merge(crate::builds::router(app.clone(), max_file))
        .fallback(|| async { ApiError::not_found("route") })
        .layer(middleware::from_fn_with_state(
            app.clone(),
            reject_oversized,
        ))
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(app)
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process is up", content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Refuses a body whose declared length is over the route's limit before reading it, so
/// a client sending a huge upload gets its 413 at once. Streamed bodies are cut off by
/// the body limits as they arrive (a batch upload's by its reader, which bounds every
/// member and how many there are).
async fn reject_oversized(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
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

/// Failed authentications allowed per client address before it gets `429`s: enough for
/// a person fixing a typo, far too few to guess a token.
pub type AuthLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

pub fn auth_limiter() -> AuthLimiter {
    let per_minute = NonZeroU32::new(20).expect("non-zero");
    governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute))
}

async fn auth(
    State(app): State<Arc<App>>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    req: Request,
    next: Next,
) -> Response {
    let token = crate::access::bearer(req.headers());
    let failure = match token {
        None => {
            "missing bearer token: pass `Authorization: Bearer <token>` (cdeploy login saves one)"
        }
        Some(token) => {
            let hash = ids::token_hash(token);
            match app.store.token_by_hash(&hash).await {
                Ok(Some(t)) if t.expired() => "this token expired: ask an admin for a new one",
                Ok(Some(t)) => {
                    let params = params
                        .map(|p| {
                            p.iter()
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect()
                        })
                        .unwrap_or_default();
                    return authorized(&app, hash, t, params, req, next).await;
                }
                Ok(None) => "invalid token",
                Err(e) => return ApiError::from(e).into_response(),
            }
        }
    };
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if app.auth_failures.len() > 100_000 {
        app.auth_failures.retain_recent();
    }
    match app.auth_failures.check_key(&ip) {
        Ok(()) => {
            ApiError::new(StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED, failure).into_response()
        }
        Err(not_until) => {
            tracing::warn!(%ip, "too many failed authentications");
            rate_limited(
                &not_until,
                "too many failed authentications from this address; wait and retry with a valid token",
            )
            .into_response()
        }
    }
}

/// `429` with a `Retry-After` of the whole seconds until a limiter lets the next
/// request through (rounded up: a client that waits as told is let in).
pub(crate) fn rate_limited(
    not_until: &governor::NotUntil<governor::clock::QuantaInstant>,
    message: &str,
) -> ApiError {
    let wait = not_until.wait_time_from(governor::clock::Clock::now(
        &governor::clock::DefaultClock::default(),
    ));
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, codes::RATE_LIMITED, message);
    e.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
    e
}

/// Tokens per second and burst, per token: a token that floods the API gets `429`s
/// with `Retry-After`, and others are not slowed.
pub type TokenLimiter = governor::DefaultKeyedRateLimiter<String>;

pub fn token_limiter(rate: NonZeroU32, burst: NonZeroU32) -> TokenLimiter {
    governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
}

/// A known token: within its request rate, then its role (see [`crate::access`]).
async fn authorized(
    app: &Arc<App>,
    hash: String,
    mut token: crate::db::TokenRow,
    params: Vec<(String, String)>,
    req: Request,
    next: Next,
) -> Response {
    if app.token_rates.len() > 100_000 {
        app.token_rates.retain_recent();
    }
    if let Err(not_until) = app.token_rates.check_key(&hash) {
        return rate_limited(
            &not_until,
            "too many requests with this token; slow down (server settings token_rate, token_burst)",
        )
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
    crate::access::authorize(
        app,
        crate::access::Principal::from(token),
        params,
        req,
        next,
    )
    .await
}

/// `GET /readyz`: whether this replica can serve: the database, the log bus and
/// storage all answer. `503` naming what failed otherwise. It needs no token, so the
/// errors themselves (hosts, bucket names) go to the log, not to the caller.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "Ready: the database and log bus answer", content_type = "text/plain", body = String), crate::openapi::Errors))]
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let store = app
        .store
        .token_count()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let bus = app.lifecycle.bus.check().await;
    let storage = app.storage.check().await.map_err(|e| e.to_string());
    let status = |part: &str, r: &Result<(), String>| match r {
        Ok(()) => "ok",
        Err(e) => {
            tracing::warn!(part, error = %e, "not ready");
            "unavailable"
        }
    };
    let ok = store.is_ok() && bus.is_ok() && storage.is_ok();
    let body = serde_json::json!({
        "ready": ok,
        "store": status("store", &store),
        "bus": status("bus", &bus),
        "storage": status("storage", &storage),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus metrics", content_type = "text/plain", body = String), crate::openapi::Errors), security(("bearer" = [])))]
async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let (shed, refused) = app.conns.shed_and_refused();
    let text = app
        .lifecycle
        .metrics
        .render(app.conns.open() as u64, shed, refused);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

pub(crate) fn check_slug(slug: &str) -> Result<(), ApiError> {
    ids::validate_slug(slug).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::INVALID_SLUG,
            format!("invalid slug {slug:?}: {e}"),
        )
    })
}

pub(crate) fn check_git(url: &str, git_ref: Option<&str>) -> Result<(), ApiError> {
    git::validate_git_url(url).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::INVALID_GIT_URL,
            format!("invalid git URL: {e}"),
        )
    })?;
    if let Some(r) = git_ref {
        git::validate_git_ref(r).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    Ok(())
}

impl App {
    fn project_json(&self, p: &ProjectRow) -> api::Project {
        api::Project {
            slug: p.slug.clone(),
            created_at: p.created_at.clone(),
            git: p.git.as_deref().map(git::redact_url),
            production: p.production.clone(),
            url: api::site_url(&self.config.domain, &p.slug, None),
        }
    }

    pub(crate) fn deployment_json(
        &self,
        d: &DeploymentRow,
        production: Option<&str>,
    ) -> api::Deployment {
        api::Deployment {
            id: d.id.clone(),
            slug: d.slug.clone(),
            status: d.status,
            source: d.source,
            git: d.git.clone().map(|g| api::GitSource {
                url: git::redact_url(&g.url),
                ..g
            }),
            created_at: d.created_at.clone(),
            updated_at: d.updated_at.clone(),
            url: api::site_url(&self.config.domain, &d.slug, None),
            preview_url: api::site_url(&self.config.domain, &d.slug, Some(&d.id)),
            production: production == Some(d.id.as_str()),
            error: d.error.clone(),
            preview: d.preview,
            branch: d.branch.clone(),
            branch_url: self.branch_url(d),
        }
    }

    /// `<label>--<slug>.<domain>` of a preview of a branch.
    pub(crate) fn branch_url(&self, d: &DeploymentRow) -> Option<String> {
        // A slug that looks like a deployment id cannot be told apart in an alias host.
        if ids::DeploymentId::parse(&d.slug).is_some() {
            return None;
        }
        let label = ids::branch_label(d.branch.as_deref()?, &d.slug)?;
        d.preview
            .then(|| api::branch_url(&self.config.domain, &label, &d.slug))
    }

    pub(crate) async fn project(&self, slug: &str) -> Result<ProjectRow, ApiError> {
        check_slug(slug)?;
        self.store
            .get_project(slug)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("project {slug:?}")))
    }

    async fn deployment(&self, id: &str) -> Result<DeploymentRow, ApiError> {
        let Some(id) = ids::DeploymentId::parse(id) else {
            return Err(ApiError::not_found(format!("deployment {id:?}")));
        };
        self.store
            .get_deployment(id.as_str())
            .await?
            .ok_or_else(|| ApiError::not_found(format!("deployment {id}")))
    }

    async fn deployment_response(&self, d: &DeploymentRow) -> Result<api::Deployment, ApiError> {
        let production = self
            .store
            .get_project(&d.slug)
            .await?
            .and_then(|p| p.production);
        Ok(self.deployment_json(d, production.as_deref()))
    }
}

pub(crate) fn being_deleted(slug: &str) -> ApiError {
    ApiError::conflict(format!(
        "project {slug:?} is being deleted; deploy again once it is gone"
    ))
}

#[cfg(test)]
mod tests;
