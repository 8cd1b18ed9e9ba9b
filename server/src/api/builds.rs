//! The builder API (`/v1/builds/{id}/…`): what an ECS builder, which holds no storage or
//! Redis credential, does through the control plane.
//!
//! * `POST claim` — the one-time claim from the task's overrides buys the build spec and
//!   a capability (bearer token) for this one deployment. A claim works once; a second
//!   attempt fails the deployment loudly (someone else read the overrides and used it).
//! * With the capability, valid only while the deployment runs: `GET source` (its own
//!   uploaded source map), `GET files/{hash}` (only blobs of that map), `POST
//!   files/missing`, `PUT files/{hash}` (verified against the hash), `POST events` (its
//!   log; `ready` only once activated, with the server's URL), `POST restore`, `POST
//!   activate` (the server checks every blob, writes the manifest and its variants, and
//!   moves the route), `GET state`, `GET`/`PUT cache/{entry}` (its own project's
//!   dependency cache, `cache/<slug>/` in storage).
//!
//! A builder can therefore write nothing but verified blobs and its own deployment's log
//! and manifest, and read nothing but its own build's inputs.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use cdeploy_core::api::{self, codes};
use cdeploy_core::event::{EventBody, Status};
use cdeploy_core::{ids, layout};
use cdeploy_storage::get_json;
use cdeploy_storage::publish::OutputFiles;

use super::error::{ApiError, ApiJson};
use super::files::{missing_files, store_blob};
use crate::db::DeploymentRow;
use crate::dispatch::ClaimRefused;
use crate::lifecycle::ActivationError;
use crate::service::blobs::{check_file_map, spool};
use crate::service::deployments::{build_secrets, build_spec};
use crate::service::validate::check_hash;
use crate::service::App;
use cdeploy_logbus::{BusError, SharedLog};

pub fn router(app: Arc<App>, max_file: usize) -> Router<Arc<App>> {
    let capability = Router::new()
        .route("/v1/builds/{id}/source", get(source))
        .route("/v1/builds/{id}/files/missing", post(missing_files))
        .route(
            "/v1/builds/{id}/files/{hash}",
            get(read_blob)
                .put(upload)
                .layer(DefaultBodyLimit::max(max_file)),
        )
        .route(
            "/v1/builds/{id}/cache/{entry}",
            get(read_cache).put(save_cache).layer(DefaultBodyLimit::max(
                cdeploy_builder::cache::stored::MAX_ENTRY as usize,
            )),
        )
        .route("/v1/builds/{id}/events", post(events))
        .route("/v1/builds/{id}/restore", post(restore))
        .route("/v1/builds/{id}/activate", post(activate))
        .route("/v1/builds/{id}/reuse", post(reuse))
        .route("/v1/builds/{id}/state", get(state))
        .layer(middleware::from_fn_with_state(app, capability_auth));
    Router::new()
        .route("/v1/builds/{id}/claim", post(claim))
        .merge(capability)
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED, msg)
}

/// The deployment of a path, as its capability names it.
async fn running(app: &App, id: &str) -> Result<DeploymentRow, ApiError> {
    let id = ids::DeploymentId::parse(id)
        .ok_or_else(|| ApiError::not_found(format!("deployment {id:?}")))?;
    app.store
        .get_deployment(id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("deployment {id}")))
}

