//! Deploy hooks: `POST|GET /v1/projects/{slug}/deploy-hooks`, `DELETE
//! …/deploy-hooks/{id}` (admin), and `POST /v1/hooks/{token}`, which deploys the hook's
//! branch at its newest commit (the URL is the secret).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use cdeploy_core::api::{CreateDeployHook, Delivery, DeployHook};
use cdeploy_core::ids;

use super::error::{ApiError, ApiJson};
use crate::db::DeployHookRow;
use crate::service::git::decide::Action;
use crate::service::git::deliver::{self, Incoming};
use crate::service::git::{self, MAX_HOOKS};
use crate::service::validate::check_branch;
use crate::service::App;

fn hook_json(h: &DeployHookRow, path: Option<String>) -> DeployHook {
    DeployHook {
        id: h.id.clone(),
        name: h.name.clone(),
        branch: h.branch.clone(),
        created_at: h.created_at.clone(),
        path,
    }
}

/// `POST /v1/projects/{slug}/deploy-hooks`: its secret path is in this answer only.
#[utoipa::path(post, path = "/v1/projects/{slug}/deploy-hooks", tag = "git", params(super::openapi::SlugPath), request_body = CreateDeployHook, responses((status = 201, body = DeployHook), super::openapi::Errors), security(("bearer" = [])))]
pub async fn create_hook(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    ApiJson(req): ApiJson<CreateDeployHook>,
) -> Result<(StatusCode, Json<DeployHook>), ApiError> {
    let link = git::linked(&app, &slug).await?;
    let name = req.name.trim();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name: 1 to 64 characters, no control characters",
        ));
    }
    let branch = req.branch.clone().unwrap_or(link.production_branch.clone());
    check_branch(&branch)?;
    if app.store.list_deploy_hooks(&slug).await?.len() >= MAX_HOOKS {
        return Err(ApiError::conflict(format!(
            "project {slug} has {MAX_HOOKS} deploy hooks, the most it may; remove one first"
        )));
    }
    let token = format!("hk_{}", ids::random_id(40));
    let row = DeployHookRow {
        id: format!("hook_{}", ids::random_id(12)),
        slug: slug.clone(),
        name: name.to_string(),
        branch,
        hash: ids::token_hash(&token),
        created_at: cdeploy_core::now_rfc3339(),
    };
    app.store.insert_deploy_hook(&row).await?;
    Ok((
        StatusCode::CREATED,
        Json(hook_json(&row, Some(format!("/v1/hooks/{token}")))),
    ))
}

/// `GET /v1/projects/{slug}/deploy-hooks`.
#[utoipa::path(get, path = "/v1/projects/{slug}/deploy-hooks", tag = "git", params(super::openapi::SlugPath), responses((status = 200, body = Vec<DeployHook>), super::openapi::Errors), security(("bearer" = [])))]
pub async fn list_hooks(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<Json<Vec<DeployHook>>, ApiError> {
    app.project(&slug).await?;
    let hooks = app.store.list_deploy_hooks(&slug).await?;
    Ok(Json(hooks.iter().map(|h| hook_json(h, None)).collect()))
}

/// `DELETE /v1/projects/{slug}/deploy-hooks/{id}`.
#[utoipa::path(delete, path = "/v1/projects/{slug}/deploy-hooks/{id}", tag = "git", params(super::openapi::SlugPath, ("id" = String, Path, description = "A hook id (hook_...)")), responses((status = 204, description = "Removed"), super::openapi::Errors), security(("bearer" = [])))]
pub async fn delete_hook(
    State(app): State<Arc<App>>,
    Path((slug, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app.project(&slug).await?;
    if !app.store.delete_deploy_hook(&slug, &id).await? {
        return Err(ApiError::not_found(format!("deploy hook {id} of {slug}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/hooks/{token}`: deploys the hook's branch at its newest commit.
#[utoipa::path(post, path = "/v1/hooks/{token}", tag = "git", params(("token" = String, Path, description = "The hook's secret (hk_...)")), responses((status = 202, body = Delivery), super::openapi::Errors))]
pub async fn call_hook(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
) -> Result<(StatusCode, Json<Delivery>), ApiError> {
    let hook = match app
        .store
        .deploy_hook_by_hash(&ids::token_hash(&token))
        .await?
    {
        Some(h) => h,
        None => return Err(ApiError::not_found("deploy hook")),
    };
    let Some(link) = app.store.git_link(&hook.slug).await? else {
        return Err(ApiError::not_found("deploy hook"));
    };
    let production = hook.branch == link.production_branch;
    let action = Action::Deploy {
        preview: !production,
        branch: (!production).then(|| hook.branch.clone()),
        git_ref: hook.branch.clone(),
        repo: String::new(),
        reason: format!(
            "deploy hook {} ({}): branch {}",
            hook.name, hook.id, hook.branch
        ),
        pr: None,
        force: true,
    };
    let incoming = Incoming {
        slug: &link.slug,
        forge: "hook",
        event: "deploy hook",
        delivery: None,
        payload: None,
    };
    let (outcome, d) = deliver::act(&app, &link, &incoming, action).await?;
    Ok((super::webhooks::status(outcome), Json(d)))
}
