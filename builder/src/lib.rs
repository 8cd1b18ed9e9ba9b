//! The cdeploy build job: fetch the source, install, build, upload, activate.
//!
//! The same code runs in-process in embedded mode (the server's local dispatcher calls
//! [`run`]) and as the `cdeploy-builder` container entrypoint (configured by environment,
//! see [`env`]).
//!
//! # Layout
//! * [`spec`] — what to build ([`BuildSpec`]) and the [`EventSink`] events go to.
//! * [`env`] — reading a [`BuildSpec`] from the builder contract's environment variables.
//! * [`source`] — shallow git clones and materializing uploaded sources from storage.
//! * [`cache`] — `node_modules` kept between builds while the lockfile is unchanged.
//! * [`toolchain`] — Node.js and the package manager, fetched from the npm registry.
//! * [`sandbox`] — where untrusted commands run: namespaces, network policy, limits.
//! * [`process`] — running untrusted commands: scrubbed env, streamed lines, timeout, kill.
//! * [`remote`] — the builder API client: an ECS builder's storage, log and activation.
//! * [`upload`] — walking the output (never leaving it) and uploading missing blobs.
#![deny(unsafe_code)]

pub mod cache;
pub mod env;
pub mod process;
pub mod remote;
// Namespaces, cgroups and the child's set-up between fork and exec need libc.
#[allow(unsafe_code)]
pub mod sandbox;
pub mod source;
pub mod spec;
pub mod toolchain;
pub mod upload;

use std::path::{Path, PathBuf};
use std::time::Instant;

use cdeploy_core::event::{EventBody, Status, Step};
use cdeploy_core::storage::Storage;
use tokio_util::sync::CancellationToken;

pub use spec::{
    BuildSpec, DirectPublisher, EventSink, Outcome, Publisher, Secrets, SourceSpec, Workspace,
};

/// Why a build stopped. The message is what the user sees in `status.error`.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Failed(String),
    #[error("the build was canceled")]
    Canceled,
    #[error("the build timed out after {0} seconds")]
    TimedOut(u64),
    /// A resource limit of the sandbox (the message names it).
    #[error("{0}")]
    Limit(String),
}

impl BuildError {
    pub fn failed(msg: impl Into<String>) -> Self {
        BuildError::Failed(msg.into())
    }
}

/// Runs a whole deployment and always emits a terminal status event, whatever happens.
pub async fn run(
    spec: &BuildSpec,
    ws: &Workspace<'_>,
    storage: &dyn Storage,
    publisher: &dyn Publisher,
    sink: &dyn EventSink,
    cancel: CancellationToken,
) -> Outcome {
    let started = Instant::now();
    let deadline = started + spec.timeout;
    // Every event of the build passes the masker: the log never holds a secret's value.
    let masking = Masking {
        inner: sink,
        masker: spec.secrets.masker(),
    };
    let sink: &dyn EventSink = &masking;
    let result = match prepare(spec, ws).await {
        Ok((mounts, cell_name)) => match ws.sandbox.cell(&cell_name, mounts) {
            Ok(cell) => {
                let r = tokio::select! {
                    r = run_steps(spec, ws, &cell, Io { storage, publisher, sink }, &cancel, deadline) => r,
                    () = tokio::time::sleep_until(deadline.into()) => Err(BuildError::TimedOut(spec.timeout.as_secs())),
                };
                // Whatever path ended the build, nothing it started may outlive it.
                cell.kill_all();
                r
            }
            Err(e) => Err(BuildError::failed(format!(
                "cannot set up the sandbox: {e}"
            ))),
        },
        Err(e) => Err(e),
    };
    let outcome = match result {
        Ok(url) => {
            sink.emit(EventBody::system(
                Step::Activate,
                format!("Deployed in {:.1}s", started.elapsed().as_secs_f64()),
            ))
            .await;
            Outcome::Ready { url }
        }
        Err(BuildError::Canceled) => Outcome::Canceled,
        Err(e) => Outcome::Failed(masking.masker.mask(&e.to_string()).into_owned()),
    };
    sink.emit(outcome.status_event()).await;
    // Deleted once the outcome is out: a node_modules of 10,000 files takes a second to
    // delete, and nobody should wait for it to see the site.
    let work_dir = ws.work_dir.clone();
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(work_dir)).await;
    outcome
}

