//! `cdeploy rm <slug>`: delete a project (its site goes offline).

use std::io::IsTerminal;

use crate::client::Client;
use crate::exit::{CliError, CliResult, ExitStatus};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    slug: String,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    yes: bool,
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let slug = &args.slug;
    cdeploy_core::ids::validate_slug(slug)
        .map_err(|e| CliError::usage(format!("invalid slug {slug:?}: {e}")))?;
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(
                CliError::usage(format!("refusing to delete {slug} without confirmation"))
                    .with_hint("pass --yes"),
            );
        }
        let ok = dialoguer::Confirm::new()
            .with_prompt(format!("Delete project {slug} and take its site offline?"))
            .default(false)
            .interact()
            .map_err(|e| CliError::usage(format!("prompt failed: {e}")))?;
        if !ok {
            g.printer.info("Nothing deleted.");
            return Ok(ExitStatus::Success);
        }
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
