//! Projects: `GET|POST /v1/projects`, `GET|PATCH|DELETE /v1/projects/{slug}`,
//! `POST /v1/projects/{slug}/promote`.

use super::*;

#[utoipa::path(get, path = "/v1/projects", tag = "projects", responses((status = 200, body = Vec<api::Project>), crate::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn list_projects(
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
pub(super) async fn create_project(
    State(app): State<Arc<App>>,
    axum::Extension(me): axum::Extension<crate::access::Principal>,
    ApiJson(body): ApiJson<CreateProject>,
) -> Result<
    (
        StatusCode,
        axum::Extension<crate::access::AuditDetail>,
        Json<api::Project>,
    ),
    ApiError,
> {
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
    let detail = crate::access::AuditDetail(format!("project {} created", body.slug));
    Ok((
        StatusCode::CREATED,
        axum::Extension(detail),
        Json(app.project_json(&p)),
    ))
}

#[utoipa::path(get, path = "/v1/projects/{slug}", tag = "projects", params(crate::openapi::SlugPath), responses((status = 200, body = api::Project), crate::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn get_project(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<Json<api::Project>, ApiError> {
    let p = app.project(&slug).await?;
    Ok(Json(app.project_json(&p)))
}

#[utoipa::path(patch, path = "/v1/projects/{slug}", tag = "projects", params(crate::openapi::SlugPath), request_body = api::UpdateProject, responses((status = 200, body = api::Project), crate::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn update_project(
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
#[utoipa::path(delete, path = "/v1/projects/{slug}", tag = "projects", params(crate::openapi::SlugPath), responses((status = 204, description = "Deleted"), crate::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn delete_project(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<(StatusCode, axum::Extension<crate::access::AuditDetail>), ApiError> {
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
    let detail = crate::access::AuditDetail(format!(
        "project {slug} deleted, with its {} deployments",
        deployments.len()
    ));
    Ok((StatusCode::NO_CONTENT, axum::Extension(detail)))
}

/// Cancels the deployments that still run and waits (up to 30 s) until each has ended:
/// a build past its last cancel check may still be activating.
pub(crate) async fn stop_builds(app: &App, deployments: &[DeploymentRow]) -> Result<(), ApiError> {
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

#[utoipa::path(post, path = "/v1/projects/{slug}/promote", tag = "deployments", params(crate::openapi::SlugPath), request_body = api::PromoteRequest, responses((status = 200, body = api::Project), crate::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn promote(
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
