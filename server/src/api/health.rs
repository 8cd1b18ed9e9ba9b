//! Health and metrics: `GET /healthz` (the process is up), `GET /readyz` (its
//! database, log bus and storage answer), `GET /metrics` (Prometheus, with a token).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::service::App;

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process is up", content_type = "text/plain", body = String)))]
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: whether this replica can serve: the database, the log bus and
/// storage all answer. `503` naming what failed otherwise. It needs no token, so the
/// errors themselves (hosts, bucket names) go to the log, not to the caller.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "Ready: the database and log bus answer", content_type = "text/plain", body = String), super::openapi::Errors))]
pub(super) async fn readyz(State(app): State<Arc<App>>) -> Response {
    let store = app
        .store
        .token_count()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let bus = app.lifecycle.bus.check().await.map_err(|e| e.to_string());
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

#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus metrics", content_type = "text/plain", body = String), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
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
