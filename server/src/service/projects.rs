//! Projects: finding one, its JSON view, creating, relinking, promoting and deleting,
//! with what deleting takes down (builds, the site, previews, stored artifacts).

use cdeploy_core::api;
use cdeploy_core::event::{EventBody, Status};
use cdeploy_core::{git, layout};

use super::error::{Error, Result};
use super::validate::{being_deleted, check_git, check_slug};
use super::App;
use crate::db::{DeploymentRow, ProjectRow};

impl App {
    /// The project `slug`, or `404`.
    pub async fn project(&self, slug: &str) -> Result<ProjectRow> {
        check_slug(slug)?;
        self.store
            .get_project(slug)
            .await?
            .ok_or_else(|| Error::not_found(format!("project {slug:?}")))
    }

    pub fn project_json(&self, p: &ProjectRow) -> api::Project {
        api::Project {
            slug: p.slug.clone(),
            created_at: p.created_at.clone(),
            git: p.git.as_deref().map(git::redact_url),
            production: p.production.clone(),
            url: api::site_url(&self.config.domain, &p.slug, None),
        }
    }
}

/// Creates a project (`409` when it exists).
pub async fn create(app: &App, slug: &str, git: Option<&str>) -> Result<ProjectRow> {
    check_slug(slug)?;
    if let Some(url) = git {
        check_git(url, None)?;
    }
    if !app.store.create_project(slug, git).await? {
        return Err(Error::conflict(format!("project {slug:?} already exists")));
    }
    app.project(slug).await
}

/// Sets (or, with an empty URL, clears) the project's repository.
pub async fn set_git(app: &App, slug: &str, git: Option<&str>) -> Result<ProjectRow> {
    app.project(slug).await?;
    if let Some(url) = git {
        if url.is_empty() {
            app.store.set_project_git(slug, None).await?;
        } else {
            check_git(url, None)?;
            app.store.set_project_git(slug, Some(url)).await?;
        }
    }
    app.project(slug).await
}

/// Moves production to a ready deployment of the project (a promote or a rollback).
pub async fn promote(app: &App, slug: &str, deployment: &str) -> Result<ProjectRow> {
    let project = app.project(slug).await?;
    if project.deleting {
        return Err(being_deleted(slug));
    }
    let d = app.deployment(deployment).await?;
    if d.slug != slug {
        return Err(Error::not_found(format!(
            "deployment {} in project {slug:?}",
            d.id
        )));
    }
    if d.status != Status::Ready {
        return Err(Error::conflict(format!(
            "deployment {} is {}, only ready deployments can be promoted",
            d.id, d.status
        )));
    }
    let before = match &project.production {
        Some(id) => app.store.get_deployment(id).await?,
        None => None,
    };
    // The event (promoted or rolled back) is written with the change.
    let event = super::notify::production_event(before.as_ref(), &d);
    let key = event.map(|e| super::notify::production_event_key(&d.id, e));
    let event = event.zip(key.as_deref()).map(|(e, k)| (e.as_str(), k));
    app.store.promote(slug, &d.id, event).await?;
    app.lifecycle.notify();
    cdeploy_storage::publish::set_route(app.storage.as_ref(), slug, &d.id).await?;
    app.lifecycle.activated(slug, &d.id).await;
    app.project(slug).await
}

/// Deletes a project: from the first moment it refuses new deployments and any late
/// build's activation; its builds are stopped, its site and previews go offline, and its
/// deployments' manifests, sources and logs are deleted (blobs go at the next GC).
/// Answers how many deployments it had.
pub async fn delete(app: &App, slug: &str) -> Result<usize> {
    app.project(slug).await?;
    app.store.mark_deleting(slug).await?;
    let deployments = app.store.list_deployments(slug, u32::MAX).await?;
    stop_builds(app, &deployments).await?;
    take_offline(app, slug).await?;
    // Its domains go too (routes, certificates, attempts): a project created later
    // under the same name does not inherit them.
    for d in app.store.list_domains(Some(slug)).await? {
        super::domains::remove(app, &d.name).await?;
    }
    for d in &deployments {
        delete_artifacts(app, &d.id).await?;
    }
    // Its dependency cache kept in storage (ECS builds): a project created later under
    // the same name starts clean.
    for entry in app.storage.list(&layout::build_cache_prefix(slug)).await? {
        app.storage.delete(&entry.key).await?;
    }
    // Its variables for the proxies' servers.
    for target in cdeploy_core::api::EnvTarget::ALL {
        app.storage
            .delete(&layout::runtime_env(slug, target.as_str()))
            .await?;
    }
    app.store.delete_project(slug).await?;
    app.dispatcher.forget_project(slug).await;
    Ok(deployments.len())
}

/// The site goes offline first, then every preview alias, then its protection.
async fn take_offline(app: &App, slug: &str) -> Result<()> {
    app.storage.delete(&layout::route(slug)).await?;
    if let Some(proxy) = &app.lifecycle.proxy {
        proxy.invalidate_route(slug).await;
    }
    for entry in app.storage.list(&layout::alias_prefix(slug)).await? {
        app.storage.delete(&entry.key).await?;
    }
    app.storage.delete(&layout::protection(slug)).await?;
    if let Some(proxy) = &app.lifecycle.proxy {
        proxy.invalidate_protection(slug).await;
    }
    Ok(())
}

/// Cancels the deployments that still run and waits (up to 30 s) until each has ended:
/// a build past its last cancel check may still be activating.
pub async fn stop_builds(app: &App, deployments: &[DeploymentRow]) -> Result<()> {
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
                return Err(Error::conflict(
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
pub async fn delete_artifacts(app: &App, id: &str) -> Result<()> {
    // The manifest first: without it the deployment is no longer servable.
    for key in [
        layout::manifest(id),
        layout::source_map(id),
        layout::log(id),
        layout::server_bundle(id),
    ] {
        app.storage.delete(&key).await?;
    }
    if let Some(proxy) = &app.lifecycle.proxy {
        proxy.invalidate_deployment(id).await;
    }
    // A server app's server and its files on this host (replicas find out by a sweep).
    if let Some(runtimes) = &app.runtimes {
        runtimes.forget(id).await;
    }
    Ok(())
}
