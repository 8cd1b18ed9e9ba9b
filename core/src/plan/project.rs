//! The files of one project folder that decide its plan: its package.json (dependencies,
//! scripts, engines), its configs, the framework they point at, and the workspace root
//! above it where a monorepo installs.

use std::path::{Path, PathBuf};

use super::package_manager::LOCKFILES;
use super::presets::{Preset, PRESETS};
use super::repo_file::read_repo_file;

/// `dir` relative to `root`, `.` for the root itself.
pub(super) fn rel_display(root: &Path, dir: &Path) -> String {
    match dir.strip_prefix(root) {
        Ok(p) if p.as_os_str().is_empty() => ".".into(),
        Ok(p) => p.display().to_string(),
        Err(_) => dir.display().to_string(),
    }
}

/// The nearest folder from `dir` up to `root` that holds a lockfile (a workspace root),
/// else `dir` itself.
pub fn workspace_root(root: &Path, dir: &Path) -> PathBuf {
    let mut at = dir;
    loop {
        if LOCKFILES.iter().any(|l| at.join(l).is_file()) {
            return at.to_path_buf();
        }
        if at == root {
            return dir.to_path_buf();
        }
        match at.parent() {
            Some(parent) if parent.starts_with(root) => at = parent,
            _ => return dir.to_path_buf(),
        }
    }
}

/// The files of one project folder that decide its plan.
pub(super) struct Project {
    root: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) package_json: Option<serde_json::Value>,
}

impl Project {
    pub(super) fn read(root: &Path, dir: &Path) -> Project {
        let package_json = read_repo_file(root, dir, "package.json")
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        Project {
            root: root.to_path_buf(),
            dir: dir.to_path_buf(),
            package_json,
        }
    }

    pub(super) fn text(&self, name: &str) -> Option<String> {
        read_repo_file(&self.root, &self.dir, name).ok().flatten()
    }

    /// The first of `names` that exists, with its text.
    pub(super) fn first_text(&self, names: &[&str]) -> Option<(String, String)> {
        names
            .iter()
            .find_map(|n| self.text(n).map(|t| (n.to_string(), t)))
    }

    pub(super) fn has_dep(&self, dep: &str) -> bool {
        let Some(pkg) = &self.package_json else {
            return false;
        };
        ["dependencies", "devDependencies", "peerDependencies"]
            .iter()
            .any(|k| pkg.get(k).and_then(|d| d.get(dep)).is_some())
    }

    pub(super) fn has_script(&self, name: &str) -> bool {
        self.package_json
            .as_ref()
            .and_then(|p| p.get("scripts"))
            .and_then(|s| s.get(name))
            .is_some_and(|b| b.is_string())
    }

    /// The framework this project uses: the first preset whose dependency or config file
    /// it has (`None` without a package.json: a plain static folder).
    pub(super) fn framework(&self) -> Option<&'static Preset> {
        self.package_json.as_ref()?;
        PRESETS.iter().find(|p| self.matches(p))
    }

    fn matches(&self, p: &Preset) -> bool {
        p.deps.iter().any(|d| self.has_dep(d)) || p.files.iter().any(|f| self.dir.join(f).is_file())
    }

    pub(super) fn str_at(&self, path: &[&str]) -> Option<String> {
        let mut v = self.package_json.as_ref()?;
        for key in path {
            v = v.get(key)?;
        }
        v.as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
    }
}
