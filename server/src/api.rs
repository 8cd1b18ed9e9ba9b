//! HTTP handlers of the control-plane API.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
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

pub fn router(app: Arc<App>) -> Router {
    let max_file = app.config.max_file_bytes;
    // Each route is registered through its handler's `#[utoipa::path]`: the OpenAPI
    // document and the router come from the same place.
    let authed = OpenApiRouter::new()
        .routes(routes!(seed_create_project))
        .routes(routes!(metrics))
        .routes(routes!(list_projects, create_project))
        .routes(routes!(get_project, update_project, delete_project))
        .routes(routes!(list_deployments, create_deployment))
        .routes(routes!(promote))
        .routes(routes!(missing_files))
        .routes(routes!(put_file).layer(DefaultBodyLimit::max(max_file)))
        .routes(routes!(get_deployment, delete_deployment))
        .routes(routes!(cancel_deployment))
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
/// the body limits as they arrive.
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
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
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
    use std::fmt::Write;
    let mut text = app.lifecycle.metrics.render();
    let (shed, refused) = app.conns.shed_and_refused();
    for (name, kind, help, value) in [
        (
            "cdeploy_connections_open",
            "gauge",
            "Open connections (API and embedded proxy).",
            app.conns.open() as u64,
        ),
        (
            "cdeploy_connections_shed_total",
            "counter",
            "Idle connections closed to admit new ones at the cap.",
            shed,
        ),
        (
            "cdeploy_connections_refused_total",
            "counter",
            "Connections refused at the cap because all were busy.",
            refused,
        ),
    ] {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
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

#[utoipa::path(get, path = "/v1/projects", tag = "projects", responses((status = 200, body = Vec<api::Project>), crate::openapi::Errors), security(("bearer" = [])))]
async fn list_projects(
    State(app): State<Arc<App>>,
    axum::Extension(me): axum::Extension<crate::access::Principal>,
) -> Result<Json<Vec<api::Project>>, ApiError> {
    let projects = app.store.list_projects().await?;
    Ok(Json(
        projects
            .iter()
            .filter(|p| me.sees(&p.slug))
            .map(|p| app.project_json(p))
            .collect(),
    ))
}

#[utoipa::path(post, path = "/v1/projects", tag = "projects", request_body = CreateProject, responses((status = 201, body = api::Project), crate::openapi::Errors), security(("bearer" = [])))]
async fn create_project(
    State(app): State<Arc<App>>,
    axum::Extension(me): axum::Extension<crate::access::Principal>,
    ApiJson(body): ApiJson<CreateProject>,
) -> Result<(StatusCode, Json<api::Project>), ApiError> {
    check_slug(&body.slug)?;
    me.check(crate::access::Need::Deploy, Some(&body.slug))?;
    if let Some(url) = &body.git {
        check_git(url, None)?;
    }
    if !app
        .store
        .create_project(&body.slug, body.git.as_deref())
        .await?
    {
        return Err(ApiError::conflict(format!(
            "project {:?} already exists",
            body.slug
        )));
    }
    let p = app.project(&body.slug).await?;
    Ok((StatusCode::CREATED, Json(app.project_json(&p))))
}

#[utoipa::path(get, path = "/v1/projects/{slug}", tag = "projects", params(("slug" = String, Path, description = "The project's slug")), responses((status = 200, body = api::Project), crate::openapi::Errors), security(("bearer" = [])))]
async fn get_project(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<Json<api::Project>, ApiError> {
    let p = app.project(&slug).await?;
    Ok(Json(app.project_json(&p)))
}

#[utoipa::path(patch, path = "/v1/projects/{slug}", tag = "projects", params(("slug" = String, Path, description = "The project's slug")), request_body = api::UpdateProject, responses((status = 200, body = api::Project), crate::openapi::Errors), security(("bearer" = [])))]
async fn update_project(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<api::UpdateProject>,
) -> Result<Json<api::Project>, ApiError> {
    app.project(&slug).await?;
    if let Some(url) = body.git.as_deref() {
        if url.is_empty() {
            app.store.set_project_git(&slug, None).await?;
        } else {
            check_git(url, None)?;
            app.store.set_project_git(&slug, Some(url)).await?;
        }
    }
    let p = app.project(&slug).await?;
    Ok(Json(app.project_json(&p)))
}

/// Deletes a project: from the first moment it refuses new deployments and any late
/// build's activation; its builds are stopped, its site and previews go offline, and its
/// deployments' manifests, sources and logs are deleted (blobs go at the next GC).
#[utoipa::path(delete, path = "/v1/projects/{slug}", tag = "projects", params(("slug" = String, Path, description = "The project's slug")), responses((status = 204, description = "Deleted"), crate::openapi::Errors), security(("bearer" = [])))]
async fn delete_project(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.project(&slug).await?;
    app.store.mark_deleting(&slug).await?;
    let deployments = app.store.list_deployments(&slug, u32::MAX).await?;
    stop_builds(&app, &deployments).await?;
    // The site goes offline first, then every preview.
    app.storage.delete(&layout::route(&slug)).await?;
    if let Some(proxy) = &app.lifecycle.proxy {
        proxy.invalidate_route(&slug).await;
    }
    for d in &deployments {
        delete_artifacts(&app, &d.id).await?;
    }
    for entry in app.storage.list(&layout::alias_prefix(&slug)).await? {
        app.storage.delete(&entry.key).await?;
    }
    app.storage.delete(&layout::protection(&slug)).await?;
    if let Some(proxy) = &app.lifecycle.proxy {
        proxy.invalidate_protection(&slug).await;
    }
    // Its dependency cache kept in storage (ECS builds): a project created later under
    // the same name starts clean.
    for entry in app.storage.list(&layout::build_cache_prefix(&slug)).await? {
        app.storage.delete(&entry.key).await?;
    }
    app.store.delete_project(&slug).await?;
    app.dispatcher.forget_project(&slug).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Cancels the deployments that still run and waits (up to 30 s) until each has ended:
/// a build past its last cancel check may still be activating.
async fn stop_builds(app: &App, deployments: &[DeploymentRow]) -> Result<(), ApiError> {
    let mut stopping = Vec::new();
    for d in deployments {
        if d.status.is_terminal() {
            continue;
        }
        if app.dispatcher.cancel(&d.id, &d.slug).await {
            stopping.push(d.id.clone());
        } else {
            app.lifecycle
                .event(&d.id, &d.slug, EventBody::status(Status::Canceled))
                .await;
        }
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    for id in stopping {
        while !app
            .store
            .get_deployment(&id)
            .await?
            .is_none_or(|d| d.status.is_terminal())
        {
            if tokio::time::Instant::now() > deadline {
                return Err(ApiError::conflict(
                    "builds are still stopping; try again shortly",
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Deletes what storage holds of one deployment (its blobs stay for GC: others may
/// share them) and makes the proxy forget it.
pub(crate) async fn delete_artifacts(app: &App, id: &str) -> Result<(), ApiError> {
    // The manifest first: without it the deployment is no longer servable.
    for key in [
        layout::manifest(id),
        layout::source_map(id),
        layout::log(id),
    ] {
        app.storage.delete(&key).await?;
    }
    if let Some(proxy) = &app.lifecycle.proxy {
        proxy.invalidate_deployment(id).await;
    }
    Ok(())
}

/// `DELETE /v1/deployments/{id}`: one deployment (not the one in production: promote
/// another, or delete the project). A running one is canceled first.
#[utoipa::path(delete, path = "/v1/deployments/{id}", tag = "deployments", params(("id" = String, Path, description = "A deployment id")), responses((status = 204, description = "Deleted"), crate::openapi::Errors), security(("bearer" = [])))]
async fn delete_deployment(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let d = app.deployment(&id).await?;
    let p = app.project(&d.slug).await?;
    if p.production.as_deref() == Some(d.id.as_str()) {
        return Err(ApiError::conflict(format!(
            "deployment {} is {}'s production deployment: promote another one first, or delete the project",
            d.id, d.slug
        )));
    }
    stop_builds(&app, std::slice::from_ref(&d)).await?;
    delete_artifacts(&app, &d.id).await?;
    app.store.delete_deployment(&d.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/projects/{slug}/deployments", tag = "deployments", params(("slug" = String, Path, description = "The project's slug"), ("limit" = Option<u32>, Query, description = "How many, newest first (1-100, default 20)")), responses((status = 200, body = Vec<api::Deployment>), crate::openapi::Errors), security(("bearer" = [])))]
async fn list_deployments(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<api::Deployment>>, ApiError> {
    let p = app.project(&slug).await?;
    let rows = app
        .store
        .list_deployments(&slug, q.limit.unwrap_or(50).clamp(1, 1000))
        .await?;
    Ok(Json(
        rows.iter()
            .map(|d| app.deployment_json(d, p.production.as_deref()))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/deployments/{id}", tag = "deployments", params(("id" = String, Path, description = "A deployment id")), responses((status = 200, body = api::Deployment), crate::openapi::Errors), security(("bearer" = [])))]
async fn get_deployment(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<api::Deployment>, ApiError> {
    let d = app.deployment(&id).await?;
    Ok(Json(app.deployment_response(&d).await?))
}

#[utoipa::path(post, path = "/v1/deployments/{id}/cancel", tag = "deployments", params(("id" = String, Path, description = "A deployment id")), responses((status = 200, body = api::Deployment), crate::openapi::Errors), security(("bearer" = [])))]
async fn cancel_deployment(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<api::Deployment>, ApiError> {
    let d = app.deployment(&id).await?;
    if d.status.is_terminal() {
        return Err(ApiError::conflict(format!(
            "deployment {} is already {}",
            d.id, d.status
        )));
    }
    if !app.dispatcher.cancel(&d.id, &d.slug).await {
        app.lifecycle
            .event(&d.id, &d.slug, EventBody::status(Status::Canceled))
            .await;
    }
    // A running build reports `canceled` once its processes are gone; answer with what is known now.
    let d = app.deployment(&id).await?;
    Ok(Json(app.deployment_response(&d).await?))
}

#[utoipa::path(post, path = "/v1/projects/{slug}/promote", tag = "deployments", params(("slug" = String, Path, description = "The project's slug")), request_body = api::PromoteRequest, responses((status = 200, body = api::Project), crate::openapi::Errors), security(("bearer" = [])))]
async fn promote(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<api::PromoteRequest>,
) -> Result<Json<api::Project>, ApiError> {
    if app.project(&slug).await?.deleting {
        return Err(being_deleted(&slug));
    }
    let d = app.deployment(&body.deployment).await?;
    if d.slug != slug {
        return Err(ApiError::not_found(format!(
            "deployment {} in project {slug:?}",
            d.id
        )));
    }
    if d.status != Status::Ready {
        return Err(ApiError::conflict(format!(
            "deployment {} is {}, only ready deployments can be promoted",
            d.id, d.status
        )));
    }
    // An explicit promote or rollback moves production to any ready deployment.
    app.store.set_production(&slug, Some(&d.id)).await?;
    cdeploy_core::publish::set_route(app.storage.as_ref(), &slug, &d.id).await?;
    app.lifecycle.activated(&slug, &d.id).await;
    let p = app.project(&slug).await?;
    Ok(Json(app.project_json(&p)))
}

pub(crate) fn check_hash(h: &str) -> Result<(), ApiError> {
    if cdeploy_core::is_sha256_hex(h) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{h:?} is not a SHA-256 hash (64 lowercase hex characters)"
        )))
    }
}

/// Sizes of the given blobs (`None`: not stored), looked up 32 at a time.
pub(crate) async fn blob_sizes(
    app: &App,
    hashes: impl Iterator<Item = String>,
) -> Result<BTreeMap<String, Option<u64>>, ApiError> {
    let mut unique: Vec<String> = hashes.collect();
    unique.sort();
    unique.dedup();
    let storage = app.storage.clone();
    let results: Vec<_> = futures_util::stream::iter(unique)
        .map(|h| {
            let storage = storage.clone();
            async move {
                let size = storage.size(&layout::blob(&h)).await;
                (h, size)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut sizes = BTreeMap::new();
    for (h, size) in results {
        sizes.insert(h, size?);
    }
    Ok(sizes)
}

/// The hashes storage does not have yet, sorted.
pub(crate) async fn find_missing(
    app: &App,
    hashes: impl Iterator<Item = String>,
) -> Result<Vec<String>, ApiError> {
    let sizes = blob_sizes(app, hashes).await?;
    Ok(sizes
        .into_iter()
        .filter(|(_, size)| size.is_none())
        .map(|(h, _)| h)
        .collect())
}

#[utoipa::path(post, path = "/v1/files/missing", tag = "files", request_body = api::MissingRequest, responses((status = 200, body = api::MissingResponse), crate::openapi::Errors), security(("bearer" = [])))]
pub(crate) async fn missing_files(
    State(app): State<Arc<App>>,
    ApiJson(body): ApiJson<api::MissingRequest>,
) -> Result<Json<api::MissingResponse>, ApiError> {
    if body.hashes.len() > app.config.max_files {
        return Err(ApiError::bad_request(format!(
            "at most {} hashes per request",
            app.config.max_files
        )));
    }
    for h in &body.hashes {
        check_hash(h)?;
    }
    // Blobs garbage collection is deleting right now count as missing.
    let deleting = app.store.touch_blobs(&body.hashes).await?;
    let mut missing = find_missing(&app, body.hashes.into_iter()).await?;
    missing.extend(deleting);
    missing.sort();
    missing.dedup();
    Ok(Json(api::MissingResponse { missing }))
}

#[utoipa::path(put, path = "/v1/files/{hash}", tag = "files", params(("hash" = String, Path, description = "The SHA-256 of the body, in hex")), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes"), responses((status = 201, description = "Stored"), (status = 200, description = "Already stored"), crate::openapi::Errors), security(("bearer" = [])))]
async fn put_file(
    State(app): State<Arc<App>>,
    Path(hash): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    store_blob(&app, &hash, body).await
}

/// Stores an uploaded blob after checking its bytes against its hash (storage checks
/// again as it writes). `200` when it was stored already, `201` when new.
///
/// The body streams to a private temporary file while it is hashed, then storage takes
/// the file: a large upload never sits in memory.
pub(crate) async fn store_blob(app: &App, hash: &str, body: Body) -> Result<StatusCode, ApiError> {
    check_hash(hash)?;
    // Read the whole body first: answering before it is read would break the
    // client's send.
    let tmp = spool(app, body, app.config.max_file_bytes as u64, "a file").await?;
    if tmp.hash != *hash {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::HASH_MISMATCH,
            format!("the body hashes to {}, not {hash}", tmp.hash),
        ));
    }
    let key = layout::blob(hash);
    // Garbage collection may be deleting this blob this very moment: let it finish,
    // then store the blob again.
    let mut waited = 0;
    while !app.store.touch_blobs(&[hash.to_string()]).await?.is_empty() {
        waited += 1;
        if waited > 100 {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::UNAVAILABLE,
                "this file is being garbage-collected; retry",
            );
            e.retry_after = Some(5);
            return Err(e);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if app.storage.exists(&key).await? {
        return Ok(StatusCode::OK);
    }
    app.storage.put_file(&key, &tmp.file).await?;
    app.lifecycle
        .metrics
        .blobs_uploaded
        .fetch_add(1, Ordering::Relaxed);
    app.lifecycle
        .metrics
        .blob_bytes_uploaded
        .fetch_add(tmp.len, Ordering::Relaxed);
    Ok(StatusCode::CREATED)
}

/// An upload written to a temporary file (deleted when dropped).
pub(crate) struct Spooled {
    pub(crate) file: tempfile::TempPath,
    hash: String,
    len: u64,
}

/// Writes a request body to `<data-dir>/tmp`, hashing it on the way and refusing it
/// past `limit` bytes (`what`, e.g. "a file", names it in the error).
pub(crate) async fn spool(
    app: &App,
    body: Body,
    limit: u64,
    what: &str,
) -> Result<Spooled, ApiError> {
    use sha2::Digest;
    use tokio::io::AsyncWriteExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            format!("{what} may be at most {} MiB", limit / (1024 * 1024)),
        )
    };
    let dir = app.config.data_dir.join("tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::internal("cannot create the upload folder", e))?;
    let path = tempfile::Builder::new()
        .prefix("upload-")
        .tempfile_in(&dir)
        .map_err(|e| ApiError::internal("cannot create an upload file", e))?
        .into_temp_path();
    let mut out = tokio::fs::File::create(&path)
        .await
        .map_err(|e| ApiError::internal("cannot write an upload file", e))?;
    let mut hasher = sha2::Sha256::new();
    let mut len = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the upload failed: {e}")))?;
        len += chunk.len() as u64;
        if len > limit {
            return Err(too_large());
        }
        hasher.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal("cannot write an upload file", e))?;
    }
    out.flush()
        .await
        .map_err(|e| ApiError::internal("cannot write an upload file", e))?;
    Ok(Spooled {
        file: path,
        hash: hex::encode(hasher.finalize()),
        len,
    })
}

/// Checks a path → hash map of a source or prebuilt upload; answers `409 missing_files`
/// when blobs are not stored yet, else returns each blob's size.
pub(crate) async fn check_file_map(
    app: &App,
    map: &BTreeMap<String, String>,
    url_paths: bool,
) -> Result<BTreeMap<String, u64>, ApiError> {
    if map.is_empty() {
        return Err(ApiError::bad_request("the file list is empty"));
    }
    if map.len() > app.config.max_files {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            format!(
                "{} files; at most {} per deployment (server setting max_files)",
                map.len(),
                app.config.max_files
            ),
        ));
    }
    for (path, hash) in map {
        if url_paths && !path.starts_with('/') {
            return Err(ApiError::bad_request(format!(
                "file path {path:?} must start with '/'"
            )));
        }
        validate_tree_path(path).map_err(ApiError::bad_request)?;
        check_hash(hash)?;
    }
    let hashes: Vec<String> = map.values().cloned().collect();
    let deleting = app.store.touch_blobs(&hashes).await?;
    let sizes = blob_sizes(app, hashes.into_iter()).await?;
    let mut missing: Vec<String> = sizes
        .iter()
        .filter(|(h, s)| s.is_none() || deleting.contains(h))
        .map(|(h, _)| h.clone())
        .collect();
    missing.dedup();
    if !missing.is_empty() {
        let mut e = ApiError::new(
            StatusCode::CONFLICT,
            codes::MISSING_FILES,
            format!(
                "{} files are not uploaded yet; PUT them to /v1/files/<sha256> and retry",
                missing.len()
            ),
        );
        e.missing = Some(missing);
        return Err(e);
    }
    check_total(app, map.values().map(|h| sizes[h].unwrap_or(0)))?;
    Ok(sizes
        .into_iter()
        .map(|(h, size)| (h, size.unwrap_or(0)))
        .collect())
}

/// Refuses a deployment whose files add up to more than `max_deployment_mb` (a blob
/// counted once per path: that is what a build restores and a visitor can fetch).
pub(crate) fn check_total(app: &App, sizes: impl Iterator<Item = u64>) -> Result<(), ApiError> {
    let total: u64 = sizes.sum();
    let limit = app.config.max_deployment_bytes;
    if total > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            format!(
                "the deployment's files add up to {} MiB (a file counted once per path); at most {} MiB per deployment (server setting max_deployment_mb)",
                total.div_ceil(1 << 20),
                limit >> 20
            ),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/projects/{slug}/deployments", tag = "deployments", params(("slug" = String, Path, description = "The project's slug"), ("Idempotency-Key" = Option<String>, Header, description = "A retried request with the same key answers with the same deployment")), request_body = CreateDeployment, responses((status = 202, body = api::Deployment), crate::openapi::Errors), security(("bearer" = [])))]
async fn create_deployment(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateDeployment>,
) -> Result<(StatusCode, Json<api::Deployment>), ApiError> {
    check_slug(&slug)?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "Idempotency-Key must be 1 to 255 visible ASCII characters",
                    )
                })?;
            Some(k.to_string())
        }
    };
    // The same key with another request is a client bug: say so rather than answer
    // with a deployment of something else.
    let request_hash = cdeploy_core::sha256_hex(&serde_json::to_vec(&body).expect("serializes"));
    if let Some(key) = &idempotency_key {
        if let Some(existing) = app.store.find_by_idempotency_key(&slug, key).await? {
            check_same_request(&app, &existing, &request_hash).await?;
            return Ok((
                StatusCode::ACCEPTED,
                Json(app.deployment_response(&existing).await?),
            ));
        }
    }
    let keyed = idempotency_key.is_some();
    let d = start_deployment(&app, &slug, body, idempotency_key).await?;
    if keyed {
        match app.store.request_hash(&d.id).await? {
            None => app.store.set_request_hash(&d.id, &request_hash).await?,
            // Another request with the same key won the race.
            Some(_) => check_same_request(&app, &d, &request_hash).await?,
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(app.deployment_response(&d).await?),
    ))
}

pub(crate) fn being_deleted(slug: &str) -> ApiError {
    ApiError::conflict(format!(
        "project {slug:?} is being deleted; deploy again once it is gone"
    ))
}

async fn check_same_request(app: &App, d: &DeploymentRow, hash: &str) -> Result<(), ApiError> {
    match app.store.request_hash(&d.id).await? {
        Some(h) if h != hash => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::BAD_REQUEST,
            format!(
                "this Idempotency-Key was used for deployment {} with a different request; use a new key for a new request",
                d.id
            ),
        )),
        _ => Ok(()),
    }
}

/// Validates a deployment request, records it, and queues its work.
pub(crate) async fn start_deployment(
    app: &App,
    slug: &str,
    body: CreateDeployment,
    idempotency_key: Option<String>,
) -> Result<DeploymentRow, ApiError> {
    start_deployment_of(app, slug, body, idempotency_key, None).await
}

/// [`start_deployment`] of a commit a forge told of: its statuses go to `commit`
/// (`(forge, repo, sha)`), recorded before the first one is.
pub(crate) async fn start_deployment_of(
    app: &App,
    slug: &str,
    body: CreateDeployment,
    idempotency_key: Option<String>,
    commit: Option<(String, String, String)>,
) -> Result<DeploymentRow, ApiError> {
    let mut prebuilt_sizes = BTreeMap::new();
    let kind = match (&body.git, &body.source, &body.files) {
        (Some(g), None, None) => {
            check_git(&g.url, g.git_ref.as_deref())?;
            SourceKind::Git
        }
        (None, Some(map), None) => {
            check_file_map(app, map, false).await?;
            SourceKind::Upload
        }
        (None, None, Some(map)) => {
            prebuilt_sizes = check_file_map(app, map, true).await?;
            SourceKind::Prebuilt
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `git`, `source` or `files`",
            ))
        }
    };
    let build = body.build.clone().unwrap_or_default();
    build
        .validate()
        .map_err(|(key, msg)| ApiError::bad_request(format!("{key} {msg}")))?;
    let env = body.env.clone().unwrap_or_default();
    if let Some(bad) = env.keys().find(|k| !cdeploy_core::config::is_env_name(k)) {
        return Err(ApiError::bad_request(format!(
            "env: {bad:?} is not a valid variable name"
        )));
    }
    let site = body.site.unwrap_or_default();
    let branch = match body.branch.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(_) if !body.preview => {
            return Err(ApiError::bad_request(
                "branch: only previews have branch aliases (set preview)",
            ))
        }
        Some(b) if b.len() > 255 || ids::branch_label(b, slug).is_none() => {
            return Err(ApiError::bad_request(format!(
                "branch {b:?}: 1 to 255 characters, with at least one letter or digit"
            )))
        }
        Some(b) => Some(b.to_string()),
    };
    app.lifecycle.bus.check().await.map_err(|e| {
        let mut err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE, e);
        err.retry_after = Some(10);
        err
    })?;

    app.store
        .create_project(slug, body.git.as_ref().map(|g| g.url.as_str()))
        .await?;
    if app.project(slug).await?.deleting {
        return Err(being_deleted(slug));
    }
    // Read (and opened) before the deployment is recorded: a key problem is answered
    // now, and nothing is left behind.
    let secrets = match kind {
        SourceKind::Prebuilt => Default::default(),
        SourceKind::Git | SourceKind::Upload => {
            crate::secrets::for_build(app, slug, body.preview).await?
        }
    };
    let now = cdeploy_core::now_rfc3339();
    let row = DeploymentRow {
        id: ids::DeploymentId::generate().to_string(),
        slug: slug.to_string(),
        status: Status::Queued,
        source: kind,
        git: body.git.clone(),
        build: build.clone(),
        env: env.clone(),
        site,
        error: None,
        idempotency_key,
        task: None,
        created_at: now.clone(),
        updated_at: now,
        preview: body.preview,
        branch,
    };
    // The file list is stored before the deployment exists: a source for its build,
    // and for prebuilt output the list GC marks as referenced while it waits to be
    // activated.
    if let Some(map) = body.source.as_ref().or(body.files.as_ref()) {
        cdeploy_core::storage::put_json(app.storage.as_ref(), &layout::source_map(&row.id), map)
            .await?;
    }
    match app.store.insert_deployment(&row).await {
        Ok(()) => {}
        // Two requests with the same Idempotency-Key raced: answer with the winner.
        Err(crate::db::StoreError::Conflict) => {
            let key = row.idempotency_key.as_deref().unwrap_or_default();
            if let Some(existing) = app.store.find_by_idempotency_key(slug, key).await? {
                return Ok(existing);
            }
            return Err(ApiError::conflict(
                "a deployment with this Idempotency-Key is being created",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    if let Some((forge, repo, sha)) = commit {
        app.store
            .set_commit_target(&crate::db::CommitTarget {
                deployment: row.id.clone(),
                forge,
                repo,
                sha,
            })
            .await?;
    }
    app.lifecycle
        .metrics
        .deployments_created
        .fetch_add(1, Ordering::Relaxed);
    app.lifecycle
        .event(&row.id, slug, EventBody::status(Status::Queued))
        .await;

    let url = api::site_url(
        &app.config.domain,
        slug,
        row.preview.then_some(row.id.as_str()),
    );
    let kind = match kind {
        SourceKind::Prebuilt => {
            let files: OutputFiles = body
                .files
                .expect("checked above")
                .into_iter()
                .map(|(path, hash)| {
                    let size = prebuilt_sizes.get(&hash).copied().unwrap_or(0);
                    (path, (hash, size))
                })
                .collect();
            JobKind::Activate {
                files,
                site,
                url,
                promote: !row.preview,
            }
        }
        SourceKind::Git | SourceKind::Upload => {
            let mut spec = build_spec(app, &row);
            spec.secrets = secrets;
            JobKind::Build(Box::new(spec))
        }
    };
    if let Err(e) = app
        .dispatcher
        .submit(Job {
            id: row.id.clone(),
            slug: slug.to_string(),
            kind,
        })
        .await
    {
        app.lifecycle
            .event(&row.id, slug, EventBody::failed(e.to_string()))
            .await;
        if let DispatchError::Rejected(_) = e {
            // The deployment exists and has failed with the reason: answer with it, so
            // the client shows the reason and exits as for any failed build.
            return app
                .store
                .get_deployment(&row.id)
                .await?
                .ok_or_else(|| ApiError::internal("deployment vanished", &row.id));
        }
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            codes::QUEUE_FULL,
            e.to_string(),
        );
        if matches!(e, DispatchError::ShuttingDown) {
            err.status = StatusCode::SERVICE_UNAVAILABLE;
        }
        err.retry_after = Some(30);
        return Err(err);
    }
    app.store
        .get_deployment(&row.id)
        .await?
        .ok_or_else(|| ApiError::internal("deployment vanished", &row.id))
}

/// What a deployment's builder builds: the same for a local build and for an ECS
/// builder that claims it through the builder API.
pub(crate) fn build_spec(app: &App, row: &DeploymentRow) -> BuildSpec {
    let source = match &row.git {
        Some(g) => SourceSpec::Git {
            url: g.url.clone(),
            git_ref: g.git_ref.clone(),
        },
        None => SourceSpec::Upload {
            source_map_key: layout::source_map(&row.id),
        },
    };
    // A preview's build knows its own URLs (CDEPLOY_URL; CDEPLOY_ENV is `preview`).
    let mut env = row.env.clone();
    let url = if row.preview {
        if let Some(branch_url) = app.branch_url(row) {
            env.insert("CDEPLOY_BRANCH_URL".into(), branch_url);
        }
        api::site_url(&app.config.domain, &row.slug, Some(&row.id))
    } else {
        api::site_url(&app.config.domain, &row.slug, None)
    };
    BuildSpec {
        deployment_id: row.id.clone(),
        slug: row.slug.clone(),
        source,
        build: row.build.clone(),
        env,
        site: row.site,
        url,
        promote: !row.preview,
        timeout: app.config.build_timeout,
        // Added where the build is handed over (`secrets::for_build`), never stored.
        secrets: Default::default(),
    }
}

/// The seed's `POST /project {gitURL, slug?}`.
#[utoipa::path(post, path = "/project", tag = "projects", request_body = api::SeedProjectRequest, responses((status = 200, body = api::SeedProjectResponse), crate::openapi::Errors), security(("bearer" = [])))]
async fn seed_create_project(
    State(app): State<Arc<App>>,
    ApiJson(body): ApiJson<api::SeedProjectRequest>,
) -> Result<Json<api::SeedProjectResponse>, ApiError> {
    check_git(&body.git_url, None)?;
    let slug = match body.slug {
        Some(s) => {
            check_slug(&s)?;
            s
        }
        None => generate_slug(&app, &body.git_url).await?,
    };
    let req = CreateDeployment {
        git: Some(api::GitSource {
            url: body.git_url,
            git_ref: None,
        }),
        ..Default::default()
    };
    let d = start_deployment(&app, &slug, req, None).await?;
    Ok(Json(api::SeedProjectResponse {
        status: "queued".into(),
        data: api::SeedProjectData {
            url: api::site_url(&app.config.domain, &slug, None),
            project_slug: slug,
            deployment_id: Some(d.id),
        },
    }))
}

/// A free slug from the repository name, with a random suffix when taken.
async fn generate_slug(app: &App, url: &str) -> Result<String, ApiError> {
    let base = git::repo_name(url)
        .and_then(ids::sanitize_slug)
        .unwrap_or_else(|| "site".to_string());
    if app.store.get_project(&base).await?.is_none() {
        return Ok(base);
    }
    // Room for "-xxxxxx" within the slug length limit.
    let stem: String = base.chars().take(ids::SLUG_MAX_LEN - 7).collect();
    let stem = stem.trim_end_matches('-');
    for _ in 0..10 {
        let candidate = format!("{stem}-{}", ids::random_id(6));
        if app.store.get_project(&candidate).await?.is_none() {
            return Ok(candidate);
        }
    }
    Err(ApiError::conflict("could not find a free slug; pass one"))
}