/// An [`EventSink`] that masks the build's secrets in every event it passes on.
struct Masking<'a> {
    inner: &'a dyn EventSink,
    masker: cdeploy_core::mask::Masker,
}

#[async_trait::async_trait]
impl EventSink for Masking<'_> {
    async fn emit(&self, body: EventBody) {
        self.inner.emit(body.masked(&self.masker)).await;
    }
}

/// Creates the build's directories (owned by the uid builds run as) and names its cell.
async fn prepare(
    spec: &BuildSpec,
    ws: &Workspace<'_>,
) -> Result<(sandbox::Mounts, String), BuildError> {
    let mounts = sandbox::Mounts {
        checkout: ws.work_dir.join("src"),
        home: ws.work_dir.join("home"),
        tmp: ws.work_dir.join("tmp"),
        cache: ws.project_cache.clone(),
        etc: ws.work_dir.join("etc"),
    };
    // Hand-over walks the project cache: off the async threads.
    tokio::task::block_in_place(|| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&ws.work_dir)?;
        // The build uid passes through to its directories; it cannot list or write here.
        std::fs::set_permissions(&ws.work_dir, std::fs::Permissions::from_mode(0o711))?;
        ws.sandbox.prepare(&mounts)
    })
    .map_err(|e| BuildError::failed(format!("cannot create the build directory: {e}")))?;
    Ok((mounts, format!("build-{}", spec.deployment_id)))
}

/// Where a build reads its source from, publishes to, and reports.
#[derive(Clone, Copy)]
struct Io<'a> {
    storage: &'a dyn Storage,
    publisher: &'a dyn Publisher,
    sink: &'a dyn EventSink,
}

