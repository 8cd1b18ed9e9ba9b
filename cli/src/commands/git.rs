//! `cdeploy git link|show|unlink|deliveries|hook`: deploys on `git push`. A linked
//! project deploys its production branch to production and other branches and pull
//! requests to previews, from its forge's webhooks or its deploy hooks.

use cdeploy_core::api::{CreateDeployHook, Delivery, DeployHook, GitLink, LinkGit};
use reqwest::Method;

use crate::client::Client;
use crate::commands::ProjectArg;
use crate::exit::{CliError, CliResult, ExitStatus};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Link the project to its repository; prints the webhook URLs and secret (admin).
    Link {
        /// The repository builds clone (https://…, git://…).
        repo: String,
        /// Pushes to it deploy production; other branches deploy previews.
        #[arg(long, default_value = "main")]
        branch: String,
        /// The folder pushes build, relative to the repository (a monorepo's app; one
        /// project per app, each linked with its own); kept when not given, `.` clears
        /// it [default: cdeploy.toml's `[build] root`].
        #[arg(long, value_name = "PATH")]
        root: Option<String>,
        /// Make a new webhook secret (the old one stops working).
        #[arg(long)]
        new_secret: bool,
        #[command(flatten)]
        project: ProjectArg,
    },
    /// Show the link, its webhook URLs and secret (admin).
    Show {
        #[command(flatten)]
        project: ProjectArg,
    },
    /// Unlink: webhooks and deploy hooks stop deploying (admin).
    Unlink {
        #[command(flatten)]
        project: ProjectArg,
    },
    /// The webhook deliveries received, and what each did (or why not).
    Deliveries {
        /// How many, newest first (1–500).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        project: ProjectArg,
    },
    /// Deploy hooks: secret URLs that deploy a branch when POSTed (admin).
    Hook {
        #[command(subcommand)]
        command: HookCommand,
    },
}

#[derive(clap::Subcommand, Debug)]
enum HookCommand {
    /// Create one; its URL is printed once.
    Add {
        /// What it is for (e.g. "cms").
        name: String,
        /// The branch it deploys [default: the production branch].
        #[arg(long)]
        branch: Option<String>,
        #[command(flatten)]
        project: ProjectArg,
    },
    /// List them (never their URLs).
    Ls {
        #[command(flatten)]
        project: ProjectArg,
    },
    /// Remove one by id.
    Rm {
        id: String,
        #[command(flatten)]
        project: ProjectArg,
    },
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let client = Client::new(g)?;
    match args.command {
        Command::Link {
            repo,
            branch,
            root,
            new_secret,
            project: p,
        } => {
            let slug = p.resolve()?;
            let link: GitLink = client
                .send(
                    client
                        .request(Method::PUT, &format!("/v1/projects/{slug}/git"))
                        .json(&LinkGit {
                            repo,
                            production_branch: Some(branch),
                            root,
                            new_secret,
                        }),
                )
                .await?;
            print_link(g, &slug, &link);
        }
        Command::Show { project: p } => {
            let slug = p.resolve()?;
            let link: GitLink = client.get(&format!("/v1/projects/{slug}/git")).await?;
            print_link(g, &slug, &link);
        }
        Command::Unlink { project: p } => {
            let slug = p.resolve()?;
            let _: serde_json::Value = client
                .send(client.request(Method::DELETE, &format!("/v1/projects/{slug}/git")))
                .await?;
            if g.printer.json {
                g.printer
                    .json_result(&serde_json::json!({"slug": slug, "linked": false}));
            } else {
                g.printer.info(format!(
                    "Unlinked {slug}: its webhooks and deploy hooks no longer deploy"
                ));
            }
        }
        Command::Deliveries { limit, project: p } => {
            let slug = p.resolve()?;
            let list: Vec<Delivery> = client
                .get(&format!("/v1/projects/{slug}/deliveries?limit={limit}"))
                .await?;
            if g.printer.json {
                g.printer.json_result(&list);
            } else if list.is_empty() {
                g.printer.info(format!("No deliveries for {slug} yet"));
            } else {
                for d in list {
                    g.printer.result(format!(
                        "{}  {:<7} {:<20} {:<9} {}{}",
                        d.at,
                        d.forge,
                        d.event,
                        d.decision,
                        d.reason,
                        d.deployment
                            .map(|id| format!(" → {id}"))
                            .unwrap_or_default()
                    ));
                }
            }
        }
        Command::Hook { command } => hook(g, &client, command).await?,
    }
    Ok(ExitStatus::Success)
}

