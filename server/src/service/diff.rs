//! `GET /v1/deployments/{id}/diff?to=<id>`: two ready deployments compared from their
//! manifests ([`cdeploy_core::diff`]); `GET /v1/deployments/{id}/inputs`: what a build
//! read, compared with the nearest earlier build of its project and target.

use cdeploy_core::api;

use super::error::{Error, Result};
use super::route::ready_manifest;
use super::App;

/// What changed from deployment `from` to deployment `to`. `sees` says whether the
/// caller may read a project: `to` of a project it may not is answered as not found,
/// like any deployment it cannot see.
pub async fn between(
    app: &App,
    from: &str,
    to: &str,
    sees: impl Fn(&str) -> bool,
) -> Result<api::DeploymentDiff> {
    let (a, b) = (app.deployment(from).await?, app.deployment(to).await?);
    if !sees(&b.slug) {
        return Err(Error::not_found(format!("deployment {to}")));
    }
    let (a, b) = (
        ready_manifest(app, &a).await?,
        ready_manifest(app, &b).await?,
    );
    Ok(cdeploy_core::diff::manifests(&a, &b))
}

/// What deployment `id`'s build read, and which parts differ from the newest earlier
/// deployment of its project and target whose inputs were recorded (`inspect --why`).
/// Names only: hashes are compared here, never shown.
pub async fn inputs(app: &App, id: &str) -> Result<api::DeploymentInputs> {
    let d = app.deployment(id).await?;
    let mine = app.store.inputs(&d.id).await?;
    let earlier = match &mine {
        Some(_) => app.store.inputs_before(&d.slug, d.preview, &d.id).await?,
        None => None,
    };
    let theirs = match &earlier {
        Some(e) => app.store.inputs(e).await?,
        None => None,
    };
    let differing = match (&mine, &theirs) {
        (Some(a), Some(b)) => {
            let names: std::collections::BTreeSet<&String> =
                a.parts.keys().chain(b.parts.keys()).collect();
            names
                .into_iter()
                .filter(|n| a.parts.get(*n) != b.parts.get(*n))
                .cloned()
                .collect()
        }
        _ => Vec::new(),
    };
    Ok(api::DeploymentInputs {
        id: d.id.clone(),
        recorded: mine.is_some(),
        parts: mine
            .as_ref()
            .map(|i| i.parts.keys().cloned().collect())
            .unwrap_or_default(),
        commit: d.commit.clone(),
        reused_from: d.reused_from.clone(),
        compared_with: earlier,
        differing,
    })
}
