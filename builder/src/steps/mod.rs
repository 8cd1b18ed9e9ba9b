//! A build's steps in order, inside its sandbox cell: get the source, merge the
//! repository's settings, plan, fetch the toolchain, install (through the dependency
//! cache), build, upload the output, activate. [`run_steps`] reads as that list; each
//! step is a function of its own module.
//!
//! # Layout
//! * this file — [`Build`], what every step works with, and [`run_steps`].
//! * `checkout` — the source (a clone or an uploaded tree) and paths resolved inside it.
//! * `tools` — Node.js and the package manager, mounted into the cell with their
//!   launchers.
//! * `install` — the install step and the dependency cache around it (a local folder,
//!   or storage for builders without a disk of their own), with what the log says of it.
//! * `publish` — the output folder, the upload, the root `index.html` check and the
//!   activation.
//! * `server` — a server app's output: its health check in the cell, its static folders
//!   and its bundle uploaded, activation with how it starts.
//! * `unchanged` — the build skipped when an earlier deployment was built from the same
//!   inputs, its output taken instead.

mod checkout;
mod install;
mod publish;
mod server;
mod tools;
mod unchanged;

use std::collections::BTreeMap;
use std::time::Instant;

use cdeploy_core::event::{EventBody, Status, Step};
use cdeploy_core::plan::Plan;
use cdeploy_storage::Storage;
use tokio_util::sync::CancellationToken;

use crate::{process, sandbox, spec, BuildError, BuildSpec, EventSink, Publisher, Workspace};

use checkout::resolve_inside;

/// One build in its cell: what every step reads, writes and reports to.
pub(crate) struct Build<'a> {
    pub spec: &'a BuildSpec,
    pub ws: &'a Workspace<'a>,
    pub cell: &'a sandbox::Cell<'a>,
    /// Where the build reads its source from, and its output and cache go.
    pub storage: &'a dyn Storage,
    pub publisher: &'a dyn Publisher,
    pub sink: &'a dyn EventSink,
    pub cancel: &'a CancellationToken,
    pub deadline: Instant,
}

impl<'a> Build<'a> {
    /// A runner for the build's commands, with `PATH` `path` and the project's
    /// variables on top of the scrubbed environment.
    fn runner(&self, path: &str, project_env: &BTreeMap<String, String>) -> process::Runner<'a> {
        let view = self.ws.sandbox.view(self.cell.mounts());
        process::Runner {
            sink: self.sink,
            cancel: self.cancel,
            deadline: self.deadline,
            timeout: self.spec.timeout,
            env: process::scrubbed_env(self.spec, &view, path, project_env),
            cell: self.cell,
        }
    }

    async fn say(&self, step: Step, line: impl Into<String>) {
        self.sink.emit(EventBody::system(step, line)).await;
    }
}

/// Runs the build's steps; returns the URL it is live at.
pub(crate) async fn run_steps(b: &Build<'_>) -> Result<String, BuildError> {
    b.sink.emit(EventBody::status(Status::Building)).await;
    let checkout = b.cell.mounts().checkout.clone();
    checkout::fetch(b, &b.runner(&b.ws.path, &Default::default()), &checkout).await?;

    // The repository's own cdeploy.toml fills in what the request did not say.
    let settings = spec::Settings::merge(b.spec, &checkout, b.sink).await?;
    let root = settings.build.root.as_deref().unwrap_or(".");
    let project_dir = resolve_inside(&checkout, root, "build.root")?;

    let plan =
        cdeploy_core::plan::plan(&checkout, &project_dir, &settings.build, &settings.runtime);
    let public_was_input = project_dir.join("public").is_dir();
    for line in plan.describe() {
        b.say(Step::Install, line).await;
    }
    if let Some(problem) = &plan.problem {
        return Err(BuildError::failed(problem.clone()));
    }
    // Held to the end: its leases keep the versions it uses from eviction.
    let toolchain = tools::provide(b, &plan).await?;
    let path = match &toolchain {
        Some(tc) => tools::mount(b, tc)?,
        None => b.ws.path.clone(),
    };
    // What makes a framework build its server (Next.js's standalone output).
    let mut env = settings.env.clone();
    if let Some(server) = &plan.server {
        env.extend(server.build_env.iter().cloned());
    }
    let tools = toolchain.as_ref().map(|t| t.key()).unwrap_or_default();
    let dirs = (
        checkout.as_path(),
        project_dir.as_path(),
        plan.install_dir.as_path(),
    );
    if unchanged::reused(b, &settings, dirs, &tools).await? {
        return Ok(b.spec.url.clone());
    }
    let runner = b.runner(&path, &env);
    let use_cache = settings.build.cache != Some(false);
    let dirs = (checkout.as_path(), project_dir.as_path());
    let deps = install::install(b, &plan, &runner, dirs, &tools, use_cache).await?;
    build(b, &plan, &runner, &project_dir).await?;

    if let Some(server) = &plan.server {
        let node = toolchain.as_ref().map(|t| t.node.version.as_str());
        let node = node.ok_or_else(|| BuildError::failed("a server app needs a package.json"))?;
        let site = (settings.site, &settings.rules);
        // The server's bundle may be the install itself (its node_modules): kept for the
        // next build only once the bundle is uploaded (keeping moves it away).
        server::publish(b, &runner, (&checkout, &plan, server), node, site).await?;
        deps.keep_locally(b, &plan).await;
        drop(toolchain);
        return Ok(b.spec.url.clone());
    }
    deps.keep_locally(b, &plan).await;
    let output = publish::output_dir(
        &checkout,
        &project_dir,
        &plan,
        &settings.build,
        public_was_input,
    )?;
    if b.cancel.is_cancelled() {
        return Err(BuildError::Canceled);
    }
    let files = publish::upload(b, &checkout, &project_dir, &plan, &output, &settings.site).await?;
    publish::activate(b, &plan, &files, settings.site, &settings.rules, None).await?;
    drop(toolchain);
    Ok(b.spec.url.clone())
}

/// The build step: the plan's build command, or nothing to build.
async fn build(
    b: &Build<'_>,
    plan: &Plan,
    runner: &process::Runner<'_>,
    project_dir: &std::path::Path,
) -> Result<(), BuildError> {
    match &plan.build {
        Some(cmd) => runner.shell(Step::Build, cmd, project_dir).await,
        None => {
            let line = match plan.server {
                Some(_) => "No build step: the server runs from the files as they are",
                None => "No build step: serving the files as they are",
            };
            b.say(Step::Build, line).await;
            Ok(())
        }
    }
}
