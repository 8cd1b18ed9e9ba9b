//! `cdeploy deploy [DIR]`: upload the source (default), ask for a git clone, or upload a
//! prebuilt folder; then stream the build and print the URL.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cdeploy_core::api::{self, codes, CreateDeployment, GitSource};
use cdeploy_core::config;
use cdeploy_core::event::Status;
use cdeploy_core::{git, ids};
use reqwest::Method;

use crate::client::{Client, Waited};
use crate::exit::{CliError, CliResult, ExitStatus};
use crate::files::{self, FileSet};
use crate::printer::Renderer;
use crate::upload::upload_missing;
use crate::Globals;

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
    /// Build from scratch: neither restore nor save the dependency cache.
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
    let dir = args
        .dir
        .canonicalize()
        .map_err(|e| CliError::usage(format!("{}: {e}", args.dir.display())))?;
    if !dir.is_dir() {
        return Err(CliError::usage(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    // Run inside a monorepo's package, deploy the workspace with that package as root.
    let located = locate_project(&dir);
    let (dir, slug_dir) = match &located {
        Some((upload, root)) => {
            g.printer.info(format!(
                "{} is part of the workspace at {}: uploading that, with [build] root = {root:?}",
                dir.display(),
                upload.display()
            ));
            (upload.clone(), dir.clone())
        }
        None => (dir.clone(), dir),
    };
    let loaded = config::load_dir(&dir).map_err(|e| {
        CliError::config(e.to_string())
            .with_hint("fix the file, or run `cdeploy init` to write a fresh one")
    })?;
    for w in &loaded.warnings {
        g.printer.warn(w);
    }
    let mut cfg = loaded.config;
    if let Some((_, root)) = &located {
        if cfg.build.root.is_none() {
            cfg.build.root = Some(root.clone());
        }
    }
    if args.force {
        cfg.build.cache = Some(false);
    }
    if args.dry {
        return dry_run(g, &dir, &cfg.build);
    }
    let slug = resolve_slug(args.slug.as_deref(), cfg.slug.as_deref(), &slug_dir)?;
    let git_url = args.git.clone().or(cfg.git.clone());
    let git_ref = args.git_ref.clone().or(cfg.branch.clone());
    if let Some(url) = &git_url {
        git::validate_git_url(url).map_err(|e| {
            CliError::usage(format!("invalid git URL {:?}: {e}", git::redact_url(url)))
        })?;
    }
    if let Some(r) = &git_ref {
        git::validate_git_ref(r).map_err(|e| CliError::usage(e.to_string()))?;
    }
    if git_ref.is_some() && git_url.is_none() {
        return Err(CliError::usage(
            "--ref needs --git (or `git` in cdeploy.toml)",
        ));
    }

    // Nothing listening at the default local API: start the embedded server.
    crate::commands::server::ensure_running(g).await?;
    let client = Client::new(g)?;
    let mut renderer = Renderer::new(g.printer);
    let mut body = CreateDeployment {
        build: (!cfg.build.is_empty()).then(|| cfg.build.clone()),
        env: (!cfg.env.is_empty()).then(|| cfg.env.clone()),
        site: (!cfg.site.is_empty()).then_some(cfg.site),
        preview: args.preview,
        branch: match &args.branch {
            Some(b) => Some(b.clone()),
            None if args.preview => git_ref.clone().or_else(|| current_branch(&dir)),
            None => None,
        },
        ..Default::default()
    };
    let uploads: FileSet;
    if let Some(out) = &args.prebuilt {
        let out = dir.join(out);
        if !out.is_dir() {
            return Err(CliError::usage(format!(
                "--prebuilt {}: no such folder",
                out.display()
            )));
        }
        uploads = scan(g, &out, true)?;
        if uploads.is_empty() {
            return Err(CliError::usage(format!(
                "--prebuilt {}: the folder is empty",
                out.display()
            )));
        }
        body.files = Some(files::hashes(&uploads));
        body.build = None;
        g.printer
            .info(format!("Deploying prebuilt {} to {slug}", out.display()));
    } else if let Some(url) = git_url {
        uploads = FileSet::new();
        g.printer.info(format!(
            "Deploying {}{} to {slug}",
            git::redact_url(&url),
            git_ref
                .as_deref()
                .map(|r| format!(" at {r}"))
                .unwrap_or_default()
        ));
        body.git = Some(GitSource { url, git_ref });
    } else {
        uploads = scan(g, &dir, false)?;
        if uploads.is_empty() {
            return Err(CliError::usage(format!(
                "{} has no files to deploy",
                dir.display()
            )));
        }
        body.source = Some(files::hashes(&uploads));
        g.printer
            .info(format!("Deploying {} to {slug}", dir.display()));
    }

    if !uploads.is_empty() {
        upload_missing(&client, &renderer, &uploads, None).await?;
    }
    let deployment = create(&client, &renderer, &slug, &body, &uploads).await?;
    match &deployment.branch_url {
        Some(branch_url) => g.printer.info(format!(
            "Preview {} queued · {} · {branch_url}",
            deployment.id, deployment.preview_url
        )),
        None if deployment.preview => g.printer.info(format!(
            "Preview {} queued · {}",
            deployment.id, deployment.preview_url
        )),
        None => g.printer.info(format!(
            "Deployment {} queued · {}",
            deployment.id, deployment.preview_url
        )),
    }

    if args.no_wait {
        report(g, &deployment, None, client.waited());
        return Ok(ExitStatus::Success);
    }
    let deadline = args
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s));
    let following =
        crate::follow::follow(&client, &deployment.id, 0, deadline, |e| renderer.event(e));
    let followed = tokio::select! {
        r = following => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    let terminal = match followed {
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            renderer.finish(false);
            return Err(e);
        }
        None => {
            renderer.finish(false);
            // Only the CLI stops: the build runs on the server.
            let (id, slug) = (&deployment.id, &deployment.slug);
            let msg = format!(
                "Stopped following {id}; the build keeps running on the server. `cdeploy logs {slug}` follows it again, `cdeploy cancel {id}` stops it."
            );
            if g.printer.json {
                g.printer.json_result(&serde_json::json!({
                    "error": { "code": "interrupted", "message": msg },
                    "id": id,
                }));
            } else {
                eprintln!("\n{msg}");
            }
            return Ok(ExitStatus::Interrupted);
        }
    };
    let status = terminal.body.terminal_status().unwrap_or(Status::Failed);
    let mut final_state = client
        .deployment(&deployment.id)
        .await
        .unwrap_or(deployment);
    // The log's terminal event is the last word; with remote builders the stored status
    // can trail it for a moment.
    final_state.status = status;
    let event_error = match &terminal.body {
        cdeploy_core::event::EventBody::Status { error, .. } => error.clone(),
        _ => None,
    };
    let error = event_error.or_else(|| final_state.error.clone());
    report(g, &final_state, error.as_deref(), client.waited());
    Ok(match status {
        Status::Ready => ExitStatus::Success,
        _ => ExitStatus::BuildFailed,
    })
}

