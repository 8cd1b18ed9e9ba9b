//! A server app's output going live: its server is started in the build's cell and
//! must answer a health request before anything is uploaded (never `ready` for a server
//! that does not answer: the error is what it printed), then its static folders are
//! uploaded as the site the proxy serves, its bundle as blobs, and the deployment is
//! activated with how its server starts.

use std::path::{Path, PathBuf};

use cdeploy_core::config::SiteConfig;
use cdeploy_core::event::{EventBody, Status, Step};
use cdeploy_core::plan::{Plan, ServerPlan};
use cdeploy_core::rules::RulesConfig;
use cdeploy_core::server::{ServerOutput, ServerSpec};
use cdeploy_storage::publish::OutputFiles;

use super::{resolve_inside, Build};
use crate::{process, upload, BuildError};

/// How long a server has to answer its health request in the build.
pub const HEALTH_TIMEOUT_SECS: u64 = 30;

/// The port a server listens on in the build's cell (its own network namespace).
const CHECK_PORT: &str = "3000";

/// Starts the server with `PORT`, asks for the health path until it answers (any
/// status below 500), then stops it. Its output goes to the log; an exit before it
/// answers, or no answer in time, fails with what happened.
const HEALTH_CHECK: &str = r#"
const { spawn } = require('node:child_process');
const http = require('node:http');
const args = JSON.parse(process.env.CDEPLOY_START_ARGS);
const path = process.env.CDEPLOY_HEALTH;
const secs = Number(process.env.CDEPLOY_HEALTH_SECS);
const env = { ...process.env };
for (const k of Object.keys(env)) if (k.startsWith('CDEPLOY_')) delete env[k];
const server = spawn(process.execPath, args, { stdio: 'inherit', env });
const deadline = Date.now() + secs * 1000;
let answered = false;
server.on('exit', (code, signal) => {
  if (answered) process.exit(0);
  console.error(`the server exited (${signal ? 'signal ' + signal : 'code ' + code}) before it answered GET ${path}`);
  process.exit(1);
});
function retry(why) {
  if (Date.now() > deadline) {
    console.error(`the server did not answer GET ${path} within ${secs}s (${why})`);
    server.kill('SIGKILL');
    process.exit(1);
  }
  setTimeout(attempt, 150);
}
function attempt() {
  const req = http.get({ host: '127.0.0.1', port: Number(process.env.PORT), path, timeout: 5000 }, (res) => {
    res.resume();
    if (res.statusCode >= 500) return retry(`it answered ${res.statusCode}`);
    answered = true;
    console.log(`cdeploy: GET ${path} answered ${res.statusCode}`);
    server.kill('SIGTERM');
    setTimeout(() => { server.kill('SIGKILL'); process.exit(0); }, 3000).unref();
  });
  req.on('timeout', () => req.destroy(new Error('no answer within 5s')));
  req.on('error', (e) => retry(e.code || e.message));
}
attempt();
"#;

/// Checks, uploads and activates a server app's output.
pub(super) async fn publish(
    b: &Build<'_>,
    runner: &process::Runner<'_>,
    (checkout, plan, server): (&Path, &Plan, &ServerPlan),
    node_version: &str,
    (site, rules): (SiteConfig, &RulesConfig),
) -> Result<(), BuildError> {
    let bundle_dir = resolve_inside(checkout, &server.bundle, "the server's folder")?;
    if !bundle_dir.is_dir() {
        return Err(BuildError::failed(format!(
            "the build left no {}: the server app's build did not make its server",
            server.bundle
        )));
    }
    let cwd = match &server.cwd {
        Some(cwd) => cwd.clone(),
        None => find_next_server(&bundle_dir).ok_or_else(|| {
            BuildError::failed(format!(
                "{} has no server.js: Next.js did not build its standalone server",
                server.bundle
            ))
        })?,
    };
    copy_into(b, runner, (checkout, server), &bundle_dir, &cwd).await?;
    let spec = ServerSpec {
        kind: server.kind.to_string(),
        node: node_version.to_string(),
        command: server.command.clone(),
        cwd,
        health: server.health.clone(),
    };
    check_health(b, runner, &bundle_dir, &spec).await?;

    b.sink.emit(EventBody::status(Status::Uploading)).await;
    let files = upload_assets(b, checkout, server).await?;
    let bundle = upload::upload_bundle(b.storage, b.sink, &bundle_dir, b.cancel).await?;
    let output = ServerOutput { spec, bundle };
    output.validate().map_err(BuildError::failed)?;
    super::publish::activate(b, plan, &files, site, rules, Some(&output)).await
}

/// Copies what the server reads itself into its folder in the bundle, in the cell with
/// paths relative to the project folder (`cp -R` keeps links as links: a link out of
/// the checkout is dropped by the bundle's scan, never followed by the builder).
async fn copy_into(
    b: &Build<'_>,
    runner: &process::Runner<'_>,
    (checkout, server): (&Path, &ServerPlan),
    bundle_dir: &Path,
    cwd: &str,
) -> Result<(), BuildError> {
    let project_dir = resolve_inside(checkout, &project_path(server, "."), "the project")?;
    let server_dir = match cwd {
        "." => bundle_dir.to_path_buf(),
        cwd => bundle_dir.join(cwd),
    };
    let Ok(server_rel) = server_dir.strip_prefix(&project_dir) else {
        return Ok(());
    };
    for (from, to) in &server.copy {
        let dest = server_rel.join(to);
        if !project_dir.join(from).is_dir() || project_dir.join(&dest).exists() {
            continue;
        }
        b.say(
            Step::Activate,
            format!("Copying {from} into the server's folder"),
        )
        .await;
        let dest = dest.display().to_string();
        let script = "mkdir -p -- \"$(dirname -- \"$2\")\" && cp -R -- \"$1\" \"$2\"";
        runner
            .exec(
                Step::Activate,
                &["/bin/sh", "-c", script, "copy", from, &dest],
                &project_dir,
                &format!("cp -R {from}"),
                &[],
            )
            .await?;
    }
    Ok(())
}

