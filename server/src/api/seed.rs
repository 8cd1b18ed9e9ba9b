//! The seed's `POST /project {gitURL, slug?}`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use cdeploy_core::api::{self, CreateDeployment};
use cdeploy_core::{git, ids};

use super::error::{ApiError, ApiJson};
use crate::service::validate::{check_git, check_slug};
use crate::service::{deployments, App};

/// The seed's `POST /project {gitURL, slug?}`.
#[utoipa::path(post, path = "/project", tag = "projects", request_body = api::SeedProjectRequest, responses((status = 200, body = api::SeedProjectResponse), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn seed_create_project(
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
    let d = deployments::start(&app, &slug, req, None, None).await?;
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
pub(super) async fn generate_slug(app: &App, url: &str) -> Result<String, ApiError> {
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
