//! Which npm line wrote a `package-lock.json`, where it matters: npm 11 checks that
//! every optional dependency a locked package declares is in the lockfile (it writes
//! them all, for every platform), and refuses with "`npm ci` can only install packages
//! when your package.json and package-lock.json … are in sync" a lockfile npm 10 wrote
//! on one platform without them. Such a lockfile is installed with npm 10.
//! (The other way round, npm 10 refuses npm 11's `extraneous` entries for another
//! platform with EBADPLATFORM; npm 11 is what the default Node.js bundles.)

use std::collections::HashSet;

/// Optional dependencies at most this many are named in the reason.
const NAMED: usize = 2;

/// Why npm 11 would refuse this lockfile's text: some optional dependencies it lists
/// are missing from it (their names, the first [`NAMED`]). `None`: not that case (or
/// not a lockfile of npm 7 or later).
pub(super) fn written_for_npm_10(lockfile: &str) -> Option<Vec<String>> {
    let lock: serde_json::Value = serde_json::from_str(lockfile).ok()?;
    let packages = lock.get("packages")?.as_object()?;
    let locked: HashSet<&str> = packages.keys().map(String::as_str).collect();
    let mut missing = Vec::new();
    for (path, entry) in packages {
        let Some(optional) = entry
            .get("optionalDependencies")
            .and_then(|o| o.as_object())
        else {
            continue;
        };
        for name in optional.keys() {
            if !resolves(&locked, path, name) && !missing.contains(name) {
                missing.push(name.clone());
            }
        }
    }
    (!missing.is_empty()).then(|| {
        missing.truncate(NAMED);
        missing
    })
}

/// Whether `name`, asked for by the package at `path` (`""` for the project,
/// `node_modules/a/node_modules/b`…), is locked where Node.js would find it: in the
/// package's own `node_modules`, or in any above it.
fn resolves(locked: &HashSet<&str>, path: &str, name: &str) -> bool {
    let mut base = path;
    loop {
        let candidate = if base.is_empty() {
            format!("node_modules/{name}")
        } else {
            format!("{base}/node_modules/{name}")
        };
        if locked.contains(candidate.as_str()) {
            return true;
        }
        if base.is_empty() {
            return false;
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
    fn a_lockfile_without_the_optional_packages_it_lists_is_npm_10s() {
        // As npm 10 writes it on Linux: the darwin binary is not locked.
        let npm10 = r#"{"lockfileVersion":3,"packages":{
            "":{"dependencies":{"@swc/html":"1"}},
            "node_modules/@swc/html":{"version":"1.0.0","optionalDependencies":{
                "@swc/html-darwin-arm64":"1.0.0","@swc/html-linux-x64-gnu":"1.0.0",
                "@swc/html-win32-x64-msvc":"1.0.0"}},
            "node_modules/@swc/html-linux-x64-gnu":{"version":"1.0.0","optional":true}
        }}"#;
        assert_eq!(
            written_for_npm_10(npm10),
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
        assert_eq!(written_for_npm_10(complete), None);
        // npm 6's format, or no lockfile at all.
        assert_eq!(
            written_for_npm_10(r#"{"lockfileVersion":1,"dependencies":{}}"#),
            None
        );
        assert_eq!(written_for_npm_10("not json"), None);
    }
}