/// `path` of the project folder, relative to the repository's root (a Next.js bundle is
/// `<project>/.next/standalone`).
fn project_path(server: &ServerPlan, path: &str) -> String {
    let project = server
        .bundle
        .strip_suffix(".next/standalone")
        .unwrap_or("")
        .trim_end_matches('/');
    match (project, path) {
        ("", p) => p.to_string(),
        (dir, ".") => dir.to_string(),
        (dir, p) => format!("{dir}/{p}"),
    }
}

/// Runs the health check in the cell, in the server's folder.
async fn check_health(
    b: &Build<'_>,
    runner: &process::Runner<'_>,
    bundle_dir: &Path,
    spec: &ServerSpec,
) -> Result<(), BuildError> {
    let dir = match spec.cwd.as_str() {
        "." => bundle_dir.to_path_buf(),
        cwd => bundle_dir.join(cwd),
    };
    // The check's own lines say whether the server exited or did not answer.
    let label = spec.command.join(" ");
    b.say(
        Step::Activate,
        format!(
            "Starting the server (`{}`) to check it answers GET {} within {HEALTH_TIMEOUT_SECS}s",
            spec.command.join(" "),
            spec.health
        ),
    )
    .await;
    let args = serde_json::to_string(&spec.command[1..]).expect("strings serialize");
    let extra = [
        ("CDEPLOY_START_ARGS".to_string(), args),
        ("CDEPLOY_HEALTH".to_string(), spec.health.clone()),
        (
            "CDEPLOY_HEALTH_SECS".to_string(),
            HEALTH_TIMEOUT_SECS.to_string(),
        ),
        ("PORT".to_string(), CHECK_PORT.to_string()),
        ("HOSTNAME".to_string(), "127.0.0.1".to_string()),
        ("HOST".to_string(), "127.0.0.1".to_string()),
        ("NODE_ENV".to_string(), "production".to_string()),
    ];
    runner
        .exec(
            Step::Activate,
            &["node", "-e", HEALTH_CHECK],
            &dir,
            &label,
            &extra,
        )
        .await
}

/// Uploads the static folders the proxy serves, each under its URL prefix.
async fn upload_assets(
    b: &Build<'_>,
    checkout: &Path,
    server: &ServerPlan,
) -> Result<OutputFiles, BuildError> {
    let mut files = OutputFiles::new();
    for asset in &server.assets {
        // A folder the app does not have (no public/) is nothing to serve.
        if std::fs::symlink_metadata(checkout.join(&asset.dir)).is_err() {
            continue;
        }
        let dir = resolve_inside(checkout, &asset.dir, "a static folder")?;
        if !dir.is_dir() {
            continue;
        }
        let found = upload::upload_dir(b.storage, b.sink, &dir, false, b.cancel).await?;
        let prefix = asset.prefix.trim_end_matches('/');
        files.extend(
            found
                .into_iter()
                .map(|(path, entry)| (format!("{prefix}{path}"), entry)),
        );
    }
    Ok(files)
}

/// The folder of Next.js's standalone `server.js` in its bundle, relative to it: the
/// shallowest one beside a `.next` folder (it mirrors the project's place in the
/// workspace), never inside `node_modules`.
fn find_next_server(bundle: &Path) -> Option<String> {
    let mut level: Vec<PathBuf> = vec![bundle.to_path_buf()];
    for _ in 0..8 {
        let mut next = Vec::new();
        for dir in level {
            // Links are not followed: a build's link could point anywhere.
            let is = |p: &Path, dir: bool| {
                std::fs::symlink_metadata(p)
                    .is_ok_and(|m| if dir { m.is_dir() } else { m.is_file() })
            };
            if is(&dir.join("server.js"), false) && is(&dir.join(".next"), true) {
                let rel = dir.strip_prefix(bundle).ok()?.to_str()?.to_string();
                return Some(if rel.is_empty() { ".".into() } else { rel });
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut subdirs: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter(|e| e.file_name() != "node_modules" && e.file_name() != ".next")
                .map(|e| e.path())
                .collect();
            subdirs.sort();
            next.extend(subdirs);
        }
        level = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_servers_are_found_where_the_workspace_put_them() {
        let d = tempfile::tempdir().unwrap();
        let b = d.path();
        std::fs::create_dir_all(b.join("node_modules/x/.next")).unwrap();
        std::fs::write(b.join("node_modules/x/server.js"), "").unwrap();
        assert_eq!(find_next_server(b), None);
        std::fs::create_dir_all(b.join("apps/web/.next")).unwrap();
        std::fs::write(b.join("apps/web/server.js"), "").unwrap();
        assert_eq!(find_next_server(b).as_deref(), Some("apps/web"));
        std::fs::create_dir_all(b.join(".next")).unwrap();
        std::fs::write(b.join("server.js"), "").unwrap();
        assert_eq!(find_next_server(b).as_deref(), Some("."));
    }
}
