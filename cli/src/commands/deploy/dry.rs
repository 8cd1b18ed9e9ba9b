//! `cdeploy deploy --dry`: the plan a build of DIR would follow, from the same code the
//! builder runs ([`cdeploy_core::plan`]); nothing is uploaded or built.

use std::path::Path;

use cdeploy_core::config::{BuildConfig, RuntimeConfig};
use cdeploy_core::plan::{Plan, BUNDLED_NPM};

use crate::exit::{CliError, CliResult, ExitStatus};
use crate::Globals;

/// Prints the plan (a table, or the plan as JSON with its `root`); exit 1 when it
/// already shows the build would fail.
pub(super) fn run(
    g: &Globals,
    dir: &Path,
    (build, runtime): (&BuildConfig, &RuntimeConfig),
) -> CliResult {
    let project_dir = dir.join(build.root.as_deref().unwrap_or("."));
    if !project_dir.is_dir() {
        return Err(CliError::config(format!(
            "build.root {:?} is not a folder of {}",
            build.root.as_deref().unwrap_or("."),
            dir.display()
        )));
    }
    let plan = cdeploy_core::plan::plan(dir, &project_dir, build, runtime);
    if g.printer.json {
        let mut doc = serde_json::to_value(&plan).expect("serializable");
        doc["root"] = build.root.clone().unwrap_or_else(|| ".".into()).into();
        g.printer.json_result(&doc);
    } else {
        let text: Vec<String> = rows(&plan, build)
            .iter()
            .map(|(k, v)| format!("{k:<16} {v}"))
            .chain(plan.notes.iter().map(|n| format!("{:<16} {n}", "Note")))
            .collect();
        g.printer.result(text.join("\n"));
    }
    match &plan.problem {
        Some(problem) => {
            g.printer
                .warn(format!("a build would fail before installing: {problem}"));
            Ok(ExitStatus::BuildFailed)
        }
        None => Ok(ExitStatus::Success),
    }
}

/// The table's rows, label and value, in the order a build takes them.
fn rows(plan: &Plan, build: &BuildConfig) -> Vec<(&'static str, String)> {
    let none = || "none".to_string();
    let mut rows: Vec<(&str, String)> = vec![("Framework", framework(plan))];
    if let Some(n) = &plan.node {
        let from = if n.source == "the default" {
            "the default line".to_string()
        } else {
            format!("from {}", n.source)
        };
        rows.push((
            "Node.js",
            format!(
                "{} {from} (the newest matching release at build time)",
                n.spec
            ),
        ));
    }
    if let Some(pm) = &plan.package_manager {
        let version = match pm.version.as_str() {
            BUNDLED_NPM => "(the one the build's Node.js bundles)",
            v => v,
        };
        rows.push((
            "Package manager",
            format!("{} {version} {}", pm.name.label(), pm.source),
        ));
    }
    if let Some(root) = &build.root {
        rows.push(("Root", root.clone()));
    }
    rows.push((
        "Install",
        plan.install
            .as_ref()
            .map(|c| format!("{c}  (in {})", plan.install_root))
            .unwrap_or_else(none),
    ));
    if let Some(cmd) = plan.server.as_ref().and_then(|s| s.prepare.clone()) {
        rows.push(("Before build", cmd));
    }
    rows.push(("Build", plan.build.clone().unwrap_or_else(none)));
    match &plan.server {
        Some(server) => {
            rows.push((
                "Server",
                format!(
                    "`{}` in {} (started on the first request, stopped when idle)",
                    server.command.join(" "),
                    server.bundle
                ),
            ));
            let assets: Vec<String> = server
                .assets
                .iter()
                .map(|a| format!("{} at {}", a.dir, a.prefix))
                .collect();
            rows.push(("Static files", assets.join(", ")));
            rows.push(("Health check", format!("GET {}", server.health)));
        }
        None => rows.push((
            "Output",
            format!("{} ({})", plan.output.dir, plan.output.source),
        )),
    }
    if let Some(spa) = plan.spa {
        rows.push(("SPA fallback", if spa { "on" } else { "off" }.into()));
    }
    rows
}

/// The framework detected, or what is built without one.
fn framework(plan: &Plan) -> String {
    plan.framework
        .map(|f| f.name.to_string())
        .unwrap_or_else(|| {
            if plan.node.is_some() {
                "none detected".into()
            } else {
                "none (a static folder)".into()
            }
        })
}
