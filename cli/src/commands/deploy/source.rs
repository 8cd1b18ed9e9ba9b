//! What is deployed: the `POST …/deployments` body for a prebuilt folder (`--prebuilt`),
//! a clone the server makes (`--git`), or the source in DIR, and the local files it names
//! by hash (uploaded before the deployment is created).

use std::path::Path;

use cdeploy_core::api::{CreateDeployment, GitSource};
use cdeploy_core::git;

use super::settings::{Project, Target};
use super::Args;
use crate::exit::CliError;
use crate::files::{self, FileSet};
use crate::Globals;

/// The request body and the files to upload (none for a git clone); says what is
/// deployed where.
pub(super) fn prepare(
    g: &Globals,
    args: &Args,
    project: &Project,
    target: &Target,
) -> Result<(CreateDeployment, FileSet), CliError> {
    let cfg = &project.config;
    let slug = &target.slug;
    let mut body = CreateDeployment {
        build: (!cfg.build.is_empty()).then(|| cfg.build.clone()),
        env: (!cfg.env.is_empty()).then(|| cfg.env.clone()),
        site: (!cfg.site.is_empty()).then_some(cfg.site),
        preview: args.preview,
        branch: match &args.branch {
            Some(b) => Some(b.clone()),
            None if args.preview => target
                .git_ref
                .clone()
                .or_else(|| current_branch(&project.dir)),
            None => None,
        },
        ..Default::default()
    };
    let uploads = if let Some(out) = &args.prebuilt {
        let out = project.dir.join(out);
        let uploads = prebuilt_files(g, &out)?;
        body.files = Some(files::hashes(&uploads));
        body.build = None;
        body.rules = (!cfg.rules.is_empty()).then(|| cfg.rules.clone());
        g.printer
            .info(format!("Deploying prebuilt {} to {slug}", out.display()));
        uploads
    } else if let Some(url) = &target.git_url {
        g.printer.info(format!(
            "Deploying {}{} to {slug}",
            git::redact_url(url),
            target
                .git_ref
                .as_deref()
                .map(|r| format!(" at {r}"))
                .unwrap_or_default()
        ));
        body.git = Some(GitSource {
            url: url.clone(),
            git_ref: target.git_ref.clone(),
        });
        FileSet::new()
    } else {
        let uploads = source_files(g, &project.dir)?;
        body.source = Some(files::hashes(&uploads));
        g.printer
            .info(format!("Deploying {} to {slug}", project.dir.display()));
        uploads
    };
    Ok((body, uploads))
}

/// Every file of a prebuilt output folder; it must exist and hold something.
fn prebuilt_files(g: &Globals, out: &Path) -> Result<FileSet, CliError> {
    if !out.is_dir() {
        return Err(CliError::usage(format!(
            "--prebuilt {}: no such folder",
            out.display()
        )));
    }
    let uploads = scan(g, out, true)?;
    if uploads.is_empty() {
        return Err(CliError::usage(format!(
            "--prebuilt {}: the folder is empty",
            out.display()
        )));
    }
    Ok(uploads)
}

/// The source files of `dir` (ignore rules honoured); there must be some.
fn source_files(g: &Globals, dir: &Path) -> Result<FileSet, CliError> {
    let uploads = scan(g, dir, false)?;
    if uploads.is_empty() {
        return Err(CliError::usage(format!(
            "{} has no files to deploy",
            dir.display()
        )));
    }
    Ok(uploads)
}

/// Walks and hashes `dir`, warning about each file skipped (symlinks, non-UTF-8 names).
fn scan(g: &Globals, dir: &Path, prebuilt: bool) -> Result<FileSet, CliError> {
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
