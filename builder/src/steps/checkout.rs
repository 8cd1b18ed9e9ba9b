//! The build's source: a shallow clone in the cell, or an uploaded tree restored from
//! storage and handed to the build's uid; and user-given paths resolved inside it.

use std::path::{Path, PathBuf};

use super::Build;
use crate::{process, source, BuildError, SourceSpec};

/// Puts the source in `checkout`.
pub(super) async fn fetch(
    b: &Build<'_>,
    runner: &process::Runner<'_>,
    checkout: &Path,
) -> Result<(), BuildError> {
    match &b.spec.source {
        SourceSpec::Git { url, git_ref } => {
            source::clone(runner, url, git_ref.as_deref(), checkout).await
        }
        SourceSpec::Upload { source_map_key } => {
            source::materialize(b.storage, b.sink, source_map_key, checkout).await?;
            let sb = b.ws.sandbox;
            tokio::task::block_in_place(|| sb.hand_over(checkout)).map_err(|e| {
                BuildError::failed(format!("clone: cannot hand the source to the build: {e}"))
            })
        }
    }
}

/// Joins a user-given relative path to `root` and proves the result stays inside it,
/// symlinks resolved (a `dist -> /etc` symlink must not widen what gets uploaded).
pub(super) fn resolve_inside(root: &Path, rel: &str, key: &str) -> Result<PathBuf, BuildError> {
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