async fn run_steps(
    spec: &BuildSpec,
    ws: &Workspace<'_>,
    cell: &sandbox::Cell<'_>,
    io: Io<'_>,
    cancel: &CancellationToken,
    deadline: Instant,
) -> Result<String, BuildError> {
    let Io {
        storage,
        publisher,
        sink,
    } = io;
    sink.emit(EventBody::status(Status::Building)).await;
    let checkout = cell.mounts().checkout.clone();
    let view = ws.sandbox.view(cell.mounts());
    let runner = process::Runner {
        sink,
        cancel,
        deadline,
        timeout: spec.timeout,
        env: process::scrubbed_env(spec, &view, &ws.path, &Default::default()),
        cell,
    };

    // clone
    match &spec.source {
        SourceSpec::Git { url, git_ref } => {
            source::clone(&runner, url, git_ref.as_deref(), &checkout).await?
        }
        SourceSpec::Upload { source_map_key } => {
            source::materialize(storage, sink, source_map_key, &checkout).await?;
            let sb = ws.sandbox;
            tokio::task::block_in_place(|| sb.hand_over(&checkout)).map_err(|e| {
                BuildError::failed(format!("clone: cannot hand the source to the build: {e}"))
            })?;
        }
    }

    // The repository's own cdeploy.toml fills in what the request did not say.
    let settings = spec::Settings::merge(spec, &checkout, sink).await?;
    let runner = process::Runner {
        env: process::scrubbed_env(spec, &view, &ws.path, &settings.env),
        ..runner
    };
    let project_dir = resolve_inside(
        &checkout,
        settings.build.root.as_deref().unwrap_or("."),
        "build.root",
    )?;

    // install + build
    let plan = cdeploy_core::plan::plan(&checkout, &project_dir, &settings.build);
    let public_was_input = project_dir.join("public").is_dir();
    for line in plan.describe() {
        sink.emit(EventBody::system(Step::Install, line)).await;
    }
    if let Some(problem) = &plan.problem {
        return Err(BuildError::failed(problem.clone()));
    }
    let (runner, toolchain) = match (&plan.node, &plan.package_manager) {
        (Some(node), Some(pm)) => {
            let tc = ws.toolchains.provide(node, pm).await?;
            for line in &tc.notes {
                sink.emit(EventBody::system(Step::Install, line.clone()))
                    .await;
            }
            let path = mount_toolchain(ws, cell, &tc)?;
            let runner = process::Runner {
                env: process::scrubbed_env(spec, &view, &path, &settings.env),
                ..runner
            };
            (runner, Some(tc))
        }
        _ => (runner, None),
    };
    let tools = toolchain.as_ref().map(|t| t.key()).unwrap_or_default();
    let use_cache = settings.build.cache != Some(false);
    if !use_cache && plan.install.is_some() {
        sink.emit(EventBody::system(
            Step::Install,
            "Build cache: skipped for this build (--force / build.cache = false)",
        ))
        .await;
    }
    let scope = spec.scope();
    // Which entries this build may use, said in its log: its own scope's only.
    let scope_name = match scope.as_str() {
        "production" => "production's".to_string(),
        "preview" => "previews' (deployed without a branch)".to_string(),
        _ => "this branch's".to_string(),
    };
    let (cache_key, cache_hit) = match (&ws.modules_cache, &plan.install) {
        (Some(dir), Some(cmd)) if use_cache => {
            cache::lookup(
                dir,
                &spec.slug,
                &scope,
                &checkout,
                &plan.install_dir,
                cmd,
                &tools,
            )
            .await
        }
        _ => (None, false),
    };
    // Without a cache folder of its own (an ECS task), the cache lives in storage.
    let stored_key = match &plan.install {
        Some(cmd) if use_cache && ws.modules_cache.is_none() && ws.storage_cache => {
            let (checkout, dir, cmd, tools) = (
                checkout.clone(),
                plan.install_dir.clone(),
                cmd.clone(),
                tools.clone(),
            );
            let (slug, scope) = (spec.slug.clone(), scope.clone());
            tokio::task::spawn_blocking(move || {
                cache::key(&slug, &scope, &checkout, &dir, &cmd, &tools)
            })
            .await
            .ok()
            .flatten()
            .map(|k| cache::stored::storage_key(&spec.slug, &k))
        }
        _ => None,
    };
    let mut stored_hit = false;
    if let Some(key) = &stored_key {
        let owner = ws.sandbox.build_user();
        let line = match cache::stored::restore(storage, key, &plan.install_dir, owner).await {
            Ok(Some(restored)) => {
                stored_hit = true;
                format!(
                    "Build cache: restored node_modules from storage, {scope_name} entry ({:.1} MiB fetched in {:.1}s, unpacked in {:.1}s; lockfile, {tools} and install command unchanged): install skipped",
                    restored.bytes as f64 / 1048576.0,
                    restored.fetch_secs,
                    restored.unpack_secs
                )
            }
            Ok(None) => format!(
                "Build cache: miss (no {scope_name} entry for this lockfile, {tools} and install command; builds use their own scope's entries only): installing"
            ),
            Err(e) => format!("Build cache: cannot restore ({e}): installing"),
        };
        sink.emit(EventBody::system(Step::Install, line)).await;
    }
    match &plan.install {
        Some(_) if cache_hit => {
            sink.emit(EventBody::system(
                Step::Install,
                format!("Restored node_modules from the build cache, {scope_name} entry (lockfile unchanged): install skipped"),
            ))
            .await
        }
        Some(cmd) if cache_key.is_some() => {
            sink.emit(EventBody::system(
                Step::Install,
                format!("Build cache: no {scope_name} entry for this lockfile (builds use their own scope's entries only): installing"),
            ))
            .await;
            runner.shell(Step::Install, cmd, &plan.install_dir).await?
        }
        Some(_) if stored_hit => {}
        Some(cmd) => runner.shell(Step::Install, cmd, &plan.install_dir).await?,
        None => {
            sink.emit(EventBody::system(
                Step::Install,
                "No install step (no package.json)",
            ))
            .await
        }
    }
    // pnpm (and nested npm/yarn installs) give workspace packages node_modules of
    // their own: an entry of the root's alone would break the next build.
    let keepable = match &plan.install {
        Some(_) if cache_key.is_some() || stored_key.is_some() => {
            let dir = plan.install_dir.clone();
            let nested = tokio::task::spawn_blocking(move || cache::nested_modules(&dir))
                .await
                .unwrap_or(true);
            if nested && !cache_hit && !stored_hit {
                sink.emit(EventBody::system(
                    Step::Install,
                    "Build cache: not kept: workspace packages have node_modules of their own",
                ))
                .await;
            }
            !nested
        }
        _ => false,
    };
    // What the install made (or the restore brought back), to keep locally only if the
    // build leaves it so: its digest, taken before the build step.
    let installed = match (&cache_key, keepable) {
        (Some(_), true) => cache::installed_digest_of(&plan.install_dir).await,
        _ => None,
    };
    // Saved right after a fresh install, before the build adds its own files. The
    // builder reads the tree as itself: nothing of the build may still run and swap a
    // folder for a link meanwhile (the pid namespace ended with the install; the cgroup
    // is emptied too).
    if let (Some(key), false, true) = (&stored_key, stored_hit, keepable) {
        cell.kill_all();
        let line = match cache::stored::save(storage, key, &plan.install_dir).await {
            Ok(size) => format!(
                "Build cache: saved node_modules ({:.1} MiB) for the next build",
                size as f64 / 1048576.0
            ),
            Err(e) => format!("Build cache: not saved: {e}"),
        };
        sink.emit(EventBody::system(Step::Install, line)).await;
    }
    match &plan.build {
        Some(cmd) => runner.shell(Step::Build, cmd, &project_dir).await?,
        None => {
            sink.emit(EventBody::system(
                Step::Build,
                "No build step: serving the files as they are",
            ))
            .await
        }
    }
    if let (Some(dir), Some(key), Some(installed)) = (&ws.modules_cache, &cache_key, &installed) {
        if cache::store(dir, key, &plan.install_dir, installed).await == cache::Kept::Changed {
            sink.emit(EventBody::system(
                Step::Build,
                "Build cache: node_modules not kept: the build changed what the install made (only tools' cache folders such as node_modules/.cache and .vite may change); the next build installs afresh",
            ))
            .await;
        }
    }
    let output = cdeploy_core::plan::output_dir(
        &project_dir,
        &plan,
        settings.build.output.is_some(),
        public_was_input,
    )
    .map_err(|e| BuildError::failed(e.to_string()))?;
    // `output` is relative to the project folder (`build.root`), like everything the
    // build writes.
    let output_rel = match settings.build.root.as_deref() {
        Some(root) if root != "." => format!("{}/{output}", root.trim_end_matches('/')),
        _ => output.clone(),
    };
    let output = resolve_inside(&checkout, &output_rel, "build.output")?;
    if cancel.is_cancelled() {
        return Err(BuildError::Canceled);
    }

    // upload
    sink.emit(EventBody::status(Status::Uploading)).await;
    let exclude_root_files = plan.build.is_none() && output == project_dir;
    let files = upload::upload_dir(storage, sink, &output, exclude_root_files, cancel).await?;
    let shown = output.strip_prefix(&checkout).unwrap_or(&output).display();
    if files.is_empty() {
        return Err(BuildError::failed(format!(
            "the output folder {shown} is empty"
        )));
    }
    // Never `ready` for a site that answers 404 at its root: that is the wrong folder.
    if settings.site.require_index != Some(false) && !files.contains_key("/index.html") {
        return Err(BuildError::failed(no_index_message(
            &shown.to_string(),
            &files,
        )));
    }

    // activate
    sink.emit(EventBody::system(
        Step::Activate,
        format!("Writing the manifest for {} files", files.len()),
    ))
    .await;
    if cancel.is_cancelled() {
        return Err(BuildError::Canceled);
    }
    // The framework's preset decides what the configuration leaves open.
    let mut site_cfg = settings.site;
    if site_cfg.spa.is_none() {
        site_cfg.spa = plan.spa;
    }
    let site = publisher
        .activate(spec, &files, &site_cfg)
        .await
        .map_err(BuildError::Failed)?;
    sink.emit(EventBody::system(
        Step::Activate,
        format!(
            "Site settings: spa={} clean_urls={}",
            site.spa, site.clean_urls
        ),
    ))
    .await;
    Ok(spec.url.clone())
}

