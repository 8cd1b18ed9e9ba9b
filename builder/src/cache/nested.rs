//! Workspace packages with `node_modules` of their own (pnpm makes them): an entry of
//! the install folder's alone would break the next build, so none is kept.

use std::path::Path;

/// Whether a `node_modules` exists under `install_dir` other than its own (workspace
/// packages with their own installs, as pnpm makes them). Only the first few levels of
/// the source are looked at, never inside a node_modules.
pub fn nested_modules(install_dir: &Path) -> bool {
    let mut stack = vec![(install_dir.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if !kind.is_dir() {
                continue;
            }
            let name = entry.file_name();
            if name == "node_modules" {
                if depth > 0 {
                    return true;
                }
                continue;
            }
            if depth < 4 && !name.to_string_lossy().starts_with('.') {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_workspace_packages_own_node_modules() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("node_modules/a/node_modules/b")).unwrap();
        std::fs::create_dir_all(d.path().join("apps/web/src")).unwrap();
        assert!(
            !nested_modules(d.path()),
            "nesting inside node_modules is npm's own"
        );
        std::fs::create_dir_all(d.path().join("apps/web/node_modules/@acme")).unwrap();
        assert!(nested_modules(d.path()));
    }
}
