//! `cdeploy protection on|off|status`: a project's previews (never production) behind a
//! password and a bypass token CI can send (`x-cdeploy-bypass`).

use cdeploy_core::api::{ProtectionInfo, SetProtection};
use reqwest::Method;

use crate::client::Client;
use crate::commands::ProjectArg;
use crate::exit::{CliResult, ExitStatus};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Protect previews; prints the bypass token when one is made (admin).
    On {
        /// Set a password visitors type (asked for, or read from stdin).
        #[arg(long, conflicts_with = "no_password")]
        password: bool,
        /// Remove the password: only the bypass token opens previews.
        #[arg(long)]
        no_password: bool,
        /// Make a new bypass token (the old one stops working).
        #[arg(long)]
        new_token: bool,
        #[command(flatten)]
        project: ProjectArg,
    },
    /// Make previews public again (admin).
    Off {
        #[command(flatten)]
        project: ProjectArg,
    },
    /// Whether previews are protected, and how (admin).
    Status {
        #[command(flatten)]
        project: ProjectArg,
    },
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let client = Client::new(g)?;
    let (slug, info) = match args.command {
        Command::On {
            password,
            no_password,
            new_token,
            project,
        } => {
            let slug = project.resolve()?;
            let password = if password {
                Some(crate::commands::read_secret(
                    "Preview password",
                    true,
                    "the password",
                )?)
            } else {
                None
            };
            let info: ProtectionInfo = client
                .send(
                    client
                        .request(Method::PUT, &format!("/v1/projects/{slug}/protection"))
                        .json(&SetProtection {
                            password,
                            keep_password: !no_password,
                            new_token,
                        }),
                )
                .await?;
            (slug, info)
        }
        Command::Off { project } => {
            let slug = project.resolve()?;
            let _: serde_json::Value = client
                .send(client.request(Method::DELETE, &format!("/v1/projects/{slug}/protection")))
                .await?;
            (slug, ProtectionInfo::default())
        }
        Command::Status { project } => {
            let slug = project.resolve()?;
            let info: ProtectionInfo = client
                .get(&format!("/v1/projects/{slug}/protection"))
                .await?;
            (slug, info)
        }
    };
    if g.printer.json {
        g.printer.json_result(&info);
        return Ok(ExitStatus::Success);
    }
    if !info.enabled {
        g.printer.info(format!("Previews of {slug} are public"));
        return Ok(ExitStatus::Success);
    }
    g.printer.info(format!(
        "Previews of {slug} are protected ({}); production stays public",
        if info.password {
            "password or bypass token"
        } else {
            "bypass token only"
        }
    ));
    if let Some(token) = &info.bypass_token {
        g.printer.info(
            "Bypass token (shown once; CI sends it as the x-cdeploy-bypass header):".to_string(),
        );
        g.printer.result(token);
    }
    Ok(ExitStatus::Success)
}