/// `dir` is a package of a workspace (a package.json, no lockfile and no cdeploy.toml of
/// its own) inside a git repository whose lockfile is further up: the folder to upload
/// (the workspace root) and the package's path in it. `None`: deploy `dir` as it is.
fn locate_project(dir: &Path) -> Option<(PathBuf, String)> {
    let own = |d: &Path| {
        d.join(config::FILE_NAME).is_file()
            || cdeploy_core::plan::LOCKFILES
                .iter()
                .any(|l| d.join(l).is_file())
    };
    if own(dir) || !dir.join("package.json").is_file() {
        return None;
    }
    let repo = dir.ancestors().skip(1).find(|a| a.join(".git").exists())?;
    let workspace = dir
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(repo))
        .find(|a| own(a))?;
    let rel = dir.strip_prefix(workspace).ok()?.to_str()?.to_string();
    Some((workspace.to_path_buf(), rel))
}

/// `--dry`: the plan a build of `dir` would follow, from the same code the builder runs.
fn dry_run(g: &Globals, dir: &Path, build: &config::BuildConfig) -> CliResult {
    let project_dir = dir.join(build.root.as_deref().unwrap_or("."));
    if !project_dir.is_dir() {
        return Err(CliError::config(format!(
            "build.root {:?} is not a folder of {}",
            build.root.as_deref().unwrap_or("."),
            dir.display()
        )));
    }
    let plan = cdeploy_core::plan::plan(dir, &project_dir, build);
    if g.printer.json {
        let mut doc = serde_json::to_value(&plan).expect("serializable");
        doc["root"] = build.root.clone().unwrap_or_else(|| ".".into()).into();
        g.printer.json_result(&doc);
    } else {
        let none = || "none".to_string();
        let mut rows: Vec<(&str, String)> = vec![(
            "Framework",
            plan.framework
                .map(|f| f.name.to_string())
                .unwrap_or_else(|| {
                    if plan.node.is_some() {
                        "none detected".into()
                    } else {
                        "none (a static folder)".into()
                    }
                }),
        )];
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
            rows.push((
                "Package manager",
                format!("{} {} {}", pm.name.label(), pm.version, pm.source),
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
        rows.push(("Build", plan.build.clone().unwrap_or_else(none)));
        rows.push((
            "Output",
            format!("{} ({})", plan.output.dir, plan.output.source),
        ));
        if let Some(spa) = plan.spa {
            rows.push(("SPA fallback", if spa { "on" } else { "off" }.into()));
        }
        let text: Vec<String> = rows
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

/// The branch checked out in `dir`, when it is a git work tree on a branch.
fn current_branch(dir: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--abbrev-ref", "HEAD"])
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let branch = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !branch.is_empty() && branch != "HEAD").then_some(branch)
}

/// The slug `cdeploy deploy` run in `dir` would use (`cdeploy open` with no slug).
pub fn slug_of_dir(dir: &Path) -> Result<String, CliError> {
    let dir = dir
        .canonicalize()
        .map_err(|e| CliError::usage(format!("{}: {e}", dir.display())))?;
    let config_dir = match locate_project(&dir) {
        Some((workspace, _)) => workspace,
        None => dir.clone(),
    };
    let cfg = config::load_dir(&config_dir)
        .map_err(|e| CliError::config(e.to_string()))?
        .config;
    resolve_slug(None, cfg.slug.as_deref(), &dir)
}

fn resolve_slug(flag: Option<&str>, file: Option<&str>, dir: &Path) -> Result<String, CliError> {
    let slug = match flag.or(file) {
        Some(s) => s.to_string(),
        None => {
            let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
            ids::sanitize_slug(name).ok_or_else(|| {
                CliError::usage(format!(
                    "cannot make a slug from the directory name {name:?}"
                ))
                .with_hint("pass --slug NAME")
            })?
        }
    };
    ids::validate_slug(&slug)
        .map_err(|e| CliError::usage(format!("invalid slug {slug:?}: {e}")))?;
    Ok(slug)
}

fn scan(g: &crate::Globals, dir: &Path, prebuilt: bool) -> Result<FileSet, CliError> {
    let result = if prebuilt {
        files::output_files(dir)
    } else {
        files::source_files(dir)
    };
    let (set, skipped) =
        result.map_err(|e| CliError::usage(format!("cannot read {}: {e}", dir.display())))?;
    for s in skipped {
        g.printer.warn(format!("skipping {s}"));
    }
    Ok(set)
}

/// Creates the deployment, uploading what the server reports missing, and retrying with
/// the same Idempotency-Key so a lost answer never makes a second deployment.
async fn create(
    client: &Client,
    renderer: &Renderer,
    slug: &str,
    body: &CreateDeployment,
    uploads: &FileSet,
) -> Result<api::Deployment, CliError> {
    let mut key = ids::random_id(24);
    let path = format!("/v1/projects/{slug}/deployments");
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        let rb = client
            .request(Method::POST, &path)
            .header("Idempotency-Key", &key)
            .json(body);
        match client.send_raw::<api::Deployment>(rb).await {
            Ok(Ok(d)) => return Ok(d),
            // The server recorded that deployment as failed for want of room: wait, and
            // ask for a new one (under a new key, or the failed one would be the answer).
            Ok(Err(f))
                if f.body
                    .as_ref()
                    .is_some_and(|b| b.error.code == codes::QUEUE_FULL) =>
            {
                let reason = f.body.as_ref().map(|b| b.error.message.clone());
                let waited = client
                    .wait_out(f.retry_after, reason.as_deref().unwrap_or("busy"))
                    .await;
                if !waited {
                    return Err(client.failure(f));
                }
                key = ids::random_id(24);
                attempt = 0;
            }
            Ok(Err(f)) => {
                let missing = f
                    .body
                    .as_ref()
                    .filter(|b| b.error.code == codes::MISSING_FILES)
                    .and_then(|b| b.error.missing.clone());
                match missing {
                    Some(m) if attempt < 4 => {
                        upload_missing(client, renderer, uploads, Some(m)).await?
                    }
                    _ => return Err(client.failure(f)),
                }
            }
            Err(e) if attempt < 4 && e.code != "unreachable" => {
                tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Prints the result: the URL on stdout, or the JSON document (with the time spent
/// waiting out `429`s, when there was any).
fn report(g: &Globals, d: &api::Deployment, error: Option<&str>, waited: Waited) {
    if g.printer.json {
        let mut v = serde_json::json!({
            "id": d.id,
            "slug": d.slug,
            "status": d.status,
            "url": d.url,
            "preview_url": d.preview_url,
            "preview": d.preview,
        });
        if let Some(b) = &d.branch_url {
            v["branch_url"] = serde_json::json!(b);
        }
        if waited.retries > 0 {
            v["rate_limited"] = serde_json::json!({
                "retries": waited.retries,
                "waited_s": (waited.total.as_secs_f64() * 10.0).round() / 10.0,
            });
        }
        if let Some(e) =
            error.filter(|_| d.status == Status::Failed || d.status == Status::Canceled)
        {
            v["error"] = serde_json::json!({ "code": "build_failed", "message": e });
        }
        g.printer.json_result(&v);
        return;
    }
    match d.status {
        Status::Ready if d.preview => {
            g.printer.info(format!(
                "{} preview of {} is live{}",
                console::style("✓").green().bold(),
                d.slug,
                d.branch_url
                    .as_deref()
                    .map(|b| format!(" (also at {b})"))
                    .unwrap_or_default()
            ));
            g.printer.result(&d.preview_url);
        }
        Status::Ready => {
            g.printer.info(format!(
                "{} {} is live",
                console::style("✓").green().bold(),
                d.slug
            ));
            g.printer.result(&d.url);
        }
        Status::Failed => {
            eprintln!(
                "{} {}",
                console::style("✗ deployment failed:").red().bold(),
                error.unwrap_or("unknown error")
            );
            eprintln!(
                "  {} cdeploy logs {} --deployment {}",
                console::style("full log:").cyan(),
                d.slug,
                d.id
            );
        }
        Status::Canceled => eprintln!("{}", console::style("deployment canceled").yellow()),
        _ => g.printer.result(&d.preview_url),
    }
}
