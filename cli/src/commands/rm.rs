//! `cdeploy rm <slug>`: delete a project (its site and previews go offline);
//! `cdeploy rm <slug> --deployment <id>`: delete one deployment of it.

use std::io::IsTerminal;

use crate::client::Client;
use crate::exit::{CliError, CliResult, ExitStatus};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    slug: String,
    /// Delete only this deployment (not the production one), not the project.
    #[arg(long, value_name = "ID")]
    deployment: Option<String>,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    yes: bool,
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let slug = &args.slug;
    cdeploy_core::ids::validate_slug(slug)
        .map_err(|e| CliError::usage(format!("invalid slug {slug:?}: {e}")))?;
    if let Some(id) = &args.deployment {
        return delete_deployment(g, slug, id, args.yes).await;
    }
    if !args.yes
        && !confirm(
            g,
            slug,
            &format!("Delete project {slug} and take its site offline?"),
        )?
    {
        return Ok(ExitStatus::Success);
    }
    let client = Client::new(g)?;
    client
        .send::<serde_json::Value>(
            client.request(reqwest::Method::DELETE, &format!("/v1/projects/{slug}")),
        )
        .await?;
    if g.printer.json {
        g.printer
            .json_result(&serde_json::json!({ "deleted": slug }));
    } else {
        g.printer.info(format!("Deleted {slug}"));
    }
    Ok(ExitStatus::Success)
}

async fn delete_deployment(g: &Globals, slug: &str, id: &str, yes: bool) -> CliResult {
    if cdeploy_core::ids::DeploymentId::parse(id).is_none() {
        return Err(CliError::usage(format!("{id:?} is not a deployment id")));
    }
    if !yes
        && !confirm(
            g,
            &format!("deployment {id}"),
            &format!("Delete deployment {id} of {slug}?"),
        )?
    {
        return Ok(ExitStatus::Success);
    }
    let client = Client::new(g)?;
    // The deployment must be this project's: a typo in the slug deletes nothing.
    let d: serde_json::Value = client
        .send(client.request(reqwest::Method::GET, &format!("/v1/deployments/{id}")))
        .await?;
    if d["slug"].as_str() != Some(slug) {
        return Err(CliError::usage(format!(
            "deployment {id} is not a deployment of {slug}"
        )));
    }
    client
        .send::<serde_json::Value>(
            client.request(reqwest::Method::DELETE, &format!("/v1/deployments/{id}")),
        )
        .await?;
    if g.printer.json {
        g.printer
            .json_result(&serde_json::json!({ "deleted": id, "slug": slug }));
    } else {
        g.printer.info(format!("Deleted deployment {id} of {slug}"));
    }
    Ok(ExitStatus::Success)
}

/// Asks before deleting `what` (refused without a terminal: `--yes` is needed there).
/// False when the answer is no.
fn confirm(g: &Globals, what: &str, question: &str) -> Result<bool, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(
            CliError::usage(format!("refusing to delete {what} without confirmation"))
                .with_hint("pass --yes"),
        );
    }
    let ok = dialoguer::Confirm::new()
        .with_prompt(question)
        .default(false)
        .interact()
        .map_err(|e| CliError::usage(format!("prompt failed: {e}")))?;
    if !ok {
        g.printer.info("Nothing deleted.");
    }
    Ok(ok)
}