/// Mounts the toolchain read-only into the build's cell and writes its launchers;
/// returns the `PATH` build commands get (launchers first, then Node's own `bin`).
fn mount_toolchain(
    ws: &Workspace<'_>,
    cell: &sandbox::Cell<'_>,
    tc: &toolchain::Toolchain,
) -> Result<String, BuildError> {
    let mut binds = vec![
        (tc.node.dir.clone(), "/opt/cdeploy/node"),
        (tc.npm.dir.clone(), "/opt/cdeploy/npm"),
    ];
    if let Some((_, f)) = &tc.pm {
        binds.push((f.dir.clone(), "/opt/cdeploy/pm"));
    }
    let bin = ws.work_dir.join("bin");
    binds.push((bin.clone(), "/opt/cdeploy/bin"));
    let seen = cell.mount_tools(&binds);
    let seen_of = |host: &Path| {
        binds
            .iter()
            .zip(&seen)
            .find(|((h, _), _)| h == host)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| host.to_path_buf())
    };
    toolchain::write_launchers(&bin, tc, seen_of)
        .map_err(|e| BuildError::failed(format!("cannot write the toolchain's launchers: {e}")))?;
    Ok(format!(
        "{}:{}:{}",
        seen_of(&bin).display(),
        seen_of(&tc.node.dir).join("bin").display(),
        ws.path
    ))
}

