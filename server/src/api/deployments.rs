//! Deployments: `GET|POST /v1/projects/{slug}/deployments`, `GET|DELETE
//! /v1/deployments/{id}`, `POST /v1/deployments/{id}/cancel`; how a deployment is
//! validated, recorded and queued, and what its builder is given.

use super::projects::stop_builds;
use super::*;

/// `DELETE /v1/deployments/{id}`: one deployment (not the one in production: promote
/// another, or delete the project). A running one is canceled first.
#[utoipa::path(delete, path = "/v1/deployments/{id}", tag = "deployments", params(("id" = String, Path, description = "A deployment id", pattern = r"^[0-9a-z]{16}$")), responses((status = 204, description = "Deleted"), crate::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn delete_deployment(
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
pub(super) struct ListQuery {
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/projects/{slug}/deployments", tag = "deployments", params(crate::openapi::SlugPath, ("limit" = Option<u32>, Query, description = "How many, newest first (1-100, default 20)")), responses((status = 200, body = Vec<api::Deployment>), crate::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn list_deployments(
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

#[utoipa::path(get, path = "/v1/deployments/{id}", tag = "deployments", params(("id" = String, Path, description = "A deployment id", pattern = r"^[0-9a-z]{16}$")), responses((status = 200, body = api::Deployment), crate::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn get_deployment(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<api::Deployment>, ApiError> {
    let d = app.deployment(&id).await?;
    Ok(Json(app.deployment_response(&d).await?))
}

#[utoipa::path(post, path = "/v1/deployments/{id}/cancel", tag = "deployments", params(("id" = String, Path, description = "A deployment id", pattern = r"^[0-9a-z]{16}$")), responses((status = 200, body = api::Deployment), crate::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn cancel_deployment(
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

#[utoipa::path(post, path = "/v1/projects/{slug}/deployments", tag = "deployments", params(crate::openapi::SlugPath, ("Idempotency-Key" = Option<String>, Header, description = "A retried request with the same key answers with the same deployment")), request_body = CreateDeployment, responses((status = 202, body = api::Deployment), crate::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn create_deployment(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateDeployment>,
) -> Result<
    (
        StatusCode,
        axum::Extension<crate::access::AuditDetail>,
        Json<api::Deployment>,
    ),
    ApiError,
> {
    check_slug(&slug)?;
    let described = |d: &DeploymentRow| {
        let kind = match (&d.branch, d.preview) {
            (Some(b), true) => format!("a preview of branch {b}"),
            (None, true) => "a preview".to_string(),
            (_, false) => "production".to_string(),
        };
        axum::Extension(crate::access::AuditDetail(format!(
            "deployment {} of {} ({kind}, {:?} source)",
            d.id, d.slug, d.source
        )))
    };
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
                described(&existing),
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
        described(&d),
        Json(app.deployment_response(&d).await?),
    ))
}

pub(super) async fn check_same_request(
    app: &App,
    d: &DeploymentRow,
    hash: &str,
) -> Result<(), ApiError> {
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
    app.lifecycle.metrics.deployments_created.inc();
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
        cache_scope: layout::cache_scope(row.preview, row.branch.as_deref()),
    }
}
