//! The HTTP layer: every handler of the control-plane API, the builder API and the
//! event stream, with authentication, authorization and the error format. Handlers
//! parse and answer; what they do is in [`crate::service`].
//!
//! # Layout
//! * [`error`] — `ApiError` (`{"error":{"code","message"}}`), the JSON and query
//!   extractors, the one mapping from a service error to a status.
//! * [`auth`] — bearer tokens, per-token and per-address rate limits, oversized bodies.
//! * [`access`] — what a token's role and projects allow on each route; the audit log.
//! * [`openapi`] — the OpenAPI document's shared parts.
//! * [`health`] — `/healthz`, `/readyz`, `/metrics`.
//! * [`projects`], [`deployments`], [`files`], [`seed`] — projects, deployments,
//!   uploads and the seed's `POST /project`.
//! * [`tokens`] — tokens, `whoami` and the audit log.
//! * [`env`] — a project's environment variables and secrets.
//! * [`git`] — a project's repository link and its deliveries.
//! * [`forge`] — the forges' webhook protocols: event and delivery headers, signatures.
//! * [`webhooks`] — `POST /v1/webhooks/{forge}/{slug}`.
//! * [`deploy_hooks`] — deploy hooks and `POST /v1/hooks/{token}`.
//! * [`notify`] — a project's notification endpoints and their deliveries.
//! * [`oidc`] — trusts in CI issuers and `POST /v1/oidc/exchange`.
//! * [`protection`] — preview protection of a project.
//! * [`domains`] — custom domains of a project, and a domain's report.
//! * [`builds`] — the builder API ECS builders use, authenticated by build capabilities.
//! * [`ws`] — the WebSocket event stream with replay and `after=` resume.
//! * [`sessions`] — dashboard sessions: signing in, out, sign-in links.
//! * [`ui`] — the dashboard's embedded files, with their Content-Security-Policy.

pub mod access;
pub mod auth;
pub mod builds;
pub mod deploy_hooks;
pub mod deployments;
pub mod domains;
pub mod env;
pub mod error;
pub mod files;
pub mod forge;
pub mod git;
pub mod health;
pub mod notify;
pub mod oidc;
pub mod openapi;
pub mod projects;
pub mod protection;
pub mod seed;
pub mod sessions;
pub mod tokens;
pub mod ui;
pub mod webhooks;
pub mod ws;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use self::auth::MAX_JSON_BYTES;
use self::error::ApiError;
use crate::service::App;

/// Custom domains' routes (authenticated with the rest).
fn domain_routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(domains::list, domains::add))
        .routes(routes!(domains::inspect, domains::remove))
}

/// A project's settings: stored secrets, its repository link and deploy hooks,
/// notification endpoints, preview protection (authenticated with the rest).
fn project_setting_routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(env::list))
        .routes(routes!(env::values))
        .routes(routes!(env::put, env::remove))
        .routes(routes!(git::show, git::link, git::unlink))
        .routes(routes!(git::deliveries))
        .routes(routes!(deploy_hooks::list_hooks, deploy_hooks::create_hook))
        .routes(routes!(deploy_hooks::delete_hook))
        .routes(routes!(
            notify::list_notifications,
            notify::add_notification
        ))
        .routes(routes!(notify::remove_notification))
        .routes(routes!(notify::notification_deliveries))
        .routes(routes!(oidc::list_trusts, oidc::add_trust))
        .routes(routes!(oidc::remove_trust))
        .routes(routes!(
            protection::show,
            protection::set,
            protection::remove
        ))
}

/// Dashboard sessions, and what its pages read and do beyond the CLI's routes: every
/// build under way, a redeploy, a deployment's files (authenticated with the rest).
fn dashboard_routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(sessions::get_session, sessions::end_session))
        .routes(routes!(sessions::list_sessions))
        .routes(routes!(sessions::create_session_link))
        .routes(routes!(sessions::remove_session))
        .routes(routes!(deployments::active_deployments))
        .routes(routes!(deployments::redeploy))
        .routes(routes!(deployments::deployment_files))
}

/// A known route asked with a method it does not take: `405` in the API's error body.
async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        cdeploy_core::api::codes::BAD_REQUEST,
        format!("{method} is not a method of this route"),
    )
}

pub fn router(app: Arc<App>) -> Router {
    let max_file = app.config.max_file_bytes;
    // Each route is registered through its handler's `#[utoipa::path]`: the OpenAPI
    // document and the router come from the same place.
    let authed = OpenApiRouter::new()
        .routes(routes!(seed::seed_create_project))
        .routes(routes!(health::metrics))
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
        .routes(routes!(deployments::route))
        .routes(routes!(deployments::diff))
        .routes(routes!(deployments::deployment_inputs))
        .routes(routes!(deployments::runtime_log))
        .merge(domain_routes())
        // A WebSocket: OpenAPI cannot describe it (docs/api.md does).
        .route("/v1/deployments/{id}/events", get(ws::events))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .merge(project_setting_routes())
        .routes(routes!(tokens::whoami))
        .merge(dashboard_routes())
        .routes(routes!(tokens::audit))
        .layer(middleware::from_fn_with_state(app.clone(), auth::auth));
    let (documented, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .merge(authed)
        // Authenticated by the project's webhook secret, or by the hook's secret URL.
        .routes(
            routes!(webhooks::receive).layer(DefaultBodyLimit::max(webhooks::MAX_PAYLOAD_BYTES)),
        )
        .routes(routes!(deploy_hooks::call_hook))
        // Authenticated by the CI's identity token.
        .routes(routes!(oidc::exchange))
        // Signing in to the dashboard, with a token or a link's code in the body.
        .routes(routes!(sessions::create_session))
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
        .merge(builds::router(app.clone(), max_file))
        .merge(ui::router())
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            app.clone(),
            auth::reject_oversized,
        ))
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(app)
}

#[cfg(test)]
mod tests;
