//! Whether npm 11 would refuse a `package-lock.json` that npm 10 installs: npm 11
//! checks that every optional dependency a locked package declares is in the lockfile
//! (it writes them all, for every platform), and refuses with "`npm ci` can only
//! install packages when your package.json and package-lock.json … are in sync" a
//! lockfile npm 10 wrote on one platform without them. Such a lockfile is installed
//! with npm 10. (The other way round, npm 10 refuses npm 11's `extraneous` entries for
//! another platform with EBADPLATFORM; npm 11 is what the default Node.js bundles.)

use std::collections::{HashMap, HashSet};

use serde::de::IgnoredAny;
use serde::Deserialize;

/// Optional dependencies at most this many are named in the reason.
const NAMED: usize = 2;
/// Bytes of paths the check may build and look up (a name at each `node_modules` level
/// above a package): a lockfile from an untrusted repository can list many optional
/// names under a deep path, and the plan must stay quick. Past it the check says
/// nothing (the bundled npm is used). Real lockfiles take well under 1 MiB.
const MAX_WORK: usize = 32 << 20;

/// The parts of a lockfile (npm 7 and later) the check reads; the rest is skipped.
#[derive(Deserialize)]
struct Lock {
    #[serde(default)]
    packages: HashMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default, rename = "optionalDependencies")]
    optional: HashMap<String, IgnoredAny>,
}

/// Why npm 11 would refuse this lockfile's text: some optional dependencies it lists
/// are missing from it (their names, the first [`NAMED`]). `None`: not that case (or
/// not a lockfile of npm 7 or later, or too costly to tell).
pub(super) fn refused_by_npm_11(lockfile: &str) -> Option<Vec<String>> {
    let lock: Lock = serde_json::from_str(lockfile).ok()?;
    let locked: HashSet<&str> = lock.packages.keys().map(String::as_str).collect();
    let mut missing: Vec<String> = Vec::new();
    let mut budget = MAX_WORK;
    // In a stable order, so the names said are the same on every run.
    let mut paths: Vec<&String> = lock.packages.keys().collect();
    paths.sort();
    for path in paths {
        let mut names: Vec<&String> = lock.packages[path].optional.keys().collect();
        names.sort();
        for name in names {
            if !resolves(&locked, path, name, &mut budget)? && !missing.contains(name) {
                missing.push(name.clone());
                if missing.len() == NAMED {
                    return Some(missing);
                }
            }
        }
    }
    (!missing.is_empty()).then_some(missing)
}

/// Whether `name`, asked for by the package at `path` (`""` for the project,
/// `node_modules/a/node_modules/b`…), is locked where Node.js would find it: in the
/// package's own `node_modules`, or in any above it. `None` once `budget` (bytes of
/// paths looked up) is spent.
fn resolves(locked: &HashSet<&str>, path: &str, name: &str, budget: &mut usize) -> Option<bool> {
    let mut candidate = String::with_capacity(path.len() + name.len() + 14);
    let mut base = path;
    loop {
        *budget = budget.checked_sub(base.len() + name.len() + 16)?;
        candidate.clear();
        if !base.is_empty() {
            candidate.push_str(base);
            candidate.push('/');
        }
        candidate.push_str("node_modules/");
        candidate.push_str(name);
        if locked.contains(candidate.as_str()) {
            return Some(true);
        }
        if base.is_empty() {
            return Some(false);
        }
        // Up one package: `a/node_modules/b` → `a`; `node_modules/a` → the project;
        // a workspace folder (`packages/x`) → the project.
        base = match base.rfind("/node_modules/") {
            Some(i) => &base[..i],
            None => "",
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lockfile_without_the_optional_packages_it_lists_is_refused_by_npm_11() {
        // As npm 10 writes it on Linux: the darwin binary is not locked.
        let npm10 = r#"{"lockfileVersion":3,"packages":{
            "":{"dependencies":{"@swc/html":"1"}},
            "node_modules/@swc/html":{"version":"1.0.0","optionalDependencies":{
                "@swc/html-darwin-arm64":"1.0.0","@swc/html-linux-x64-gnu":"1.0.0",
                "@swc/html-win32-x64-msvc":"1.0.0"}},
            "node_modules/@swc/html-linux-x64-gnu":{"version":"1.0.0","optional":true}
        }}"#;
        assert_eq!(
            refused_by_npm_11(npm10),
            Some(vec![
                "@swc/html-darwin-arm64".to_string(),
                "@swc/html-win32-x64-msvc".to_string()
            ])
        );
        // Everything locked, nested or hoisted (npm 11's, or one without optional
        // dependencies): not that case.
        let complete = r#"{"lockfileVersion":3,"packages":{
            "":{},
            "node_modules/a":{"optionalDependencies":{"b":"1","c":"1"}},
            "node_modules/a/node_modules/b":{"optional":true},
            "node_modules/c":{"optional":true,"extraneous":true,"os":["darwin"]},
            "packages/web":{"optionalDependencies":{"c":"1"}}
        }}"#;
        assert_eq!(refused_by_npm_11(complete), None);
        // Too many lookups to make (a hostile lockfile: 2,000 names under a path 1,000
        // packages deep, each found only at the top): nothing is said, quickly.
        let names: Vec<String> = (0..2_000).map(|i| format!("\"n{i}\":\"1\"")).collect();
        let tops: Vec<String> = (0..2_000)
            .map(|i| format!("\"node_modules/n{i}\":{{}}"))
            .collect();
        let deep = vec!["node_modules/x"; 1_000].join("/");
        let hostile = format!(
            r#"{{"packages":{{{},"{deep}":{{"optionalDependencies":{{{}}}}}}}}}"#,
            tops.join(","),
            names.join(",")
        );
        let started = std::time::Instant::now();
        assert_eq!(refused_by_npm_11(&hostile), None);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // npm 6's format, or no lockfile at all.
        assert_eq!(
            refused_by_npm_11(r#"{"lockfileVersion":1,"dependencies":{}}"#),
            None
        );
        assert_eq!(refused_by_npm_11("not json"), None);
    }
}
