//! `cdeploy promote <slug> <id>` and `cdeploy rollback <slug>`: move the production
//! pointer. Nothing is rebuilt.

use cdeploy_core::api;
use cdeploy_core::event::Status;

use crate::client::Client;
use crate::exit::{CliError, CliResult, ExitStatus};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    slug: String,
    id: String,
}

#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    slug: String,
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let client = Client::new(g)?;
    promote(g, &client, &args.slug, &args.id).await
}

async fn promote(g: &Globals, client: &Client, slug: &str, id: &str) -> CliResult {
    cdeploy_core::ids::validate_slug(slug)
        .map_err(|e| CliError::usage(format!("invalid slug {slug:?}: {e}")))?;
    let p: api::Project = client
        .post(
            &format!("/v1/projects/{slug}/promote"),
            &api::PromoteRequest {
                deployment: id.to_string(),
            },
        )
        .await?;
    if g.printer.json {
        g.printer.json_result(&p);
    } else {
        g.printer.info(format!("{slug} now serves {id}"));
        g.printer.result(&p.url);
    }
    Ok(ExitStatus::Success)
}

pub async fn rollback(g: &Globals, args: RollbackArgs) -> CliResult {
    let slug = &args.slug;
    cdeploy_core::ids::validate_slug(slug)
        .map_err(|e| CliError::usage(format!("invalid slug {slug:?}: {e}")))?;
    let client = Client::new(g)?;
    let project: api::Project = client.get(&format!("/v1/projects/{slug}")).await?;
    let list: Vec<api::Deployment> = client
        .get(&format!("/v1/projects/{slug}/deployments?limit=1000"))
        .await?;
    let current = project.production.as_deref();
    // Newest first: the first ready deployment older than the current production one.
    let position = current.and_then(|c| list.iter().position(|d| d.id == c));
    let target = match position {
        Some(i) => list[i + 1..].iter().find(|d| d.status == Status::Ready),
        None => None,
    };
    let Some(target) = target else {
        return Err(CliError::api(
            "no_previous",
            format!("{slug} has no earlier ready deployment to roll back to"),
        ));
    };
    promote(g, &client, slug, &target.id.clone()).await
}
