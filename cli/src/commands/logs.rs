//! `cdeploy logs <slug>`: the latest (or a given) deployment's log, followed while it runs;
//! with `--runtime`, what a server app's server printed (production's, or a given
//! deployment's), with a line per request.

use cdeploy_core::api;
use cdeploy_core::event::{EventBody, Stream};

use crate::client::Client;
use crate::exit::{CliError, CliResult, ExitStatus};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    slug: String,
    /// A specific deployment instead of the latest.
    #[arg(long)]
    deployment: Option<String>,
    /// Print what is there now and stop, even if the build is still running.
    #[arg(long, conflicts_with = "runtime")]
    no_follow: bool,
    /// The server app's runtime log (its server's output, a line per request with its
    /// id) instead of the build log: production's deployment unless --deployment.
    #[arg(long)]
    runtime: bool,
    /// With --runtime: keep printing new lines until interrupted.
    #[arg(long, requires = "runtime")]
    follow: bool,
    /// With --runtime: only lines of the last 30s, 15m, 1h, 2d…
    #[arg(long, requires = "runtime", value_name = "DURATION", value_parser = crate::commands::tokens::parse_duration)]
    since: Option<u64>,
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    cdeploy_core::ids::validate_slug(&args.slug)
        .map_err(|e| CliError::usage(format!("invalid slug {:?}: {e}", args.slug)))?;
    let client = Client::new(g)?;
    if args.runtime {
        return runtime(g, &client, &args).await;
    }
    let id = match args.deployment {
        Some(id) => id,
        None => {
            let list: Vec<api::Deployment> = client
                .get(&format!("/v1/projects/{}/deployments?limit=1", args.slug))
                .await?;
            list.into_iter()
                .next()
                .ok_or_else(|| {
                    CliError::api(
                        "not_found",
                        format!("project {} has no deployments", args.slug),
                    )
                })?
                .id
        }
    };
    if args.no_follow {
        let d = client.deployment(&id).await?;
        if !d.status.is_terminal() {
            g.printer.info(format!(
                "deployment {id} is {}; showing the log so far",
                d.status
            ));
        }
    }
    let json = g.printer.json;
    let print = |e: &cdeploy_core::event::Event| {
        if json {
            println!("{}", serde_json::to_string(e).expect("serializable"));
            return;
        }
        match &e.body {
            EventBody::Log { step, stream, line } => {
                let marker = match stream {
                    Stream::System => "›",
                    Stream::Stderr => "!",
                    Stream::Stdout => " ",
                };
                println!("{:<8} {marker} {line}", step.as_str());
            }
            EventBody::Status { status, error, url } => {
                let extra = error
                    .clone()
                    .or(url.clone())
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                println!("status   · {status}{extra}");
            }
            EventBody::Progress { .. } => {}
        }
    };
    let terminal = if args.no_follow {
        // The stream replays history first; stop at the first pause by bounding the wait.
        let deadline = Some(std::time::Instant::now() + std::time::Duration::from_secs(2));
        match crate::follow::follow(&client, &id, 0, deadline, print).await {
            Ok(t) => Some(t),
            Err(e) if e.code == "timeout" => None,
            Err(e) => return Err(e),
        }
    } else {
        Some(crate::follow::follow(&client, &id, 0, None, print).await?)
    };
    Ok(match terminal.and_then(|t| t.body.terminal_status()) {
        Some(cdeploy_core::event::Status::Ready) | None => ExitStatus::Success,
        Some(_) => ExitStatus::BuildFailed,
    })
}

/// `logs --runtime`: the kept lines, then (with `--follow`) new ones as they come.
async fn runtime(g: &Globals, client: &Client, args: &Args) -> CliResult {
    let id = match &args.deployment {
        Some(id) => id.clone(),
        None => {
            let p: api::Project = client.get(&format!("/v1/projects/{}", args.slug)).await?;
            p.production.ok_or_else(|| {
                CliError::api(
                    "not_found",
                    format!(
                        "project {} has no production deployment; name one with --deployment",
                        args.slug
                    ),
                )
            })?
        }
    };
    let mut after = 0u64;
    let mut query = args
        .since
        .map(|s| format!("&since={s}"))
        .unwrap_or_default();
    loop {
        let log: api::RuntimeLog = client
            .get(&format!(
                "/v1/deployments/{id}/runtime-log?after={after}{query}"
            ))
            .await?;
        for line in &log.lines {
            if g.printer.json {
                println!("{}", serde_json::to_string(line).expect("serializable"));
            } else {
                let marker = match line.stream.as_str() {
                    "system" => "›",
                    "stderr" => "!",
                    _ => " ",
                };
                println!("{} {marker} {}", line.at, line.text);
            }
            after = after.max(line.seq);
        }
        if !args.follow {
            if log.lines.is_empty() && !g.printer.json {
                let state = if log.running { "running" } else { "asleep" };
                g.printer.info(format!(
                    "no runtime log lines kept for {id} (its server is {state})"
                ));
            }
            return Ok(ExitStatus::Success);
        }
        // Only the first ask is bounded by --since; after that, `after` is.
        query.clear();
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
