//! Uploading the build output: every regular file under the output folder, nothing
//! outside it. Symlinks are resolved only when they stay inside the folder.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cdeploy_core::event::{EventBody, Step};
use cdeploy_core::layout;
use cdeploy_storage::publish::OutputFiles;
use cdeploy_storage::Storage;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::source::human_bytes;
use crate::{BuildError, EventSink};

/// Blobs uploaded at once: enough to hide storage latency, few enough to be polite.
const UPLOAD_CONCURRENCY: usize = 16;

/// A file found in the output.
#[derive(Debug, Clone)]
pub struct Found {
    /// URL path, `/`-rooted.
    pub url_path: String,
    /// Where to read it (symlinks already resolved inside the root).
    pub real: PathBuf,
    pub size: u64,
}

/// Files skipped when the project folder itself is served (no build, no output folder).
const PROJECT_FILES: &[&str] = &[
    "cdeploy.toml",
    ".cdeployignore",
    "package.json",
    "package-lock.json",
    "pnpm-lock.yaml",
    "yarn.lock",
    "node_modules",
];

/// Lists the output's files. Returns the files and a warning per skipped entry.
pub fn scan(
    root: &Path,
    exclude_project_files: bool,
) -> std::io::Result<(Vec<Found>, Vec<String>)> {
    let root = root.canonicalize()?;
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                warnings.push(format!(
                    "skipping {}: the name is not UTF-8",
                    entry.path().display()
                ));
                continue;
            };
            if name == ".git"
                || (exclude_project_files
                    && (name.starts_with('.') || PROJECT_FILES.contains(&name)))
            {
                continue;
            }
            let path = entry.path();
            let rel = path.strip_prefix(&root).expect("walk stays under root");
            let url_path = format!("/{}", rel.to_string_lossy());
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                found.push(Found {
                    url_path,
                    real: path,
                    size: meta.len(),
                });
            } else if meta.file_type().is_symlink() {
                match path.canonicalize() {
                    Ok(target) if target.starts_with(&root) && target.is_file() => {
                        let size = std::fs::metadata(&target)?.len();
                        found.push(Found {
                            url_path,
                            real: target,
                            size,
                        });
                    }
                    Ok(target) if target.starts_with(&root) => {
                        warnings.push(format!(
                            "skipping symlink {url_path}: it points to a directory"
                        ));
                    }
                    _ => warnings.push(format!(
                        "skipping symlink {url_path}: it points outside the output folder"
                    )),
                }
            }
        }
    }
    found.sort_by(|a, b| a.url_path.cmp(&b.url_path));
    Ok((found, warnings))
}

/// Uploads the output folder's blobs that storage lacks, with progress events.
pub async fn upload_dir(
    storage: &dyn Storage,
    sink: &dyn EventSink,
    root: &Path,
    exclude_project_files: bool,
    cancel: &CancellationToken,
) -> Result<OutputFiles, BuildError> {
    let (hashed, warnings) = hash_output(root, exclude_project_files).await?;
    for w in warnings {
        sink.emit(EventBody::system(Step::Upload, format!("warning: {w}")))
            .await;
    }
    let mut progress = Progress {
        total: hashed.len() as u64,
        total_bytes: hashed.iter().map(|(f, _)| f.size).sum(),
        ..Default::default()
    };
    sink.emit(EventBody::system(
        Step::Upload,
        format!(
            "Uploading {} files ({})",
            progress.total,
            human_bytes(progress.total_bytes)
        ),
    ))
    .await;
    let mut files = OutputFiles::new();
    let mut last_progress = Instant::now() - Duration::from_secs(1);
    let mut uploads = futures_util::stream::iter(
        hashed
            .into_iter()
            .map(|(f, hash)| upload_missing(storage, f, hash, cancel)),
    )
    .buffer_unordered(UPLOAD_CONCURRENCY);
    while let Some(result) = uploads.next().await {
        let (f, hash, new) = result?;
        progress.count(f.size, new);
        files.insert(f.url_path, (hash, f.size));
        // Progress at most ~10 times a second keeps logs small for big outputs.
        if progress.done == progress.total || last_progress.elapsed() >= Duration::from_millis(100)
        {
            last_progress = Instant::now();
            sink.emit(progress.event()).await;
        }
    }
    sink.emit(EventBody::system(
        Step::Upload,
        format!(
            "Uploaded {} new files ({}); {} already stored",
            progress.uploaded,
            human_bytes(progress.uploaded_bytes),
            progress.total - progress.uploaded
        ),
    ))
    .await;
    Ok(files)
}

/// The output's files with their hashes, and a warning per skipped entry (off the
/// async threads).
async fn hash_output(
    root: &Path,
    exclude_project_files: bool,
) -> Result<(Vec<(Found, String)>, Vec<String>), BuildError> {
    let root_owned = root.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let (found, warnings) = scan(&root_owned, exclude_project_files)?;
        let mut hashed = Vec::with_capacity(found.len());
        for f in found {
            let (hash, _) = cdeploy_core::hash_file(&f.real)?;
            hashed.push((f, hash));
        }
        Ok((hashed, warnings))
    })
    .await
    .map_err(|e| BuildError::failed(format!("upload: scanning the output failed: {e}")))?
    .map_err(|e| BuildError::failed(format!("upload: cannot read the output: {e}")))
}

/// Uploads one file's blob unless storage has it; says whether it was new.
async fn upload_missing(
    storage: &dyn Storage,
    f: Found,
    hash: String,
    cancel: &CancellationToken,
) -> Result<(Found, String, bool), BuildError> {
    if cancel.is_cancelled() {
        return Err(BuildError::Canceled);
    }
    let key = layout::blob(&hash);
    let err = |e: cdeploy_storage::StorageError| {
        BuildError::failed(format!("upload: {}: {e}", f.url_path))
    };
    let new = !storage.exists(&key).await.map_err(err)?;
    if new {
        storage.put_file(&key, &f.real).await.map_err(err)?;
    }
    Ok((f, hash, new))
}

/// How far an upload is: files and bytes done, and how many of them were new.
#[derive(Default)]
struct Progress {
    total: u64,
    total_bytes: u64,
    done: u64,
    bytes: u64,
    uploaded: u64,
    uploaded_bytes: u64,
}

impl Progress {
    fn count(&mut self, size: u64, new: bool) {
        if new {
            self.uploaded += 1;
            self.uploaded_bytes += size;
        }
        self.done += 1;
        self.bytes += size;
    }

    fn event(&self) -> EventBody {
        EventBody::Progress {
            step: Step::Upload,
            done: self.done,
            total: self.total,
            bytes: self.bytes,
            total_bytes: self.total_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_never_leave_the_root() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("dist");
        std::fs::create_dir_all(out.join("sub")).unwrap();
        std::fs::write(out.join("index.html"), "hi").unwrap();
        std::fs::write(out.join("sub/a.js"), "x").unwrap();
        std::fs::write(d.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", out.join("x")).unwrap();
        std::os::unix::fs::symlink("../secret", out.join("y")).unwrap();
        std::os::unix::fs::symlink("index.html", out.join("alias.html")).unwrap();
        std::os::unix::fs::symlink("/", out.join("rootdir")).unwrap();
        let (found, warnings) = scan(&out, false).unwrap();
        let paths: Vec<_> = found.iter().map(|f| f.url_path.as_str()).collect();
        assert_eq!(paths, ["/alias.html", "/index.html", "/sub/a.js"]);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
    }
}
