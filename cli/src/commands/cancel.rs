//! `cdeploy cancel <id|slug>`: stop a queued or running build.

use cdeploy_core::api;
use cdeploy_core::ids::DeploymentId;

use crate::client::Client;
use crate::exit::{CliError, CliResult, ExitStatus};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A deployment id, or a project slug (its newest queued or running deployment).
    target: String,
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let client = Client::new(g)?;
    let id = if DeploymentId::parse(&args.target).is_some() {
        args.target.clone()
    } else {
        let slug = &args.target;
        cdeploy_core::ids::validate_slug(slug).map_err(|e| {
            CliError::usage(format!(
                "{slug:?} is neither a deployment id nor a slug: {e}"
            ))
        })?;
        let list: Vec<api::Deployment> = client
            .get(&format!("/v1/projects/{slug}/deployments?limit=100"))
            .await?;
        match list.iter().find(|d| !d.status.is_terminal()) {
            Some(d) => d.id.clone(),
            None => {
                return Err(CliError::api(
                    "nothing_to_cancel",
                    format!("no deployment of {slug} is queued or building"),
                )
                .with_hint(format!("`cdeploy ls {slug}` lists its deployments")))
            }
        }
    };
    let d: api::Deployment = client
        .post(
            &format!("/v1/deployments/{id}/cancel"),
            &serde_json::json!({}),
        )
        .await?;
    if g.printer.json {
        g.printer.json_result(&d);
    } else {
        g.printer.info(format!(
            "Canceling {} of {}: its build is stopped (`cdeploy inspect {}` shows the outcome)",
            d.id, d.slug, d.id
        ));
    }
    Ok(ExitStatus::Success)
}
