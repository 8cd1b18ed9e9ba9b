//! `cdeploy diff <from> [<to>]`: what changed between two ready deployments, from their
//! manifests — files added, removed and changed (with sizes), and the settings, rules
//! and server that differ. With one id: from the project's production to it.

use cdeploy_core::api;
use indicatif::HumanBytes;

use crate::client::Client;
use crate::exit::{CliError, CliResult, ExitStatus};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The deployment compared from (or, alone, the one compared with production).
    from: String,
    /// The deployment compared to.
    to: Option<String>,
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    for id in std::iter::once(&args.from).chain(args.to.as_ref()) {
        if cdeploy_core::ids::DeploymentId::parse(id).is_none() {
            return Err(
                CliError::usage(format!("{id:?} is not a deployment id")).with_hint(
                    "ids are 16 lowercase letters and digits, as `cdeploy ls <slug>` shows",
                ),
            );
        }
    }
    let client = Client::new(g)?;
    let (from, to) = match args.to {
        Some(to) => (args.from, to),
        None => {
            let d = client.deployment(&args.from).await?;
            let project: api::Project = client.get(&format!("/v1/projects/{}", d.slug)).await?;
            let production = project.production.ok_or_else(|| {
                CliError::usage(format!("project {} has no production deployment", d.slug))
                    .with_hint("name two deployments: cdeploy diff <from> <to>")
            })?;
            (production, d.id)
        }
    };
    let diff: api::DeploymentDiff = client
        .get(&format!("/v1/deployments/{from}/diff?to={to}"))
        .await?;
    if g.printer.json {
        g.printer.json_result(&diff);
    } else {
        g.printer.result(describe(&diff));
    }
    Ok(ExitStatus::Success)
}

/// `+ /new.js  1.2 KiB`, `- …`, `~ /index.html  1.0 KiB → 1.1 KiB`, a summary, then the
/// settings that differ.
fn describe(d: &api::DeploymentDiff) -> String {
    let mut lines = vec![format!("{} → {}", d.from, d.to)];
    let width = (d.added.iter().map(|f| f.path.len()))
        .chain(d.removed.iter().map(|f| f.path.len()))
        .chain(d.changed.iter().map(|f| f.path.len()))
        .max()
        .unwrap_or(0);
    for f in &d.added {
        lines.push(format!("+ {:width$}  {}", f.path, HumanBytes(f.size)));
    }
    for f in &d.removed {
        lines.push(format!("- {:width$}  {}", f.path, HumanBytes(f.size)));
    }
    for f in &d.changed {
        lines.push(format!(
            "~ {:width$}  {} → {}",
            f.path,
            HumanBytes(f.from_size),
            HumanBytes(f.to_size)
        ));
    }
    lines.push(format!(
        "{} added, {} removed, {} changed, {} unchanged",
        d.added.len(),
        d.removed.len(),
        d.changed.len(),
        d.unchanged
    ));
    if !d.settings.is_empty() {
        lines.push("settings:".into());
    }
    for s in &d.settings {
        lines.push(match (&s.from, &s.to) {
            (Some(a), Some(b)) if !s.setting.ends_with("order") => {
                format!("  {}: {a} → {b}", s.setting)
            }
            (Some(_), Some(_)) => format!("  {}: the same rules in another order", s.setting),
            (None, Some(b)) => format!("  + {} {b}", s.setting),
            (Some(a), None) => format!("  - {} {a}", s.setting),
            (None, None) => format!("  {}", s.setting),
        });
    }
    lines.join("\n")
}