/// Only the capability of the deployment in the path, while it runs.
async fn capability_auth(
    State(app): State<Arc<App>>,
    Path(params): Path<BTreeMap<String, String>>,
    req: Request,
    next: Next,
) -> Response {
    let token = super::access::bearer(req.headers()).unwrap_or("");
    let id = params.get("id").map(String::as_str).unwrap_or("");
    if token.is_empty() || ids::DeploymentId::parse(id).is_none() {
        return unauthorized("this route needs the build's capability").into_response();
    }
    match app
        .store
        .build_token_valid(id, &ids::token_hash(token))
        .await
    {
        Ok(true) => next.run(req).await,
        Ok(false) => unauthorized(
            "invalid capability, or the deployment has ended (a capability expires with it)",
        )
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn claim(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<api::BuildClaim>,
) -> Result<Json<api::BuildGrant<cdeploy_builder::BuildSpec>>, ApiError> {
    let d = running(&app, &id).await?;
    let claim_hash = ids::token_hash(&body.claim);
    // Deployment ids are public: a wrong claim costs a query, never a call to ECS.
    if !app.store.claim_matches(&d.id, &claim_hash).await? {
        return Err(unauthorized("invalid or spent build claim"));
    }
    // Before the claim is spent: whoever read it in the task's overrides but is not the
    // task gets nothing, and the builder still can claim.
    let from = peer
        .map(|Extension(ConnectInfo(a))| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if !d.status.is_terminal() {
        match app.dispatcher.vouch_claim(&d, &headers, from).await {
            Ok(()) => {}
            Err(ClaimRefused::NotYet(why)) => {
                tracing::info!(deployment = %d.id, %why, "a build claim can't be checked yet");
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    codes::UNAVAILABLE,
                    "the claim can't be checked against the build's task yet; retry",
                ));
            }
            Err(ClaimRefused::Elsewhere(why)) => {
                tracing::warn!(deployment = %d.id, %why, "a build claim was presented from outside the build task; refused (if the builder itself reaches the API through a load balancer or a NAT, see ECS_CLAIM_PROXIES and ECS_CLAIM_FROM in docs/aws.md)");
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    codes::FORBIDDEN,
                    format!("{why}: a build is claimed by its own task"),
                ));
            }
        }
    }
    let token = ids::generate_token();
    if !app
        .store
        .claim_build(&d.id, &claim_hash, &ids::token_hash(&token))
        .await?
    {
        // The real claim, spent already: someone else read the task's overrides and
        // raced or followed the builder. The build can no longer be trusted: stop it
        // loudly. (Any other claim is simply refused: deployment ids are public, and a
        // guess must not be able to stop a build.)
        if !d.status.is_terminal() && app.store.claim_spent(&d.id, &claim_hash).await? {
            tracing::warn!(deployment = %d.id, "a build's claim was presented twice; failing the deployment");
            app.lifecycle
                .event(
                    &d.id,
                    &d.slug,
                    EventBody::failed(
                        "the build's one-time claim was presented twice (someone else may have read the task's overrides); deploy again",
                    ),
                )
                .await;
        }
        return Err(unauthorized("invalid or spent build claim"));
    }
    let mut spec = build_spec(&app, &d);
    (spec.secrets, spec.reuse) = match build_secrets(&app, &d.slug, d.preview).await {
        Ok((secrets, reuse)) => (secrets, Some(reuse)),
        Err(e) => {
            // The build cannot run without them: it ends here, saying why.
            app.lifecycle
                .event(&d.id, &d.slug, EventBody::failed(e.message.clone()))
                .await;
            return Err(e.into());
        }
    };
    Ok(Json(api::BuildGrant { token, spec }))
}

/// The uploaded source map of this build (404 for a git build).
async fn source_map(app: &App, id: &str) -> Result<BTreeMap<String, String>, ApiError> {
    get_json(app.storage.as_ref(), &layout::source_map(id))
        .await?
        .ok_or_else(|| ApiError::not_found("this build has no uploaded source"))
}

/// The blobs of this build's source, read once per build (not once per blob: a
/// restore fetches every file, and the map can hold 100,000 of them).
async fn source_blobs(app: &App, id: &str) -> Result<Arc<HashSet<String>>, ApiError> {
    app.source_blobs
        .try_get_with(id.to_string(), async {
            let map = source_map(app, id).await?;
            Ok::<_, ApiError>(Arc::new(map.into_values().collect()))
        })
        .await
        .map_err(|e: Arc<ApiError>| Arc::unwrap_or_clone(e))
}

async fn source(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    Ok(Json(source_map(&app, &id).await?))
}

