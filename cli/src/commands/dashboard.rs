//! `cdeploy dashboard`: opens the web dashboard signed in as the token in use, through a
//! one-time link valid for a minute (`--print`: print the link instead).

use cdeploy_core::api;

use crate::client::Client;
use crate::exit::{CliResult, ExitStatus};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the sign-in link instead of opening it (it works once, within a minute).
    #[arg(long)]
    print: bool,
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let client = Client::new(g)?;
    let link: api::SessionLink = client
        .post("/v1/sessions/links", &serde_json::json!({}))
        .await?;
    let url = format!("{}{}", g.api.trim_end_matches('/'), link.path);
    if g.printer.json {
        g.printer
            .json_result(&serde_json::json!({ "url": url, "expires_at": link.expires_at }));
        return Ok(ExitStatus::Success);
    }
    if args.print {
        g.printer.result(&url);
        return Ok(ExitStatus::Success);
    }
    if super::open::open_in_browser(&url) {
        g.printer
            .info("Opened the dashboard, signed in (the link works once, within a minute)");
    } else {
        g.printer.info(
            "No browser could be opened (set BROWSER to one); open this link within a minute:"
                .to_string(),
        );
        g.printer.result(&url);
    }
    Ok(ExitStatus::Success)
}
