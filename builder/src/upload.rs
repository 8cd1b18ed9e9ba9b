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

/// A scanned bundle: its files, its links (path, target), and a warning per skipped
/// entry.
type ScannedBundle = (Vec<Found>, Vec<(String, String)>, Vec<String>);

/// A server's bundle folder as it will be stored: its files (followed through
/// nothing) and its symbolic links kept as links, relative, when they point inside it.
/// Returns the files, the links and a warning per skipped entry.
pub fn scan_bundle(root: &Path) -> std::io::Result<ScannedBundle> {
    let root = root.canonicalize()?;
    let (mut files, mut links, mut warnings) = (Vec::new(), Vec::new(), Vec::new());
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let rel = path.strip_prefix(&root).expect("walk stays under root");
            let Some(rel_str) = rel.to_str().map(str::to_string) else {
                warnings.push(format!(
                    "skipping {}: the name is not UTF-8",
                    path.display()
                ));
                continue;
            };
            if rel_str == ".git" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                files.push(Found {
                    url_path: rel_str,
                    real: path,
                    size: meta.len(),
                });
            } else if meta.file_type().is_symlink() {
                match bundle_link(&root, &path, &rel_str) {
                    Some(target) => links.push((rel_str, target)),
                    None => warnings.push(format!(
                        "skipping symlink {rel_str}: it points outside the server's folder"
                    )),
                }
            }
        }
        if files.len() + links.len() > cdeploy_core::server::MAX_BUNDLE_ENTRIES {
            return Err(std::io::Error::other(format!(
                "the server's folder has more than {} files and links",
                cdeploy_core::server::MAX_BUNDLE_ENTRIES
            )));
        }
    }
    files.sort_by(|a, b| a.url_path.cmp(&b.url_path));
    Ok((files, links, warnings))
}

/// The target a link in the bundle keeps: relative as written when it stays inside,
/// an absolute one inside made relative, `None` when it leaves the bundle.
fn bundle_link(root: &Path, path: &Path, rel: &str) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    let written = target.to_str()?;
    if target.is_absolute() {
        let inside = target.strip_prefix(root).ok()?.to_str()?.to_string();
        let depth = rel.matches('/').count();
        let up = "../".repeat(depth);
        let relative = format!("{up}{inside}");
        return cdeploy_core::server::link_target_inside(rel, &relative)
            .ok()
            .map(|_| relative);
    }
    cdeploy_core::server::link_target_inside(rel, written)
        .ok()
        .map(|_| written.to_string())
}

/// Uploads a server's bundle folder: blobs storage lacks, with progress events.
pub async fn upload_bundle(
    storage: &dyn Storage,
    sink: &dyn EventSink,
    root: &Path,
    cancel: &CancellationToken,
) -> Result<cdeploy_core::server::ServerBundle, BuildError> {
    use std::os::unix::fs::PermissionsExt;
    let root_owned = root.to_path_buf();
    let (hashed, links, warnings) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let (found, links, warnings) = scan_bundle(&root_owned)?;
        let mut hashed = Vec::with_capacity(found.len());
        for f in found {
            let (hash, _) = cdeploy_core::hash_file(&f.real)?;
            let exec = std::fs::metadata(&f.real)?.permissions().mode() & 0o111 != 0;
            hashed.push((f, hash, exec));
        }
        Ok((hashed, links, warnings))
    })
    .await
    .map_err(|e| BuildError::failed(format!("upload: scanning the server failed: {e}")))?
    .map_err(|e| BuildError::failed(format!("upload: cannot read the server's folder: {e}")))?;
    for w in warnings {
        sink.emit(EventBody::system(Step::Upload, format!("warning: {w}")))
            .await;
    }
    let total_bytes: u64 = hashed.iter().map(|(f, _, _)| f.size).sum();
    sink.emit(EventBody::system(
        Step::Upload,
        format!(
            "Uploading the server: {} files and {} links ({})",
            hashed.len(),
            links.len(),
            human_bytes(total_bytes)
        ),
    ))
    .await;
    let mut bundle = cdeploy_core::server::ServerBundle {
        links: links.into_iter().collect(),
        ..Default::default()
    };
    let mut uploads =
        futures_util::stream::iter(hashed.into_iter().map(|(f, hash, exec)| async move {
            let (f, hash, new) = upload_missing(storage, f, hash, cancel).await?;
            Ok::<_, BuildError>((f, hash, new, exec))
        }))
        .buffer_unordered(UPLOAD_CONCURRENCY);
    let mut uploaded = (0u64, 0u64);
    while let Some(result) = uploads.next().await {
        let (f, hash, new, exec) = result?;
        if new {
            uploaded.0 += 1;
            uploaded.1 += f.size;
        }
        bundle.files.insert(
            f.url_path,
            cdeploy_core::server::BundleFile {
                hash,
                size: f.size,
                exec,
            },
        );
    }
    sink.emit(EventBody::system(
        Step::Upload,
        format!(
            "Uploaded {} new server files ({}); {} already stored",
            uploaded.0,
            human_bytes(uploaded.1),
            bundle.files.len() as u64 - uploaded.0
        ),
    ))
    .await;
    Ok(bundle)
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
    fn bundles_keep_their_links_inside() {
        let d = tempfile::tempdir().unwrap();
        let b = d.path().join("bundle");
        std::fs::create_dir_all(b.join("node_modules/.pnpm/x@1/node_modules/x")).unwrap();
        std::fs::write(
            b.join("node_modules/.pnpm/x@1/node_modules/x/index.js"),
            "1",
        )
        .unwrap();
        std::fs::write(b.join("server.js"), "s").unwrap();
        std::os::unix::fs::symlink(".pnpm/x@1/node_modules/x", b.join("node_modules/x")).unwrap();
        std::os::unix::fs::symlink(b.join("server.js"), b.join("node_modules/abs.js")).unwrap();
        std::os::unix::fs::symlink("/etc", b.join("etc")).unwrap();
        std::os::unix::fs::symlink("../../secret", b.join("node_modules/out")).unwrap();
        let (files, links, warnings) = scan_bundle(&b).unwrap();
        let paths: Vec<_> = files.iter().map(|f| f.url_path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "node_modules/.pnpm/x@1/node_modules/x/index.js",
                "server.js"
            ]
        );
        let mut links = links;
        links.sort();
        assert_eq!(
            links,
            [
                (
                    "node_modules/abs.js".to_string(),
                    "../server.js".to_string()
                ),
                (
                    "node_modules/x".to_string(),
                    ".pnpm/x@1/node_modules/x".to_string()
                ),
            ]
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }

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