/// Why an output without a root `index.html` is refused, naming what was found.
fn no_index_message(folder: &str, files: &cdeploy_core::publish::OutputFiles) -> String {
    let mut pages: Vec<&str> = files
        .keys()
        .filter(|p| p.ends_with("/index.html"))
        .map(String::as_str)
        .collect();
    pages.sort_by_key(|p| p.len());
    let found = match pages.first() {
        Some(nested) => {
            format!("its index.html is at {nested}: set `output` in [build] to that folder")
        }
        None => {
            let some: Vec<&str> = files.keys().take(5).map(String::as_str).collect();
            format!(
                "it has {} files ({}{}) and no index.html; set `output` in [build] to the folder your build writes",
                files.len(),
                some.join(", "),
                if files.len() > some.len() { ", …" } else { "" }
            )
        }
    };
    format!(
        "the output folder {folder} has no index.html at its root: {found}, or `require_index = false` in [site] for a site without one"
    )
}

pub(crate) use cdeploy_core::plan::{read_repo_bytes, read_repo_file};

/// Joins a user-given relative path to `root` and proves the result stays inside it,
/// symlinks resolved (a `dist -> /etc` symlink must not widen what gets uploaded).
fn resolve_inside(root: &Path, rel: &str, key: &str) -> Result<PathBuf, BuildError> {
    cdeploy_core::config::check_relative_path(rel)
        .map_err(|m| BuildError::failed(format!("{key} {m}")))?;
    let root = root
        .canonicalize()
        .map_err(|e| BuildError::failed(format!("cannot resolve the checkout: {e}")))?;
    let joined = root.join(rel);
    let real = joined.canonicalize().map_err(|_| {
        BuildError::failed(format!("{key} {rel:?} does not exist in the repository"))
    })?;
    if !real.starts_with(&root) {
        return Err(BuildError::failed(format!(
            "{key} {rel:?} points outside the repository"
        )));
    }
    if !real.is_dir() {
        return Err(BuildError::failed(format!(
            "{key} {rel:?} is not a directory"
        )));
    }
    Ok(real)
}
