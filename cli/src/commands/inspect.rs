//! `cdeploy inspect <id>`: one deployment; `--wait` until it finishes; `--route PATH`:
//! which rule or file answers a path, and the headers rules add; `--why`: what its build
//! read, and what differed from the nearest earlier deployment (or whose output it took).

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
    /// Explain what answers this path (with its query, if any: `/store?id=3`): the rule,
    /// file or fallback, and the headers rules add.
    #[arg(long, value_name = "PATH")]
    route: Option<String>,
    /// With --route: the host asked for (a rule can be for one host) [default: the
    /// project's own].
    #[arg(long, requires = "route")]
    host: Option<String>,
    /// Why it was built or skipped: the inputs its build read that differ from the
    /// nearest earlier deployment of its project and target, or the deployment whose
    /// output it took.
    #[arg(long, conflicts_with_all = ["route", "wait"])]
    why: bool,
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let client = Client::new(g)?;
    if let Some(path) = &args.route {
        let path = if path.starts_with('/') {
            path.clone()
        } else {
            format!("/{path}")
        };
        let r = client.route(&args.id, &path, args.host.as_deref()).await?;
        if g.printer.json {
            g.printer.json_result(&r);
        } else {
            g.printer.result(describe_route(&r));
        }
        return Ok(ExitStatus::Success);
    }
    if args.why {
        let i = client.inputs(&args.id).await?;
        if g.printer.json {
            g.printer.json_result(&i);
        } else {
            g.printer.result(describe_inputs(&i));
        }
        return Ok(ExitStatus::Success);
    }
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
        if let Some(c) = &d.commit {
            lines.push(format!("commit      {c}"));
        }
        if let Some(from) = &d.reused_from {
            lines.push(format!(
                "reused      the output of {from} (unchanged since)"
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

/// `/old → 301 to /new`, then what decided and the headers, a line each.
fn describe_route(r: &cdeploy_core::api::RouteAnswer) -> String {
    let what = match r.kind.as_str() {
        "redirect" => format!(
            "{} redirect to {}",
            r.status,
            r.location.as_deref().unwrap_or("")
        ),
        "proxy" => format!("proxied to {}", r.location.as_deref().unwrap_or("")),
        "file" => format!("{} {}", r.status, r.file.as_deref().unwrap_or("")),
        _ => format!("{} (nothing to serve)", r.status),
    };
    let mut lines = vec![format!("{}  →  {what}", r.path)];
    match (&r.rule, &r.source) {
        (Some(rule), Some(source)) => lines.push(format!("  by {source}: {rule}")),
        _ => lines.push(format!("  by {}", r.via)),
    }
    for h in &r.headers {
        lines.push(format!(
            "  header {}: {}  ({})",
            h.name,
            h.value,
            h.sources.join(", ")
        ));
    }
    for name in &r.removed {
        lines.push(format!("  header {name} removed"));
    }
    if r.methods == "GET, HEAD" {
        lines.push("  for GET and HEAD (other methods: 405)".to_string());
    }
    if r.protected {
        lines.push(
            "  protected: without the password, a bypass token or its cookie, the password form (401)"
                .to_string(),
        );
    }
    lines.join("\n")
}

/// Whose output it took, or which inputs differed from the nearest earlier build.
fn describe_inputs(i: &cdeploy_core::api::DeploymentInputs) -> String {
    if !i.recorded {
        return format!(
            "{}: no inputs were recorded (the build did not get that far, could not tell them apart (its log says why), or was made before they were)",
            i.id
        );
    }
    let mut lines = vec![format!("{}: its build read {} inputs", i.id, i.parts.len())];
    if let Some(from) = &i.reused_from {
        lines.push(format!(
            "skipped: unchanged since {from}, whose build read the same inputs; its output is served"
        ));
    }
    match &i.compared_with {
        None => lines.push(
            "built: no earlier deployment of this project and target recorded its inputs".into(),
        ),
        Some(other) if i.differing.is_empty() => {
            lines.push(format!("same inputs as {other}"));
        }
        Some(other) => {
            if i.reused_from.is_none() {
                lines.push(format!("built: what differs from {other}:"));
            } else {
                lines.push(format!("differs from {other} (the nearest earlier one):"));
            }
            for name in &i.differing {
                lines.push(format!("  {name}"));
            }
        }
    }
    lines.join("\n")
}
