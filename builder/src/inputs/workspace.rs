//! A workspace's packages (`workspaces` in the install root's package.json, or
//! `pnpm-workspace.yaml`) and which of them a project depends on, directly or through
//! each other: the folders besides its own whose files its build reads.
//!
//! Only what can be read for certain is read: patterns made of literal segments and `*`,
//! package names from package.json. Anything else (`**`, negations, a package.json that
//! does not parse) is an error, and the build runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::read_repo_file;

/// What a package's dependency maps are named.
const DEPENDENCY_FIELDS: &[&str] = &[
    "dependencies",
    "devDependencies",
    "peerDependencies",
    "optionalDependencies",
];

/// Most folders listed while following `*` patterns.
const MAX_LISTED: usize = 20_000;

/// The folders (inside `checkout`, canonical) of the local packages the project in
/// `project_dir` depends on, directly or through each other: the workspace's, by name
/// or `workspace:`, and `file:`/`link:` paths. The install root's own dependencies
/// count as the project's (they are installed with it).
pub(super) fn dependencies(
    checkout: &Path,
    install_dir: &Path,
    project_dir: &Path,
) -> Result<BTreeSet<PathBuf>, String> {
    let packages = packages(checkout, install_dir)?;
    no_local_overrides(checkout, install_dir)?;
    let mut found = BTreeSet::new();
    let mut todo = vec![project_dir.to_path_buf(), install_dir.to_path_buf()];
    let mut seen = BTreeSet::new();
    while let Some(dir) = todo.pop() {
        if !seen.insert(dir.clone()) {
            continue;
        }
        for (name, spec) in declared(checkout, &dir)? {
            let Some(dep) = local(checkout, &dir, &packages, (&name, &spec))? else {
                continue;
            };
            if dep != project_dir && dep != install_dir && found.insert(dep.clone()) {
                todo.push(dep);
            }
        }
    }
    Ok(found)
}

/// The folder a dependency comes from when it is local (`None`: from the registry,
/// pinned by the lockfile). What cannot be followed for certain is an error.
fn local(
    checkout: &Path,
    dir: &Path,
    packages: &BTreeMap<String, PathBuf>,
    (name, spec): (&str, &str),
) -> Result<Option<PathBuf>, String> {
    let cannot = || format!("the dependency {name} ({spec}) cannot be followed for certain");
    if let Some(path) = spec
        .strip_prefix("file:")
        .or_else(|| spec.strip_prefix("link:"))
    {
        return inside(checkout, &dir.join(path)).map(Some);
    }
    if let Some(range) = spec.strip_prefix("workspace:") {
        // `workspace:../foo` is a folder (pnpm); `workspace:other@*` installs another
        // package under this name.
        if range.starts_with('.') || range.contains('/') {
            return inside(checkout, &dir.join(range)).map(Some);
        }
        if range.contains('@') {
            return Err(cannot());
        }
        return packages.get(name).cloned().map(Some).ok_or_else(cannot);
    }
    const UNFOLLOWED: &[&str] = &["portal:", "exec:", "patch:", ".", "/", "~"];
    if UNFOLLOWED.iter().any(|p| spec.starts_with(p)) {
        return Err(cannot());
    }
    Ok(packages.get(name).cloned())
}

/// Overrides and resolutions that point at a local folder or a patch are not followed:
/// their presence means the build runs.
fn no_local_overrides(checkout: &Path, install_dir: &Path) -> Result<(), String> {
    let Some(pkg) = package_json(checkout, install_dir)? else {
        return Ok(());
    };
    let patched = [
        pkg.get("patchedDependencies"),
        pkg.get("pnpm").and_then(|p| p.get("patchedDependencies")),
    ];
    if patched
        .into_iter()
        .flatten()
        .any(|p| p.as_object().is_none_or(|o| !o.is_empty()))
    {
        return Err("package.json overrides a dependency with a local folder or a patch".into());
    }
    let fields = [
        pkg.get("overrides"),
        pkg.get("resolutions"),
        pkg.get("pnpm").and_then(|p| p.get("overrides")),
    ];
    const LOCAL: &[&str] = &[
        "file:", "link:", "portal:", "exec:", "patch:", "\"./", "\"../", "\"/", "\"~",
    ];
    for field in fields.into_iter().flatten() {
        let text = field.to_string();
        if LOCAL.iter().any(|m| text.contains(m)) {
            return Err(
                "package.json overrides a dependency with a local folder or a patch".into(),
            );
        }
    }
    Ok(())
}

