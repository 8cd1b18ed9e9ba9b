//! `cdeploy open [slug]`: open a project's site in the browser (`--print`: print its URL).

use std::path::PathBuf;

use cdeploy_core::api;

use crate::client::Client;
use crate::exit::{CliResult, ExitStatus};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct OpenArgs {
    /// The project; default: the one `cdeploy deploy` in this directory deploys.
    slug: Option<String>,
    /// Print the URL instead of opening it.
    #[arg(long)]
    print: bool,
}

pub async fn run(g: &Globals, args: OpenArgs) -> CliResult {
    let slug = crate::commands::project_slug(args.slug)?;
    let client = Client::new(g)?;
    let project: api::Project = client.get(&format!("/v1/projects/{slug}")).await?;
    if g.printer.json {
        g.printer
            .json_result(&serde_json::json!({ "slug": slug, "url": project.url }));
        return Ok(ExitStatus::Success);
    }
    if args.print {
        g.printer.result(&project.url);
        return Ok(ExitStatus::Success);
    }
    if open_in_browser(&project.url) {
        g.printer.info(format!("Opened {}", project.url));
    } else {
        g.printer
            .info("No browser could be opened (set BROWSER to one); the site is at:".to_string());
        g.printer.result(&project.url);
    }
    Ok(ExitStatus::Success)
}

/// Opens `url` in the user's browser; false when none could be.
pub fn open_in_browser(url: &str) -> bool {
    browser().is_some_and(|b| {
        std::process::Command::new(&b)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// `$BROWSER`, else the desktop's opener.
fn browser() -> Option<PathBuf> {
    if let Some(b) = std::env::var_os("BROWSER").filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(b));
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(opener))
            .find(|p| p.is_file())
    })
}