async fn hook(g: &Globals, client: &Client, command: HookCommand) -> Result<(), CliError> {
    match command {
        HookCommand::Add {
            name,
            branch,
            project: p,
        } => {
            let slug = p.resolve()?;
            let created: DeployHook = client
                .post(
                    &format!("/v1/projects/{slug}/deploy-hooks"),
                    &CreateDeployHook { name, branch },
                )
                .await?;
            let url = format!("{}{}", g.api, created.path.as_deref().unwrap_or_default());
            if g.printer.json {
                g.printer.json_result(&serde_json::json!({
                    "id": created.id, "name": created.name, "branch": created.branch, "url": url,
                }));
            } else {
                g.printer.info(format!(
                    "Deploy hook {} ({}) deploys branch {} of {slug} when POSTed. The URL is shown once; anyone who has it can deploy:",
                    created.name, created.id, created.branch
                ));
                g.printer.result(url);
            }
        }
        HookCommand::Ls { project: p } => {
            let slug = p.resolve()?;
            let hooks: Vec<DeployHook> = client
                .get(&format!("/v1/projects/{slug}/deploy-hooks"))
                .await?;
            if g.printer.json {
                g.printer.json_result(&hooks);
            } else {
                for h in hooks {
                    g.printer.result(format!(
                        "{:<18} {:<24} branch {:<20} created {}",
                        h.id, h.name, h.branch, h.created_at
                    ));
                }
            }
        }
        HookCommand::Rm { id, project: p } => {
            let slug = p.resolve()?;
            let _: serde_json::Value = client
                .send(client.request(
                    Method::DELETE,
                    &format!("/v1/projects/{slug}/deploy-hooks/{id}"),
                ))
                .await?;
            if g.printer.json {
                g.printer
                    .json_result(&serde_json::json!({"id": id, "removed": true}));
            } else {
                g.printer.info(format!(
                    "Removed deploy hook {id}: its URL no longer deploys"
                ));
            }
        }
    }
    Ok(())
}

fn print_link(g: &Globals, slug: &str, link: &GitLink) {
    let urls: std::collections::BTreeMap<&str, String> = link
        .webhooks
        .iter()
        .map(|(forge, path)| (forge.as_str(), format!("{}{path}", g.api)))
        .collect();
    if g.printer.json {
        g.printer.json_result(&serde_json::json!({
            "slug": slug,
            "repo": cdeploy_core::git::redact_url(&link.repo),
            "production_branch": link.production_branch,
            "root": link.root,
            "webhook_secrets": link.webhook_secrets,
            "webhooks": urls,
        }));
        return;
    }
    g.printer.info(format!(
        "{slug} deploys {}{} on push: {} to production, other branches and pull requests to previews.",
        cdeploy_core::git::redact_url(&link.repo),
        link.root
            .as_deref()
            .map(|r| format!(" (folder {r})"))
            .unwrap_or_default(),
        link.production_branch
    ));
    g.printer.info(
        "Add a webhook to the repository (content type application/json; push and pull request events) with its forge's URL and secret:",
    );
    // The URLs and secrets are the result (stdout): one line per forge.
    for (forge, url) in &urls {
        let secret = link.webhook_secrets.get(*forge).map_or("", String::as_str);
        g.printer.result(format!("{forge:<7} {url} {secret}"));
    }
}