/// `path`, canonical, when it is a folder inside the checkout. One answer for every
/// other case: whether a host path exists is nobody's business.
fn inside(checkout: &Path, path: &Path) -> Result<PathBuf, String> {
    match path.canonicalize() {
        Ok(real) if real.starts_with(checkout) && real.is_dir() => Ok(real),
        _ => Err("a local dependency is not a folder inside the repository".into()),
    }
}

/// The package.json of `dir`: its dependencies (name → version or path).
fn declared(checkout: &Path, dir: &Path) -> Result<Vec<(String, String)>, String> {
    let Some(pkg) = package_json(checkout, dir)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for field in DEPENDENCY_FIELDS {
        if let Some(map) = pkg.get(field).and_then(|v| v.as_object()) {
            for (name, spec) in map {
                out.push((name.clone(), spec.as_str().unwrap_or_default().to_string()));
            }
        }
    }
    Ok(out)
}

fn package_json(checkout: &Path, dir: &Path) -> Result<Option<serde_json::Value>, String> {
    let shown = || {
        dir.strip_prefix(checkout)
            .unwrap_or(dir)
            .join("package.json")
    };
    // One answer whatever the reason (a symlink out, broken or not): whether a host
    // path exists is nobody's business.
    let text = read_repo_file(checkout, dir, "package.json").map_err(|_| {
        format!(
            "{} is not a readable file inside the repository",
            shown().display()
        )
    })?;
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| format!("{} does not parse: {e}", shown().display()))
}

/// The workspace's packages: name → folder (canonical).
fn packages(checkout: &Path, install_dir: &Path) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut out = BTreeMap::new();
    let mut listed = 0;
    for pattern in patterns(checkout, install_dir)? {
        for dir in expand(install_dir, &pattern, &mut listed)? {
            let Some(pkg) = package_json(checkout, &dir)? else {
                continue;
            };
            if let Some(name) = pkg.get("name").and_then(|n| n.as_str()) {
                out.insert(name.to_string(), inside(checkout, &dir)?);
            }
        }
    }
    Ok(out)
}

/// The workspace's folder patterns: package.json's `workspaces` (a list, or
/// `{ "packages": [...] }`, npm's and yarn's) and `pnpm-workspace.yaml`'s `packages`
/// (pnpm's), both when both exist; none when neither declares a workspace.
fn patterns(checkout: &Path, install_dir: &Path) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    if let Some(ws) =
        package_json(checkout, install_dir)?.and_then(|p| p.get("workspaces").cloned())
    {
        let list = ws.get("packages").unwrap_or(&ws);
        let list = list
            .as_array()
            .ok_or("package.json's workspaces is not a list of folders")?;
        for p in list {
            let p = p
                .as_str()
                .ok_or("package.json's workspaces holds a non-string")?;
            out.push(p.to_string());
        }
    }
    match read_repo_file(checkout, install_dir, "pnpm-workspace.yaml") {
        Ok(Some(text)) => out.extend(pnpm_packages(&text)?),
        Ok(None) => {}
        Err(e) => return Err(format!("pnpm-workspace.yaml: {e}")),
    }
    Ok(out)
}

/// `packages:` of a `pnpm-workspace.yaml` in block style (`  - 'apps/*'`). A YAML
/// parser for one list would be a new dependency of every builder; this reads that one
/// shape and calls anything else unreadable (the build then runs): a file that names
/// `packages` in any other way is refused.
fn pnpm_packages(text: &str) -> Result<Vec<String>, String> {
    let unreadable = || "pnpm-workspace.yaml's packages are not a plain list".to_string();
    let block = text.lines().filter(|l| l.trim_end() == "packages:").count();
    // Keys that name `packages` (not list items, which are folders like `packages/*`).
    let mentions = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.starts_with("- ") && !t.starts_with('#') && l.contains("packages")
        })
        .count();
    if block > 1 || mentions > block {
        return Err(unreadable());
    }
    let mut lines = text.lines().skip_while(|l| l.trim_end() != "packages:");
    if lines.next().is_none() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for line in lines {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !line.starts_with(' ') && !line.starts_with('-') {
            break; // the next key
        }
        let item = trimmed.strip_prefix("- ").ok_or_else(unreadable)?.trim();
        let item = item.split(" #").next().unwrap_or(item).trim();
        let unquoted = item
            .strip_prefix('\'')
            .and_then(|i| i.strip_suffix('\''))
            .or_else(|| item.strip_prefix('"').and_then(|i| i.strip_suffix('"')))
            .unwrap_or(item);
        out.push(unquoted.to_string());
    }
    Ok(out)
}

