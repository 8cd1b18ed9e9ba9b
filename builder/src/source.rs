//! Getting the source: a shallow git clone, or an uploaded tree rebuilt from storage.

use std::path::Path;

use cdeploy_core::event::{EventBody, Step};
use cdeploy_core::git;
use cdeploy_core::layout;
use cdeploy_core::manifest::{validate_tree_path, SourceMap};
use cdeploy_storage::{get_json, Storage};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::process::Runner;
use crate::{BuildError, EventSink};

/// `git` options that keep a clone to network transports, whatever the URL or the
/// repository's config says (second fence after [`git::validate_git_url`]).
const GIT: &str = "git -c protocol.allow=never -c protocol.https.allow=always \
-c protocol.http.allow=always -c protocol.git.allow=always -c protocol.ssh.allow=always \
-c core.hooksPath=/dev/null -c advice.detachedHead=false";

/// Hands a URL's credentials to git when it asks (`credential.helper`), from variables
/// only the clone command has: they never appear in a command line, the URL git
/// prints, or the build's environment.
const CREDENTIAL_HELPER: &str = "!f() { test \"$1\" = get && printf 'username=%s\\npassword=%s\\n' \"$CDEPLOY_GIT_USERNAME\" \"$CDEPLOY_GIT_PASSWORD\"; }; f";

/// Shallow clone of `url` at `git_ref` (branch, tag or commit) into `dest` (an empty
/// directory), as one sandboxed command. URL and ref reach the script as arguments,
/// never as shell text.
pub async fn clone(
    runner: &Runner<'_>,
    url: &str,
    git_ref: Option<&str>,
    dest: &Path,
) -> Result<(), BuildError> {
    git::validate_git_url(url).map_err(clone_error)?;
    if let Some(r) = git_ref {
        git::validate_git_ref(r).map_err(clone_error)?;
    }
    let (bare_url, credentials) = git::split_credentials(url);
    runner
        .sink
        .emit(EventBody::system(
            Step::Clone,
            format!(
                "Cloning {}{}",
                git::redact_url(url),
                git_ref.map(|r| format!(" at {r}")).unwrap_or_default()
            ),
        ))
        .await;
    let script = match git_ref {
        // A commit cannot be named by --branch; fetch exactly that object instead.
        Some(r) if git::is_commit_id(r) => format!(
            "set -e; {GIT} init -q .; {GIT} fetch -q --depth 1 --no-tags -- \"$1\" \"$2\"; {GIT} checkout -q FETCH_HEAD; {GIT} log -1 --format='Commit %h: %s'"
        ),
        Some(_) => format!(
            "set -e; {GIT} clone -q --depth 1 --no-tags --single-branch --branch \"$2\" -- \"$1\" .; {GIT} log -1 --format='Commit %h: %s'"
        ),
        None => format!(
            "set -e; {GIT} clone -q --depth 1 --no-tags --single-branch -- \"$1\" .; {GIT} log -1 --format='Commit %h: %s'"
        ),
    };
    let mut extra = Vec::new();
    if let Some(c) = credentials {
        extra.extend([
            ("GIT_CONFIG_COUNT".to_string(), "1".to_string()),
            (
                "GIT_CONFIG_KEY_0".to_string(),
                "credential.helper".to_string(),
            ),
            (
                "GIT_CONFIG_VALUE_0".to_string(),
                CREDENTIAL_HELPER.to_string(),
            ),
            ("CDEPLOY_GIT_USERNAME".to_string(), c.username),
            ("CDEPLOY_GIT_PASSWORD".to_string(), c.password),
        ]);
    }
    let argv = [
        "/bin/sh",
        "-c",
        &script,
        "clone",
        &bare_url,
        git_ref.unwrap_or(""),
    ];
    runner
        .exec(Step::Clone, &argv, dest, "git clone", &extra)
        .await
}

/// A failure while getting the source, as the user sees it.
fn clone_error(e: impl std::fmt::Display) -> BuildError {
    BuildError::failed(format!("clone: {e}"))
}

/// Blobs restored at once.
const RESTORE_CONCURRENCY: usize = 16;

/// Writes an uploaded source tree (`source.json` + blobs) into `dest`.
pub async fn materialize(
    storage: &dyn Storage,
    sink: &dyn EventSink,
    source_map_key: &str,
    dest: &Path,
) -> Result<(), BuildError> {
    let map: SourceMap = get_json(storage, source_map_key)
        .await
        .map_err(|e| BuildError::failed(format!("clone: cannot read the source manifest: {e}")))?
        .ok_or_else(|| {
            BuildError::failed(format!(
                "clone: source manifest {source_map_key} does not exist"
            ))
        })?;
    sink.emit(EventBody::system(
        Step::Clone,
        format!("Restoring {} uploaded files", map.len()),
    ))
    .await;
    tokio::fs::create_dir_all(dest).await.map_err(clone_error)?;
    // Paths are checked before anything is written.
    for path in map.keys() {
        validate_tree_path(path).map_err(clone_error)?;
    }
    let count = map.len();
    let restores = futures_util::stream::iter(map.into_iter().map(|(path, hash)| async move {
        // Streamed to the file: a large source file never sits in memory whole.
        let mut stream = storage
            .get_stream(&layout::blob(&hash), None)
            .await
            .map_err(clone_error)?
            .ok_or_else(|| {
                BuildError::failed(format!(
                    "clone: blob {hash} for {path} is missing from storage"
                ))
            })?;
        let target = dest.join(path.trim_start_matches('/'));
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(clone_error)?;
        }
        let write_error = |e: std::io::Error| BuildError::failed(format!("clone: {path}: {e}"));
        let mut file = tokio::fs::File::create(&target)
            .await
            .map_err(write_error)?;
        let mut len = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(write_error)?;
            len += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(write_error)?;
        }
        file.flush().await.map_err(write_error)?;
        if is_executable_hint(&path) {
            use std::os::unix::fs::PermissionsExt;
            let _ =
                tokio::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).await;
        }
        Ok::<u64, BuildError>(len)
    }))
    .buffer_unordered(RESTORE_CONCURRENCY);
    let sizes: Vec<Result<u64, BuildError>> = restores.collect().await;
    let bytes = sizes.into_iter().sum::<Result<u64, BuildError>>()?;
    sink.emit(EventBody::system(
        Step::Clone,
        format!("Restored {count} files ({})", human_bytes(bytes)),
    ))
    .await;
    Ok(())
}

/// Uploaded sources carry no file modes; scripts in common places get the executable bit.
fn is_executable_hint(path: &str) -> bool {
    path.ends_with(".sh") || path.starts_with("bin/") || path.contains("/bin/")
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
