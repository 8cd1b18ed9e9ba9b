//! Apps on disk: fixtures copied from `tests/fixtures`, files and `cdeploy.toml`
//! written by a test, and project names of this run's own.

use std::path::Path;

use crate::{repo_root, TempDir};

/// Writes a `cdeploy.toml` whose build runs `command` (plus any `extra` TOML).
pub fn write_build_command(dir: &Path, command: &str, extra: &str) {
    let toml = format!("[build]\ncommand = {}\n{extra}", toml_string(command));
    write_files(dir, &[("cdeploy.toml", &toml)]);
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Writes files (creating folders) under `root`.
pub fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (name, body) in files {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, body).expect("write");
    }
}

/// A project name of this run's own: the tests share a build cache, and a cached install
/// would skip the install (its scripts' attacks, or the install a test looks for).
pub fn fresh_slug(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A fresh temp directory holding a copy of `tests/fixtures/<name>` (no node_modules/dist).
pub fn fixture(name: &str) -> TempDir {
    let src = repo_root().join("tests/fixtures").join(name);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join(name);
    copy_dir(&src, &dest);
    tmp
}

fn copy_dir(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).expect("mkdir");
    for entry in std::fs::read_dir(src).expect("read fixture") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name == "node_modules" || name == "dist" {
            continue;
        }
        let (from, to) = (entry.path(), dest.join(&name));
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&from, &to);
        } else {
            std::fs::copy(&from, &to).expect("copy");
        }
    }
}
