//! The cdeploy build job: fetch the source, install, build, upload, activate.
//!
//! The same code runs in-process in embedded mode (the server's local dispatcher calls
//! [`run`]) and as the `cdeploy-builder` container entrypoint (configured by environment,
//! see [`env`](mod@env) and [`standalone`]).
//!
//! # Layout
//! * [`spec`] — what to build ([`BuildSpec`]) and the [`EventSink`] events go to.
//! * `steps` — a build's steps in order (source, settings, toolchain, install, build,
//!   upload, activate), each a function of its own.
//! * [`env`](mod@env) — reading a [`BuildSpec`] from the builder contract's environment variables.
//! * [`source`] — shallow git clones and materializing uploaded sources from storage.
//! * [`cache`] — `node_modules` kept between builds while the lockfile is unchanged.
//! * `inputs` — what a build reads, hashed: the digest that lets a build whose inputs
//!   an earlier deployment had take that one's output instead.
//! * [`toolchain`] — Node.js and the package manager, fetched from the npm registry.
//! * [`sandbox`] — where untrusted commands run: namespaces, network policy, limits.
//! * [`process`] — running untrusted commands: scrubbed env, streamed lines, timeout, kill.
//! * [`remote`] — the builder API client: an ECS builder's storage, log and activation.
//! * [`upload`] — walking the output (never leaving it) and uploading missing blobs.
//! * [`standalone`] — the builder as a process of its own (the `cdeploy-builder`
//!   binary): API and trusted modes, where its events go, its storage, SIGTERM.
//!
//! `unsafe` code is denied in the whole crate but one module, `sandbox::sys` (the libc
//! calls of namespaces, cgroups and the child's set-up between fork and exec), where
//! it is allowed by name.
#![deny(unsafe_code)]

pub mod cache;
pub mod env;
mod inputs;
pub mod process;
pub mod remote;
pub mod sandbox;
pub mod source;
pub mod spec;
pub mod standalone;
mod steps;
pub mod toolchain;
pub mod upload;

use std::time::Instant;

use cdeploy_core::event::{EventBody, Step};
use cdeploy_storage::Storage;
use tokio_util::sync::CancellationToken;

pub use spec::{
    ActivateError, BuildSpec, DirectPublisher, EventSink, Outcome, Publisher, ReuseSpec, Reused,
    Secrets, SourceSpec, Workspace,
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
    // Every event of the build passes the masker: the log never holds a secret's value.
    let masking = Masking {
        inner: sink,
        masker: spec.secrets.masker(),
    };
    let sink: &dyn EventSink = &masking;
    let io = Io {
        storage,
        publisher,
        sink,
    };
    let outcome = match in_cell(spec, ws, io, &cancel, started + spec.timeout).await {
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

/// Where a build reads its source from, publishes to, and reports.
struct Io<'a> {
    storage: &'a dyn Storage,
    publisher: &'a dyn Publisher,
    sink: &'a dyn EventSink,
}

/// The build's steps in its own sandbox cell, until they end or the deadline comes;
/// nothing they started outlives them.
async fn in_cell(
    spec: &BuildSpec,
    ws: &Workspace<'_>,
    io: Io<'_>,
    cancel: &CancellationToken,
    deadline: Instant,
) -> Result<String, BuildError> {
    let (mounts, cell_name) = prepare(spec, ws).await?;
    let cell = ws
        .sandbox
        .cell(&cell_name, mounts)
        .map_err(|e| BuildError::failed(format!("cannot set up the sandbox: {e}")))?;
    let build = steps::Build {
        spec,
        ws,
        cell: &cell,
        storage: io.storage,
        publisher: io.publisher,
        sink: io.sink,
        cancel,
        deadline,
    };
    let r = tokio::select! {
        r = steps::run_steps(&build) => r,
        () = tokio::time::sleep_until(deadline.into()) => Err(BuildError::TimedOut(spec.timeout.as_secs())),
    };
    // Whatever path ended the build, nothing it started may outlive it.
    cell.kill_all();
    r
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

pub(crate) use cdeploy_core::plan::{read_repo_bytes, read_repo_file};

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Checks that the `# Layout` map in `dir/map` names every module of `dir`, and
    /// the same for each folder module under it.
    fn check_layout(dir: &Path, map: &str) {
        let text = std::fs::read_to_string(dir.join(map)).unwrap();
        let docs: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .skip_while(|l| l.trim() != "# Layout")
            .collect();
        assert!(
            !docs.is_empty(),
            "{}: no # Layout map",
            dir.join(map).display()
        );
        let layout = docs.join("\n");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let module = if path.join("mod.rs").is_file() {
                check_layout(&path, "mod.rs");
                name
            } else if let Some(stem) = name.strip_suffix(".rs") {
                if matches!(stem, "lib" | "main" | "mod") {
                    continue;
                }
                stem.to_string()
            } else {
                continue;
            };
            assert!(
                layout.contains(&format!("`{module}`")),
                "the # Layout map of {} does not name `{module}`",
                dir.join(map).display()
            );
        }
    }

    #[test]
    fn layout_maps_name_every_module() {
        check_layout(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), "lib.rs");
    }
}
