//! `GET /v1/deployments/{id}/diff?to=<id>`: two ready deployments compared from their
//! manifests ([`cdeploy_core::diff`]).

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
