//! An entry's key: what decides what an install makes (the lockfile, the install
//! command, the toolchain, the package managers' settings and hooks, and what an install
//! reads of `package.json`), hashed, under the project's slug and trust scope.

use std::path::Path;

use cdeploy_core::plan::LOCKFILES;
use sha2::Digest;

/// The entry for this project state in `scope` (`<slug>--<scope>--<digest>`), or `None`
/// when there is no lockfile (then the install is not reproducible and nothing is
/// cached).
pub(crate) fn key(
    slug: &str,
    scope: &str,
    checkout: &Path,
    project_dir: &Path,
    install: &str,
    toolchain: &str,
) -> Option<String> {
    let lockfile = LOCKFILES.iter().find_map(|name| {
        crate::read_repo_bytes(checkout, project_dir, name)
            .ok()
            .flatten()
    })?;
    let mut h = sha2::Sha256::new();
    h.update(install.as_bytes());
    h.update([0]);
    h.update(&lockfile);
    // Another Node version may need other native modules: it must not reuse this entry.
    h.update([0]);
    h.update(toolchain.as_bytes());
    // What else decides what the install makes: an entry made by a commit whose install
    // hook rewrote node_modules must not be restored for one without the hook.
    for name in INSTALL_SETTINGS {
        h.update([0]);
        h.update(name.as_bytes());
        if let Ok(Some(bytes)) = crate::read_repo_bytes(checkout, project_dir, name) {
            h.update([1]);
            h.update(sha2::Sha256::digest(&bytes));
        }
    }
    h.update([0]);
    h.update(install_part_of_package_json(
        crate::read_repo_bytes(checkout, project_dir, "package.json")
            .ok()
            .flatten()
            .as_deref(),
    ));
    Some(format!(
        "{slug}--{scope}--{}",
        &hex::encode(h.finalize())[..24]
    ))
}

/// Package managers' settings and hooks in the install folder, part of an entry's key.
const INSTALL_SETTINGS: &[&str] = &[
    ".npmrc",
    ".yarnrc",
    ".yarnrc.yml",
    ".pnpmfile.cjs",
    ".pnpmfile.mjs",
    "pnpm-workspace.yaml",
    "bunfig.toml",
];

/// What an install reads of `package.json`, as canonical JSON: its dependencies and
/// their overrides, the package manager, workspaces, and the scripts an install runs.
/// Not its version or build scripts: a release bump or a new build command keeps the
/// entry. Unparsable: the whole file.
fn install_part_of_package_json(bytes: Option<&[u8]>) -> Vec<u8> {
    const FIELDS: &[&str] = &[
        "dependencies",
        "devDependencies",
        "optionalDependencies",
        "peerDependencies",
        "bundleDependencies",
        "bundledDependencies",
        "overrides",
        "resolutions",
        "pnpm",
        "packageManager",
        "workspaces",
        "dependenciesMeta",
        "peerDependenciesMeta",
    ];
    const INSTALL_SCRIPTS: &[&str] = &[
        "preinstall",
        "install",
        "postinstall",
        "prepublish",
        "preprepare",
        "prepare",
        "postprepare",
        "dependencies",
    ];
    let Some(bytes) = bytes else {
        return Vec::new();
    };
    let Ok(serde_json::Value::Object(pkg)) = serde_json::from_slice::<serde_json::Value>(bytes)
    else {
        return bytes.to_vec();
    };
    let mut part = serde_json::Map::new();
    for f in FIELDS {
        if let Some(v) = pkg.get(*f) {
            part.insert((*f).to_string(), v.clone());
        }
    }
    if let Some(serde_json::Value::Object(scripts)) = pkg.get("scripts") {
        let install: serde_json::Map<_, _> = scripts
            .iter()
            .filter(|(k, _)| INSTALL_SCRIPTS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        part.insert("scripts".into(), serde_json::Value::Object(install));
    }
    // serde_json's map is ordered by key: the same fields give the same bytes.
    serde_json::to_vec(&part).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_what_the_install_reads_and_nothing_else() {
        let project = tempfile::tempdir().unwrap();
        let p = project.path();
        std::fs::write(p.join("package-lock.json"), "{}").unwrap();
        let write_pkg = |v: serde_json::Value| {
            std::fs::write(p.join("package.json"), v.to_string()).unwrap();
            key("app", "production", p, p, "npm ci", "node@24 npm@10").unwrap()
        };
        let base = write_pkg(serde_json::json!({
            "name": "app", "version": "1.0.0",
            "scripts": { "build": "vite build" },
            "dependencies": { "vite": "8" }
        }));
        // A release bump or another build command: the same entry.
        assert_eq!(
            base,
            write_pkg(serde_json::json!({
                "name": "app", "version": "1.0.1",
                "scripts": { "build": "vite build --mode x" },
                "dependencies": { "vite": "8" }
            }))
        );
        // An install hook, an override: another entry.
        assert_ne!(
            base,
            write_pkg(serde_json::json!({
                "name": "app", "version": "1.0.0",
                "scripts": { "build": "vite build", "postinstall": "node patch.js" },
                "dependencies": { "vite": "8" }
            }))
        );
        assert_ne!(
            base,
            write_pkg(serde_json::json!({
                "name": "app", "version": "1.0.0",
                "scripts": { "build": "vite build" },
                "dependencies": { "vite": "8" }, "overrides": { "esbuild": "0.25" }
            }))
        );
        // The package manager's settings and hooks.
        write_pkg(serde_json::json!({
            "name": "app", "version": "1.0.0",
            "scripts": { "build": "vite build" },
            "dependencies": { "vite": "8" }
        }));
        std::fs::write(p.join(".npmrc"), "install-links=true\n").unwrap();
        assert_ne!(
            base,
            key("app", "production", p, p, "npm ci", "node@24 npm@10").unwrap()
        );
    }
}
