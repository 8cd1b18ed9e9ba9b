//! `cdeploy inspect <id>`: one deployment; `--wait` until it finishes.

use cdeploy_core::event::Status;

use crate::client::Client;
use crate::exit::{CliResult, ExitStatus};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    id: String,
    /// Wait until the deployment is ready, failed or canceled.
    #[arg(long)]
    wait: bool,
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let client = Client::new(g)?;
    let mut d = client.deployment(&args.id).await?;
    if args.wait && !d.status.is_terminal() {
        crate::follow::follow(&client, &d.id, 0, None, |_| {}).await?;
        d = client.deployment(&args.id).await?;
    }
    if g.printer.json {
        g.printer.json_result(&d);
    } else {
        let mut lines = vec![
            format!("id          {}", d.id),
            format!("project     {}", d.slug),
            format!("status      {}", d.status),
            format!("source      {}", d.source.as_str()),
            format!("created     {}", d.created_at),
            format!("updated     {}", d.updated_at),
            format!("preview     {}", d.preview_url),
            format!(
                "production  {}",
                if d.production { d.url.as_str() } else { "no" }
            ),
        ];
        if let Some(gs) = &d.git {
            lines.push(format!(
                "git         {}{}",
                gs.url,
                gs.git_ref
                    .as_deref()
                    .map(|r| format!(" @ {r}"))
                    .unwrap_or_default()
            ));
        }
        if let Some(e) = &d.error {
            lines.push(format!("error       {e}"));
        }
        g.printer.result(lines.join("\n"));
    }
    Ok(match d.status {
        Status::Failed | Status::Canceled => ExitStatus::BuildFailed,
        _ => ExitStatus::Success,
    })
}