/// A blob of this build's own source, and no other.
async fn read_blob(
    State(app): State<Arc<App>>,
    Path((id, hash)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_hash(&hash)?;
    if !source_blobs(&app, &id).await?.contains(&hash) {
        return Err(ApiError::not_found(format!(
            "blob {hash} is not part of this build's source"
        )));
    }
    let stream = app
        .storage
        .get_stream(&layout::blob(&hash), None)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("blob {hash}")))?;
    Ok(Body::from_stream(stream).into_response())
}

/// The storage key of a build cache entry of the deployment's own project.
async fn cache_key(app: &App, id: &str, entry: &str) -> Result<String, ApiError> {
    if !layout::is_cache_entry(entry) {
        return Err(ApiError::not_found(format!("cache entry {entry:?}")));
    }
    let d = running(app, id).await?;
    // Within the build's own trust scope: a preview's capability can neither read nor
    // write production's entries (the scope comes from the deployment, not the builder).
    let scope = layout::cache_scope(d.preview, d.branch.as_deref());
    Ok(layout::build_cache_scoped(&d.slug, &scope, entry))
}

async fn read_cache(
    State(app): State<Arc<App>>,
    Path((id, entry)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let key = cache_key(&app, &id, &entry).await?;
    match app.storage.get_stream(&key, None).await? {
        Some(stream) => Ok(Body::from_stream(stream).into_response()),
        None => Err(ApiError::not_found(format!("cache entry {entry}"))),
    }
}

async fn save_cache(
    State(app): State<Arc<App>>,
    Path((id, entry)): Path<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let key = cache_key(&app, &id, &entry).await?;
    // Spooled to a file, not held in memory: an entry may be up to 1 GiB, and several
    // builds may save at once.
    let limit = cdeploy_builder::cache::stored::MAX_ENTRY;
    let tmp = spool(&app, body.into_data_stream(), limit, "a build cache entry").await?;
    app.storage.put_file(&key, &tmp.file).await?;
    // One entry per project and scope: the older ones are for lockfiles it no longer
    // has. (Entries from before scopes, directly under `cache/<slug>/`, go too.)
    let scope_prefix = key
        .rsplit_once('/')
        .map_or(key.as_str(), |(p, _)| p)
        .to_string()
        + "/";
    let project_prefix = layout::build_cache_prefix(&key_slug(&key));
    if let Ok(keys) = app.storage.list(&project_prefix).await {
        let mut branches = Vec::new();
        for old in keys.into_iter().filter(|l| l.key != key) {
            let unscoped = !old.key[project_prefix.len()..].contains('/');
            if unscoped || old.key.starts_with(&scope_prefix) {
                let _ = app.storage.delete(&old.key).await;
            } else if old.key[project_prefix.len()..].starts_with("branch-") {
                branches.push((old.modified, old.key));
            }
        }
        // At most MAX_BRANCH_ENTRIES branch scopes (this one included): the oldest go.
        let keep = cdeploy_builder::cache::MAX_BRANCH_ENTRIES.saturating_sub(1);
        if scope_prefix.contains("/branch-") && branches.len() > keep {
            branches.sort();
            for (_, old) in &branches[..branches.len() - keep] {
                let _ = app.storage.delete(old).await;
            }
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

fn key_slug(key: &str) -> String {
    key.split('/').nth(1).unwrap_or_default().to_string()
}

async fn upload(
    State(app): State<Arc<App>>,
    Path((_id, hash)): Path<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    store_blob(&app, &hash, body).await
}

/// The shared log bus builders elsewhere write to (a server on the embedded bus has none).
fn shared(app: &App) -> Result<&dyn SharedLog, ApiError> {
    app.lifecycle
        .bus
        .shared()
        .ok_or_else(|| bus_error(BusError::Unsupported))
}

fn bus_error(e: BusError) -> ApiError {
    match e {
        BusError::Lost => ApiError::new(StatusCode::CONFLICT, codes::LOG_LOST, e.to_string()),
        BusError::Unavailable(_) => {
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::UNAVAILABLE,
                e.to_string(),
            );
            err.retry_after = Some(2);
            err
        }
        BusError::Unsupported => ApiError::conflict(e.to_string()),
    }
}

/// What a builder may put in its log: anything but `queued`; `ready` only once this
/// server activated the deployment, and with this server's URL (a builder cannot
/// announce a site it did not publish).
async fn checked_event(
    app: &App,
    d: &DeploymentRow,
    body: EventBody,
) -> Result<EventBody, ApiError> {
    match body {
        EventBody::Status {
            status: Status::Queued,
            ..
        } => Err(ApiError::bad_request(
            "a builder does not queue deployments",
        )),
        EventBody::Status {
            status: Status::Ready,
            ..
        } => {
            if !app.storage.exists(&layout::manifest(&d.id)).await? {
                return Err(ApiError::conflict(
                    "`ready` before the deployment was activated",
                ));
            }
            // A preview is live at its own URL, not the project's.
            let id = d.preview.then_some(d.id.as_str());
            Ok(EventBody::Status {
                status: Status::Ready,
                url: Some(api::site_url(&app.config.domain, &d.slug, id)),
                error: None,
            })
        }
        body => Ok(body),
    }
}

async fn events(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    ApiJson(batch): ApiJson<api::EventBatch>,
) -> Result<Json<api::EventsStored>, ApiError> {
    let d = running(&app, &id).await?;
    if batch.producer.is_empty() || batch.producer.len() > 64 {
        return Err(ApiError::bad_request("producer: 1 to 64 characters"));
    }
    let mut stored = Vec::new();
    for e in batch.events {
        let body = checked_event(&app, &d, e.body).await?;
        // As for local builds: production is recorded before anyone sees `ready` (the
        // route was moved at activation).
        if let EventBody::Status {
            status: Status::Ready,
            ..
        } = body
        {
            app.lifecycle.activated(&d.slug, &d.id).await;
        }
        let published = shared(&app)?
            .publish_from(&d.id, &batch.producer, e.n, batch.floor, &e.ts, body)
            .await
            .map_err(bus_error)?;
        if let Some(event) = published.event() {
            // The stored status follows the log (every replica's watcher does the same).
            app.lifecycle.apply(&d.id, &d.slug, &event.body).await;
            let terminal = event.is_terminal();
            stored.push(event);
            if terminal {
                break;
            }
        }
    }
    Ok(Json(api::EventsStored { events: stored }))
}

async fn restore(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<api::EventRestore>,
) -> Result<StatusCode, ApiError> {
    let d = running(&app, &id).await?;
    // What the builder saw stored, in order, under the same rules as new events.
    if body.events.windows(2).any(|w| w[0].seq >= w[1].seq) {
        return Err(ApiError::bad_request("events must be in order of seq"));
    }
    let mut events = Vec::with_capacity(body.events.len());
    for mut e in body.events {
        e.body = checked_event(&app, &d, e.body).await?;
        events.push(e);
    }
    shared(&app)?
        .restore(&d.id, &events)
        .await
        .map_err(bus_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn activate(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<api::ActivateRequest>,
) -> Result<Json<cdeploy_core::manifest::Site>, ApiError> {
    let d = running(&app, &id).await?;
    // The same checks as an upload's file list; sizes as storage has them, not as the
    // builder says.
    let hashes: BTreeMap<String, String> = body
        .files
        .into_iter()
        .map(|(path, (hash, _))| (path, hash))
        .collect();
    let sizes = check_file_map(&app, &hashes, true).await?;
    let files: OutputFiles = hashes
        .into_iter()
        .map(|(path, hash)| {
            let size = sizes.get(&hash).copied().unwrap_or(0);
            (path, (hash, size))
        })
        .collect();
    // A server's bundle: every blob stored, sizes as storage has them.
    let mut server = body.server;
    if let Some(server) = &mut server {
        let hashes: BTreeMap<String, String> = server
            .bundle
            .files
            .iter()
            .map(|(path, f)| (path.clone(), f.hash.clone()))
            .collect();
        let sizes = check_file_map(&app, &hashes, false).await?;
        for f in server.bundle.files.values_mut() {
            f.size = sizes.get(&f.hash).copied().unwrap_or(0);
        }
    }
    let spec = build_spec(&app, &d);
    let site = live_publisher(&app)
        .publish(&spec, &files, &body.site, &body.rules, server.as_ref())
        .await
        .map_err(activation_error)?;
    Ok(Json(site))
}

fn live_publisher(app: &App) -> crate::lifecycle::LivePublisher {
    crate::lifecycle::LivePublisher {
        lifecycle: app.lifecycle.clone(),
        storage: app.storage.clone(),
        max_files: app.config.max_files,
        max_bytes: app.config.max_deployment_bytes,
    }
}

fn activation_error(e: ActivationError) -> ApiError {
    match e {
        ActivationError::Gone => {
            ApiError::new(StatusCode::GONE, api::codes::NOT_FOUND, e.to_string())
        }
        ActivationError::Failed(m) => ApiError::internal("activation failed", m),
    }
}

fn reuse_conflict() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        codes::CONFLICT,
        "this build's inputs are recorded already, or it went live",
    )
}

/// The answer to a repeated `reuse` of the same inputs: what the first one decided.
async fn repeated(
    app: &App,
    d: &DeploymentRow,
    recorded: &api::BuildInputs,
    inputs: &api::BuildInputs,
) -> Result<api::Reused, ApiError> {
    if recorded.digest != inputs.digest {
        return Err(reuse_conflict());
    }
    let Some(from) = &d.reused_from else {
        return Ok(api::Reused::default());
    };
    let manifest: Option<cdeploy_core::manifest::Manifest> =
        get_json(app.storage.as_ref(), &layout::manifest(&d.id)).await?;
    Ok(api::Reused {
        from: Some(from.clone()),
        site: manifest.map(|m| m.site),
    })
}

/// Most parts one build's inputs may name.
const MAX_INPUT_PARTS: usize = 10_000;

/// `POST /v1/builds/{id}/reuse`: the build's inputs are recorded; when they allow it and
/// a ready deployment of the project's target was built from the same, this one goes
/// live with that one's output (the spec, with its target, is the server's own).
async fn reuse(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    ApiJson(mut inputs): ApiJson<api::BuildInputs>,
) -> Result<Json<api::Reused>, ApiError> {
    let d = running(&app, &id).await?;
    let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let long = inputs
        .parts
        .iter()
        .any(|(k, v)| k.len() > 4096 || v.len() > 256);
    if !hex(&inputs.digest) || inputs.parts.len() > MAX_INPUT_PARTS || long {
        return Err(ApiError::bad_request(
            "inputs: a digest is 64 hex digits, with at most 10000 parts",
        ));
    }
    inputs.commit = inputs.commit.filter(|c| cdeploy_core::git::is_commit_id(c));
    // Once per build, before it goes live: a builder must not record other inputs for
    // an output it made (later builds would take it for those). The same request again
    // (a retry whose answer was lost) gets the same answer.
    if let Some(recorded) = app.store.inputs(&d.id).await? {
        return repeated(&app, &d, &recorded, &inputs).await.map(Json);
    }
    if app.storage.exists(&layout::manifest(&d.id)).await? {
        return Err(reuse_conflict());
    }
    let spec = build_spec(&app, &d);
    let reused = live_publisher(&app)
        .reuse_output(&spec, &inputs)
        .await
        .map_err(activation_error)?;
    Ok(Json(match reused {
        Some(r) => api::Reused {
            from: Some(r.from),
            site: Some(r.site),
        },
        None => api::Reused::default(),
    }))
}

async fn state(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<api::BuildState>, ApiError> {
    let d = running(&app, &id).await?;
    let state = shared(&app)?.state(&d.id).await.map_err(bus_error)?;
    Ok(Json(api::BuildState {
        cancel_requested: state.cancel_requested,
        closed: state.closed,
    }))
}
