//! What a deploy is asked to do, read and checked before anything is sent: DIR (or the
//! workspace it is a package of), its `cdeploy.toml` with the flags applied, the slug,
//! and the git repository and ref the server would clone.

use std::path::{Path, PathBuf};

use cdeploy_core::config::{self, ProjectConfig};
use cdeploy_core::git;

use super::Args;
use crate::exit::CliError;
use crate::project;
use crate::Globals;

/// The folder deployed and its configuration.
pub(super) struct Project {
    /// The folder uploaded and planned: DIR, or the root of the workspace DIR is a
    /// package of.
    pub dir: PathBuf,
    /// The folder the slug is named after when nothing names it: DIR itself.
    pub slug_dir: PathBuf,
    /// `cdeploy.toml`, with the workspace's build root and `--force` applied.
    pub config: ProjectConfig,
}

impl Project {
    /// Reads DIR and its configuration; in a workspace's package, says that the
    /// workspace is uploaded instead.
    pub fn read(g: &Globals, args: &Args) -> Result<Project, CliError> {
        let dir = existing_dir(&args.dir)?;
        // Run inside a monorepo's package, deploy the workspace with that package as root.
        let located = project::locate(&dir);
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
        let mut config = load(g, &dir)?;
        if let Some((_, root)) = &located {
            if config.build.root.is_none() {
                config.build.root = Some(root.clone());
            }
        }
        if args.force {
            config.build.cache = Some(false);
            config.build.skip_unchanged = Some(false);
        }
        Ok(Project {
            dir,
            slug_dir,
            config,
        })
    }
}

/// `dir`, made absolute; it must be a directory.
fn existing_dir(dir: &Path) -> Result<PathBuf, CliError> {
    let canonical = dir
        .canonicalize()
        .map_err(|e| CliError::usage(format!("{}: {e}", dir.display())))?;
    if !canonical.is_dir() {
        return Err(CliError::usage(format!(
            "{} is not a directory",
            canonical.display()
        )));
    }
    Ok(canonical)
}

/// `dir`'s `cdeploy.toml` (defaults without one), its warnings printed.
fn load(g: &Globals, dir: &Path) -> Result<ProjectConfig, CliError> {
    let loaded = config::load_dir(dir).map_err(|e| {
        CliError::config(e.to_string())
            .with_hint("fix the file, or run `cdeploy init` to write a fresh one")
    })?;
    for w in &loaded.warnings {
        g.printer.warn(w);
    }
    Ok(loaded.config)
}

/// Which project is deployed, and from which repository when the server clones it.
pub(super) struct Target {
    pub slug: String,
    /// `--git`, else `git` in cdeploy.toml.
    pub git_url: Option<String>,
    /// `--ref`, else `branch` in cdeploy.toml.
    pub git_ref: Option<String>,
}

impl Target {
    /// The slug and the git source from the flags and the file, checked.
    pub fn resolve(args: &Args, project: &Project) -> Result<Target, CliError> {
        let cfg = &project.config;
        let slug =
            project::resolve_slug(args.slug.as_deref(), cfg.slug.as_deref(), &project.slug_dir)?;
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
        Ok(Target {
            slug,
            git_url,
            git_ref,
        })
    }
}
