//! `cdeploy trust add|ls|rm`: the CI identities (OIDC issuers and claim rules) that may
//! deploy a project without a stored token.

use std::collections::BTreeMap;

use cdeploy_core::api::{CreateTrust, Trust};
use reqwest::Method;

use crate::client::Client;
use crate::commands::ProjectArg;
use crate::exit::{CliError, CliResult, ExitStatus};
use crate::Globals;

const GITHUB: &str = "https://token.actions.githubusercontent.com";
const GITLAB: &str = "https://gitlab.com";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Let a CI job whose identity token carries these claims deploy the project (admin).
    Add {
        /// The issuer, as its tokens' `iss` says [default with --github: GitHub
        /// Actions'; with --gitlab: gitlab.com's].
        #[arg(long, required_unless_present_any = ["github", "gitlab"])]
        issuer: Option<String>,
        /// GitHub Actions' issuer (rules must bind repository_id and repository_owner_id).
        #[arg(long, conflicts_with = "gitlab")]
        github: bool,
        /// gitlab.com's issuer (rules must bind project_id and namespace_id).
        #[arg(long)]
        gitlab: bool,
        /// A claim the token must carry with this value, compared exactly
        /// (`repository_id=123456`, `ref=refs/heads/main`); repeat for more.
        #[arg(long = "claim", value_name = "NAME=VALUE", required = true)]
        claims: Vec<String>,
        #[command(flatten)]
        project: ProjectArg,
    },
    /// The identities a project trusts.
    Ls {
        #[command(flatten)]
        project: ProjectArg,
    },
    /// Stop trusting one (admin).
    Rm {
        /// The trust's id (trust_...).
        id: String,
        #[command(flatten)]
        project: ProjectArg,
    },
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let client = Client::new(g)?;
    match args.command {
        Command::Add {
            issuer,
            github,
            gitlab,
            claims,
            project,
        } => {
            let slug = project.resolve()?;
            let issuer = match (issuer, github, gitlab) {
                (Some(i), _, _) => i,
                (None, true, _) => GITHUB.to_string(),
                (None, _, _) => GITLAB.to_string(),
            };
            let body = CreateTrust {
                issuer,
                claims: parse_claims(&claims)?,
            };
            let t: Trust = client
                .send(
                    client
                        .request(Method::POST, &format!("/v1/projects/{slug}/trust"))
                        .json(&body),
                )
                .await?;
            if g.printer.json {
                g.printer.json_result(&t);
            } else {
                g.printer.result(line(&t));
            }
        }
        Command::Ls { project } => {
            let slug = project.resolve()?;
            let list: Vec<Trust> = client.get(&format!("/v1/projects/{slug}/trust")).await?;
            if g.printer.json {
                g.printer.json_result(&list);
            } else if list.is_empty() {
                g.printer.info(format!("{slug} trusts no CI identity"));
            } else {
                g.printer
                    .result(list.iter().map(line).collect::<Vec<_>>().join("\n"));
            }
        }
        Command::Rm { id, project } => {
            let slug = project.resolve()?;
            let _: serde_json::Value = client
                .send(client.request(Method::DELETE, &format!("/v1/projects/{slug}/trust/{id}")))
                .await?;
            g.printer.info(format!("{id} removed"));
        }
    }
    Ok(ExitStatus::Success)
}

fn parse_claims(given: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    given
        .iter()
        .map(|c| match c.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
            _ => Err(CliError::usage(format!(
                "--claim {c:?}: NAME=VALUE (repository_id=123456)"
            ))),
        })
        .collect()
}

fn line(t: &Trust) -> String {
    let rules: Vec<String> = t.claims.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}  {}  {}", t.id, t.issuer, rules.join(" "))
}
