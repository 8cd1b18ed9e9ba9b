//! `cdeploy deploy [DIR]`: upload the source (default), ask for a git clone, or upload a
//! prebuilt folder; then stream the build and print the URL.
//!
//! # Layout
//! * `mod.rs` — the arguments and the flow, step by step.
//! * [`settings`] — DIR (or its workspace), its `cdeploy.toml` with the flags applied,
//!   the slug and the git source, all checked before anything is sent.
//! * [`dry`] — `--dry`: the build plan, printed instead of deploying.
//! * [`source`] — what is deployed: the request body (a prebuilt folder, a git clone or
//!   the source) and the local files it names.
//! * [`create`] — creating the deployment under one Idempotency-Key, uploading what the
//!   server still lacks.
//! * [`wait`] — following the build's log to its end, or until Ctrl-C.
//! * [`report`] — the result (the URL, or one JSON document) and the exit status.

mod create;
mod dry;
mod report;
mod settings;
mod source;
mod wait;

use std::path::PathBuf;

use crate::client::Client;
use crate::exit::{CliResult, ExitStatus};
use crate::printer::Renderer;
use crate::upload::upload_missing;
use crate::Globals;

use settings::{Project, Target};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to deploy (its cdeploy.toml is read).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Project slug (default: `slug` in cdeploy.toml, else the directory name).
    #[arg(long)]
    slug: Option<String>,
    /// Have the server clone this repository instead of uploading the directory.
    #[arg(long, conflicts_with = "prebuilt")]
    git: Option<String>,
    /// Branch, tag or commit to build with --git.
    #[arg(long = "ref", value_name = "REF")]
    git_ref: Option<String>,
    /// Upload an already built folder; nothing is built.
    #[arg(long, value_name = "OUT")]
    prebuilt: Option<PathBuf>,
    /// Return once the deployment is queued.
    #[arg(long)]
    no_wait: bool,
    /// Give up waiting after this many seconds (the build goes on).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Print the build plan (framework, Node.js and why, package manager, commands,
    /// output folder) and exit: nothing is uploaded or built. Exit 1 when the plan
    /// already shows the build would fail.
    #[arg(long, conflicts_with_all = ["git", "prebuilt"])]
    dry: bool,
    /// Build from scratch: always build (even when a ready deployment was built from the
    /// same inputs), and neither restore nor save the dependency cache.
    #[arg(long, alias = "no-cache", conflicts_with = "prebuilt")]
    force: bool,
    /// Deploy a preview: served at its own URL and its branch's alias
    /// `<branch>--<slug>`; production stays as it is.
    #[arg(long)]
    preview: bool,
    /// The branch of a preview (default: --ref with --git, else the checked-out branch).
    #[arg(long, requires = "preview", value_name = "NAME")]
    branch: Option<String>,
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let project = Project::read(g, &args)?;
    if args.dry {
        return dry::run(
            g,
            &project.dir,
            (&project.config.build, &project.config.runtime),
        );
    }
    let target = Target::resolve(&args, &project)?;

    // Nothing listening at the default local API: start the embedded server.
    crate::local_server::ensure_running(g).await?;
    let client = Client::new(g)?;
    crate::oidc::use_ci_identity(g, &client, &target.slug).await?;
    let mut renderer = Renderer::new(g.printer);
    let (body, uploads) = source::prepare(g, &args, &project, &target)?;
    if !uploads.is_empty() {
        upload_missing(&client, &renderer, &uploads, None).await?;
    }
    let deployment = create::create(&client, &renderer, &target.slug, &body, &uploads).await?;
    report::queued(g, &deployment);

    if args.no_wait {
        report::report(g, &deployment, None, client.waited());
        return Ok(ExitStatus::Success);
    }
    wait::follow(g, &client, &mut renderer, deployment, args.timeout).await
}