/// The folders a pattern names under `base` (canonical, inside the checkout): literal
/// segments and `*` only. Symlinks are never followed (nor listed): everything listed
/// stays inside the checkout. `listed` counts folders listed, across patterns.
fn expand(base: &Path, pattern: &str, listed: &mut usize) -> Result<Vec<PathBuf>, String> {
    let cannot = || format!("the workspace pattern {pattern:?} cannot be followed for certain");
    if pattern.starts_with('!') || pattern.starts_with('/') {
        return Err(cannot());
    }
    let mut dirs = vec![base.to_path_buf()];
    for segment in pattern.trim_end_matches('/').split('/') {
        let mut next = Vec::new();
        match segment {
            "" | "." => next = dirs,
            ".." => return Err(cannot()),
            "*" => {
                for dir in &dirs {
                    let Ok(entries) = std::fs::read_dir(dir) else {
                        continue;
                    };
                    for e in entries.flatten() {
                        *listed += 1;
                        if *listed > MAX_LISTED {
                            return Err(cannot());
                        }
                        let name = e.file_name().to_string_lossy().into_owned();
                        if name.starts_with('.') || name == "node_modules" {
                            continue;
                        }
                        match e.file_type() {
                            Ok(t) if t.is_dir() => next.push(e.path()),
                            // A package folder elsewhere: not followed, so not compared.
                            Ok(t) if t.is_symlink() => return Err(cannot()),
                            _ => {}
                        }
                    }
                }
            }
            s if s.contains(['*', '?', '[', '{', '!', '\\']) => return Err(cannot()),
            s => {
                for d in &dirs {
                    let p = d.join(s);
                    match std::fs::symlink_metadata(&p) {
                        Ok(m) if m.is_dir() => next.push(p),
                        Ok(m) if m.file_type().is_symlink() => return Err(cannot()),
                        _ => {}
                    }
                }
            }
        }
        dirs = next;
    }
    dirs.sort();
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = d.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        d
    }

    fn names(d: &Path, found: BTreeSet<PathBuf>) -> Vec<String> {
        let root = d.canonicalize().unwrap();
        found
            .iter()
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn a_project_reads_the_packages_it_depends_on_through_each_other() {
        let d = repo(&[
            ("package.json", r#"{"workspaces":["apps/*","packages/*"]}"#),
            (
                "apps/a/package.json",
                r#"{"name":"a","dependencies":{"ui":"*"}}"#,
            ),
            (
                "apps/b/package.json",
                r#"{"name":"b","dependencies":{"ui":"*","util":"1"}}"#,
            ),
            (
                "packages/ui/package.json",
                r#"{"name":"ui","dependencies":{"core":"workspace:*"}}"#,
            ),
            ("packages/core/package.json", r#"{"name":"core"}"#),
            ("packages/util/package.json", r#"{"name":"util"}"#),
        ]);
        let root = d.path().canonicalize().unwrap();
        let a = dependencies(&root, &root, &root.join("apps/a")).unwrap();
        assert_eq!(names(d.path(), a), ["packages/core", "packages/ui"]);
        let b = dependencies(&root, &root, &root.join("apps/b")).unwrap();
        assert_eq!(
            names(d.path(), b),
            ["packages/core", "packages/ui", "packages/util"]
        );
    }

    #[test]
    fn pnpm_workspaces_and_local_paths_are_followed() {
        let d = repo(&[
            (
                "pnpm-workspace.yaml",
                "packages:\n  - 'apps/*'\n  - \"libs/x\" # the one\n  - packages/*\nother: 1\n",
            ),
            (
                "apps/a/package.json",
                r#"{"name":"a","dependencies":{"x":"workspace:^","y":"file:../../vendor/y","z":"workspace:../../packages/legacy"}}"#,
            ),
            ("libs/x/package.json", r#"{"name":"x"}"#),
            ("vendor/y/package.json", r#"{"name":"y"}"#),
            ("packages/legacy/package.json", r#"{"name":"legacy"}"#),
        ]);
        let root = d.path().canonicalize().unwrap();
        let a = dependencies(&root, &root, &root.join("apps/a")).unwrap();
        assert_eq!(
            names(d.path(), a),
            ["libs/x", "packages/legacy", "vendor/y"]
        );
    }

    #[test]
    fn what_cannot_be_followed_for_certain_is_an_error() {
        for (files, why) in [
            (
                vec![("package.json", r#"{"workspaces":["packages/**"]}"#)],
                "cannot be followed",
            ),
            (
                vec![("package.json", r#"{"workspaces":["!x"]}"#)],
                "cannot be followed",
            ),
            (
                vec![("package.json", r#"{"workspaces":"x"}"#)],
                "not a list",
            ),
            (vec![("package.json", "{")], "does not parse"),
            (
                vec![("pnpm-workspace.yaml", "packages: [a, b]\n")],
                "not a plain list",
            ),
            (
                vec![("pnpm-workspace.yaml", "\"packages\":\n  - a\n")],
                "not a plain list",
            ),
            (
                vec![("package.json", r#"{"overrides":{"x":"file:./vendor/x"}}"#)],
                "overrides a dependency",
            ),
            (
                vec![(
                    "package.json",
                    r#"{"pnpm":{"patchedDependencies":{"x@1":"patches/x.patch"}}}"#,
                )],
                "overrides a dependency",
            ),
            (
                vec![
                    ("package.json", r#"{"workspaces":["p/*"]}"#),
                    ("p/x/package.json", "{nope"),
                ],
                "p/x/package.json does not parse",
            ),
        ] {
            let mut files = files;
            files.push(("apps/a/package.json", r#"{"name":"a"}"#));
            let d = repo(&files);
            let root = d.path().canonicalize().unwrap();
            let e = dependencies(&root, &root, &root.join("apps/a")).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn dependencies_that_cannot_be_followed_for_certain_are_errors() {
        for spec in [
            "../../packages/ui",
            "portal:../ui",
            "exec:./gen.js",
            "workspace:other@*",
            "workspace:*",
        ] {
            let deps = format!(r#"{{"name":"a","dependencies":{{"ui":"{spec}"}}}}"#);
            let d = repo(&[
                ("package.json", r#"{"workspaces":["apps/*"]}"#),
                ("apps/a/package.json", &deps),
            ]);
            let root = d.path().canonicalize().unwrap();
            let e = dependencies(&root, &root, &root.join("apps/a")).unwrap_err();
            assert!(e.contains("cannot be followed"), "{spec}: {e}");
        }
        // The install root's own local dependencies are the project's too.
        let d = repo(&[
            ("package.json", r#"{"dependencies":{"tools":"file:tools"}}"#),
            ("tools/package.json", r#"{"name":"tools"}"#),
            ("apps/a/package.json", r#"{"name":"a"}"#),
        ]);
        let root = d.path().canonicalize().unwrap();
        let found = dependencies(&root, &root, &root.join("apps/a")).unwrap();
        assert_eq!(names(d.path(), found), ["tools"]);
    }

    #[test]
    fn symlinks_are_never_followed_out_of_the_repository() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(outside.path().join("private-project")).unwrap();
        for pattern in ["l/*", "l", "packages/*"] {
            let ws = format!(r#"{{"workspaces":["{pattern}"]}}"#);
            let d = repo(&[
                ("package.json", &ws),
                ("apps/a/package.json", r#"{"name":"a"}"#),
            ]);
            std::fs::create_dir_all(d.path().join("packages")).unwrap();
            std::os::unix::fs::symlink(outside.path(), d.path().join("l")).unwrap();
            std::os::unix::fs::symlink(outside.path(), d.path().join("packages/x")).unwrap();
            let root = d.path().canonicalize().unwrap();
            let e = dependencies(&root, &root, &root.join("apps/a")).unwrap_err();
            assert!(!e.contains("private-project"), "{e}");
            assert!(e.contains("cannot be followed"), "{pattern}: {e}");
        }
        // A path dependency names no host path in its answer, whether it exists or not.
        let answers: Vec<String> = ["file:/root", "file:/no/such/dir"]
            .iter()
            .map(|spec| {
                let deps = format!(r#"{{"name":"a","dependencies":{{"y":"{spec}"}}}}"#);
                let d = repo(&[("apps/a/package.json", &deps)]);
                let root = d.path().canonicalize().unwrap();
                dependencies(&root, &root, &root.join("apps/a")).unwrap_err()
            })
            .collect();
        assert_eq!(answers[0], answers[1]);
    }

    #[test]
    fn a_local_path_out_of_the_repository_is_an_error() {
        let d = repo(&[(
            "apps/a/package.json",
            r#"{"name":"a","dependencies":{"y":"file:../../../elsewhere"}}"#,
        )]);
        let root = d.path().canonicalize().unwrap();
        assert!(dependencies(&root, &root, &root.join("apps/a")).is_err());
    }
}
