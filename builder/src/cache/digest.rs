//! What the install made, as a digest: taken after the install (or the restore) and
//! again after the build, so an entry keeps only a `node_modules` the build left as the
//! install made it (tools' cache folders aside).

use std::path::{Path, PathBuf};

use sha2::Digest;

/// [`installed_digest`] off the async threads.
pub async fn installed_digest_of(project_dir: &Path) -> Option<String> {
    let dir = project_dir.to_path_buf();
    tokio::task::spawn_blocking(move || installed_digest(&dir))
        .await
        .ok()
        .flatten()
}

/// Top-level folders of `node_modules` that build tools keep their caches in, which
/// builds may change: babel-loader, terser, Nuxt… (`.cache`), Vite (`.vite`, and
/// `.vite-temp` for a bundled config), Astro (`.astro`), TypeScript's build info in
/// Vite's templates (`.tmp`). A list, not a pattern: package managers keep package code
/// in dot-folders too (`.pnpm`, `.bun`, `.store`, `.prisma`), and those must stay as the
/// install made them.
pub const TOOL_CACHES: &[&str] = &[".cache", ".vite", ".vite-temp", ".astro", ".tmp"];

fn is_tool_cache(name: &std::ffi::OsStr) -> bool {
    TOOL_CACHES.iter().any(|c| name == *c)
}

/// A digest of what the install made in `project_dir/node_modules`: every entry's path,
/// type, mode, size, inode and change time (which no unprivileged process can set
/// back), symlinks' targets included, links never followed. Tools' cache folders
/// ([`TOOL_CACHES`]) are left out. `None` when there is no real node_modules.
pub fn installed_digest(project_dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let root = project_dir.join("node_modules");
    if !std::fs::symlink_metadata(&root).ok()?.is_dir() {
        return None;
    }
    let mut h = sha2::Sha256::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(&rel))
            .ok()?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let meta = entry.metadata().ok()?; // never follows a link
            if rel.as_os_str().is_empty() && meta.is_dir() && is_tool_cache(&name) {
                continue;
            }
            let path = rel.join(&name);
            h.update(path.as_os_str().as_encoded_bytes());
            h.update([0]);
            for n in [
                meta.mode() as i64,
                meta.size() as i64,
                meta.ino() as i64,
                meta.ctime(),
                meta.ctime_nsec(),
            ] {
                h.update(n.to_le_bytes());
            }
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(entry.path()).ok()?;
                h.update(target.as_os_str().as_encoded_bytes());
                h.update([0]);
            } else if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    Some(hex::encode(h.finalize()))
}
