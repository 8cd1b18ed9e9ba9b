//! `cdeploy ls [slug]`: projects, or one project's deployments.

use cdeploy_core::api;
use console::style;

use crate::client::Client;
use crate::exit::{CliError, CliResult, ExitStatus};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    slug: Option<String>,
    /// How many deployments to show.
    #[arg(long, default_value_t = 20)]
    limit: u32,
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let client = Client::new(g)?;
    match args.slug {
        None => {
            let projects: Vec<api::Project> = client.get("/v1/projects").await?;
            if g.printer.json {
                g.printer.json_result(&projects);
            } else if projects.is_empty() {
                g.printer
                    .info("No projects yet: run `cdeploy deploy` in an app's directory.");
            } else {
                for p in projects {
                    g.printer.result(format!(
                        "{:<32} {:<18} {}",
                        p.slug,
                        p.production.as_deref().unwrap_or("-"),
                        p.url
                    ));
                }
            }
        }
        Some(slug) => {
            cdeploy_core::ids::validate_slug(&slug)
                .map_err(|e| CliError::usage(format!("invalid slug {slug:?}: {e}")))?;
            let list: Vec<api::Deployment> = client
                .get(&format!(
                    "/v1/projects/{slug}/deployments?limit={}",
                    args.limit
                ))
                .await?;
            if g.printer.json {
                g.printer.json_result(&list);
            } else {
                for d in list {
                    let status = match d.status.as_str() {
                        "ready" => style(d.status.as_str()).green(),
                        "failed" => style(d.status.as_str()).red(),
                        _ => style(d.status.as_str()).yellow(),
                    };
                    let prod = if d.production { "production" } else { "" };
                    g.printer.result(format!(
                        "{}  {:<9} {:<8} {}  {prod}",
                        d.id,
                        status,
                        d.source.as_str(),
                        d.created_at
                    ));
                }
            }
        }
    }
    Ok(ExitStatus::Success)
}
