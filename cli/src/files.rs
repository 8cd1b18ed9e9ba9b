//! Walking what `deploy` uploads, and hashing it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A local file to upload.
#[derive(Debug, Clone)]
pub struct LocalFile {
    pub path: PathBuf,
    pub hash: String,
    pub size: u64,
}

/// Files keyed by their upload name (`src/main.ts` for sources, `/index.html` for output).
pub type FileSet = BTreeMap<String, LocalFile>;

/// Upload name → content hash, as the API's `source` and `files` maps want it.
pub fn hashes(set: &FileSet) -> BTreeMap<String, String> {
    set.iter()
        .map(|(name, f)| (name.clone(), f.hash.clone()))
        .collect()
}

const NEVER: &[&str] = &[".git", "node_modules"];

/// The source tree as git would see it: tracked and untracked-but-not-ignored files
/// (`.gitignore`, `.git/info/exclude`, global excludes), plus `.cdeployignore` rules;
/// never `.git` or `node_modules`. Symlinks are not followed. Works outside git too.
pub fn source_files(root: &Path) -> std::io::Result<(FileSet, Vec<String>)> {
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(true)
        .require_git(false)
        .parents(false)
        .follow_links(false)
        .add_custom_ignore_filename(".cdeployignore")
        .filter_entry(|e| !NEVER.contains(&e.file_name().to_str().unwrap_or("")))
        .build();
    collect(root, walker, false)
}

/// Every regular file under a prebuilt output folder (no ignore rules), keyed `/path`.
pub fn output_files(root: &Path) -> std::io::Result<(FileSet, Vec<String>)> {
    let walker = ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .follow_links(false)
        .build();
    collect(root, walker, true)
}

fn collect(
    root: &Path,
    walker: ignore::Walk,
    url_paths: bool,
) -> std::io::Result<(FileSet, Vec<String>)> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    let mut skipped = Vec::new();
    for entry in walker {
        let entry = entry.map_err(|e| std::io::Error::other(e.to_string()))?;
        let Some(ft) = entry.file_type() else {
            continue;
        };
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        if ft.is_symlink() {
            skipped.push(format!("{} (symlink)", rel.display()));
            continue;
        }
        if !ft.is_file() {
            continue;
        }
        let Some(rel) = rel.to_str() else {
            skipped.push(format!("{} (name is not UTF-8)", rel.display()));
            continue;
        };
        let key = if url_paths {
            format!("/{rel}")
        } else {
            rel.to_string()
        };
        found.push((key, entry.into_path()));
    }
    let hashed = hash_all(found.iter().map(|(_, path)| path.as_path()).collect())?;
    let files = found
        .into_iter()
        .zip(hashed)
        .map(|((key, path), (hash, size))| (key, LocalFile { path, hash, size }))
        .collect();
    Ok((files, skipped))
}

/// A file's hash and size, or why it could not be read.
type Hashed = std::io::Result<(String, u64)>;

/// Hashes the files on every core: opening and reading ten thousand small files one
/// after another is most of what a redeploy of a large site costs the CLI.
fn hash_all(paths: Vec<&Path>) -> std::io::Result<Vec<(String, u64)>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(paths.len().max(1));
    let next = AtomicUsize::new(0);
    // Each thread takes the next file and keeps its results with their index.
    let done: Vec<Vec<(usize, Hashed)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = paths.get(i) else { break };
                        mine.push((i, cdeploy_core::hash_file(path)));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a hashing thread panicked"))
            .collect()
    });
    let mut results: Vec<Option<(String, u64)>> = vec![None; paths.len()];
    for (i, r) in done.into_iter().flatten() {
        results[i] = Some(r?);
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every file was hashed"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honours_ignore_rules() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for (name, body) in [
            ("index.html", "x"),
            (".gitignore", "dist/\n*.log\n"),
            (".cdeployignore", "secret.txt\n"),
            ("secret.txt", "s"),
            ("debug.log", "l"),
            ("dist/a.js", "a"),
            ("node_modules/m/index.js", "m"),
            (".git/config", "c"),
            ("src/main.ts", "m"),
        ] {
            let f = p.join(name);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, body).unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", p.join("link")).unwrap();
        let (files, skipped) = source_files(p).unwrap();
        let names: Vec<_> = files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [".cdeployignore", ".gitignore", "index.html", "src/main.ts"]
        );
        assert_eq!(skipped, ["link (symlink)"]);
        let (out, _) = output_files(&p.join("dist")).unwrap();
        assert_eq!(out.keys().collect::<Vec<_>>(), ["/a.js"]);
    }
}
