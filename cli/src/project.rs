//! Which project a directory deploys: a package of a workspace is deployed from the
//! workspace's root with the package as its build root, and the slug comes from
//! `--slug`, else `cdeploy.toml`, else the folder's name. `deploy` and every command
//! that defaults to "this directory's project" ask here.

use std::path::{Path, PathBuf};

use cdeploy_core::{config, ids};

use crate::exit::CliError;

/// `dir` is a package of a workspace (a package.json, no lockfile and no cdeploy.toml of
/// its own) inside a git repository whose lockfile is further up: the folder to upload
/// (the workspace root) and the package's path in it. `None`: deploy `dir` as it is.
pub fn locate(dir: &Path) -> Option<(PathBuf, String)> {
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

/// The slug `cdeploy deploy` run in `dir` would use (`cdeploy open` with no slug).
pub fn slug_of_dir(dir: &Path) -> Result<String, CliError> {
    let dir = dir
        .canonicalize()
        .map_err(|e| CliError::usage(format!("{}: {e}", dir.display())))?;
    let config_dir = match locate(&dir) {
        Some((workspace, _)) => workspace,
        None => dir.clone(),
    };
    let cfg = config::load_dir(&config_dir)
        .map_err(|e| CliError::config(e.to_string()))?
        .config;
    resolve_slug(None, cfg.slug.as_deref(), &dir)
}

/// The slug from the flag, else the file, else made from `dir`'s name; checked.
pub fn resolve_slug(
    flag: Option<&str>,
    file: Option<&str>,
    dir: &Path,
) -> Result<String, CliError> {
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
