//! A server app's deployment as storage holds it: how its server starts ([`ServerSpec`],
//! in the manifest, so every proxy knows a request may go to a server) and the files
//! it runs from ([`ServerBundle`], `deployments/<id>/server.json`, read only by the host
//! that starts it).
//!
//! The bundle is content-addressed like a site's files: each file is a blob, so the
//! thousands of `node_modules` files two deployments share are stored once. Symbolic
//! links are kept as links (pnpm's `node_modules` is made of them, and Node resolves
//! a package from where its link points).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `runtime-env/<slug>/<target>.json`: a project's variables marked `runtime` for one
/// target, sealed with the operator's protection keyring, which the servers and the
/// proxies share (never stored plain). Servers on `cdeploy-proxy` replicas, which have
/// no database, read them here at each start; a copy moved to another project's or
/// target's place does not open.
#[derive(Clone, Serialize, Deserialize)]
pub struct SealedEnv {
    key: String,
    sealed: String,
}

impl std::fmt::Debug for SealedEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedEnv({})", self.key)
    }
}

impl SealedEnv {
    fn aad(slug: &str, target: &str) -> Vec<u8> {
        format!("cdeploy-runtime-env\0{slug}\0{target}").into_bytes()
    }

    pub fn seal(
        slug: &str,
        target: &str,
        vars: &BTreeMap<String, String>,
        keys: &crate::seal::Keyring,
    ) -> SealedEnv {
        let json = serde_json::to_vec(vars).expect("a map of strings serializes");
        let (key, sealed) = keys.seal(&Self::aad(slug, target), &json);
        SealedEnv { key, sealed }
    }

    /// The variables, opened for `slug`'s `target`.
    pub fn open(
        &self,
        slug: &str,
        target: &str,
        keys: &crate::seal::Keyring,
    ) -> Result<BTreeMap<String, String>, String> {
        let json = keys
            .open(&Self::aad(slug, target), &self.key, &self.sealed)
            .map_err(|e| format!("the stored variables do not open: {e}"))?;
        serde_json::from_slice(&json)
            .map_err(|e| format!("the stored variables are unreadable: {e}"))
    }
}

/// The largest number of files and links a server bundle may hold.
pub const MAX_BUNDLE_ENTRIES: usize = 200_000;

/// How a deployment's server starts; part of its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSpec {
    /// What made it (`nextjs`, `node`): for the log and `inspect`.
    pub kind: String,
    /// The exact Node.js version it runs on (the build's).
    pub node: String,
    /// The command, run in `cwd`: its first word is `node`, resolved to that version.
    pub command: Vec<String>,
    /// The working directory, relative to the bundle's root (`.`: the root).
    pub cwd: String,
    /// The path a health request asks for before the deployment is ready.
    pub health: String,
}

impl ServerSpec {
    /// Checks what a runtime host will trust: a command that starts with `node`, and a
    /// working directory and health path that cannot leave their places.
    pub fn validate(&self) -> Result<(), String> {
        if self.command.first().map(String::as_str) != Some("node") {
            return Err(format!(
                "a server's command starts with node, not {:?}",
                self.command.first()
            ));
        }
        if self.command.len() > 64 || self.command.iter().any(|a| a.contains('\0')) {
            return Err("a server's command has more than 64 words or a NUL byte".into());
        }
        if self.cwd != "." {
            crate::manifest::validate_tree_path(&self.cwd)?;
        }
        if !self.health.starts_with('/') || self.health.len() > 1024 {
            return Err(format!(
                "a health path starts with '/' and has at most 1024 characters: {:?}",
                self.health
            ));
        }
        if !crate::plan::is_exact(&self.node) {
            return Err(format!("{:?} is not an exact Node.js version", self.node));
        }
        Ok(())
    }
}

/// What a server app's build hands to activation: how its server starts and its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerOutput {
    pub spec: ServerSpec,
    pub bundle: ServerBundle,
}

impl ServerOutput {
    pub fn validate(&self) -> Result<(), String> {
        self.spec.validate()?;
        self.bundle.validate()?;
        // The server cannot start from a folder the bundle does not have.
        if self.spec.cwd != "."
            && !self
                .bundle
                .files
                .keys()
                .any(|p| p.starts_with(&format!("{}/", self.spec.cwd)))
        {
            return Err(format!(
                "the server's folder {} is not in its bundle",
                self.spec.cwd
            ));
        }
        Ok(())
    }

    /// Files and bytes of the bundle (counted with the site's against the
    /// deployment's limits).
    pub fn totals(&self) -> (usize, u64) {
        (
            self.bundle.files.len() + self.bundle.links.len(),
            self.bundle.files.values().map(|f| f.size).sum(),
        )
    }
}

/// One file of a server bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFile {
    pub hash: String,
    pub size: u64,
    /// Whether it is executable (a package's `bin` script, a native helper).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exec: bool,
}

/// `deployments/<id>/server.json`: the files a server runs from, by path relative to
/// the bundle's root, and its symbolic links with their targets as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerBundle {
    pub files: BTreeMap<String, BundleFile>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub links: BTreeMap<String, String>,
}

impl ServerBundle {
    /// Checks every path and link before anything is written from it: paths are
    /// relative and plain, links are relative and resolve inside the bundle, hashes are
    /// blob hashes.
    pub fn validate(&self) -> Result<(), String> {
        if self.files.len() + self.links.len() > MAX_BUNDLE_ENTRIES {
            return Err(format!(
                "a server bundle holds at most {MAX_BUNDLE_ENTRIES} files and links"
            ));
        }
        for (path, f) in &self.files {
            check_bundle_path(path)?;
            self.not_through_a_link(path, path)?;
            if f.hash.len() != 64 || !f.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{path}: {:?} is not a blob hash", f.hash));
            }
        }
        for (path, target) in &self.links {
            check_bundle_path(path)?;
            self.not_through_a_link(path, path)?;
            let resolved = link_target_inside(path, target)?;
            // The target is read as text: each folder it passes through must be a
            // folder, not another link (`a -> ../..` makes `b -> a/x` leave the bundle
            // though its text stays inside).
            self.not_through_a_link(&resolved, path)?;
            let mut walked = path
                .rsplit_once('/')
                .map(|(dir, _)| dir.to_string())
                .unwrap_or_default();
            for seg in target.split('/').filter(|s| !s.is_empty() && *s != ".") {
                // Going on from a link (into it, or `..` out of where it points) is
                // following it.
                if self.links.contains_key(&walked) {
                    return Err(format!(
                        "link {path} -> {target} passes through the link {walked}"
                    ));
                }
                walked = match (seg, walked.rsplit_once('/')) {
                    ("..", Some((dir, _))) => dir.to_string(),
                    ("..", None) => String::new(),
                    (s, _) if walked.is_empty() => s.to_string(),
                    (s, _) => format!("{walked}/{s}"),
                };
            }
        }
        Ok(())
    }
}

impl ServerBundle {
    /// Refuses `path` when a folder above it is a link of the bundle (writing it would
    /// follow the link). `what` names the entry in the error.
    fn not_through_a_link(&self, path: &str, what: &str) -> Result<(), String> {
        let mut prefix = String::new();
        let mut segs = path.split('/').peekable();
        while let Some(seg) = segs.next() {
            if segs.peek().is_none() {
                break;
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(seg);
            if self.links.contains_key(&prefix) {
                return Err(format!("{what} goes through the link {prefix}"));
            }
        }
        Ok(())
    }
}

fn check_bundle_path(path: &str) -> Result<(), String> {
    if path.starts_with('/') {
        return Err(format!("bundle path {path:?} is absolute"));
    }
    // `.git` is a fine name inside node_modules, unlike in a source tree.
    if path.is_empty() || path.len() > 1024 || path.contains('\0') || path.contains('\\') {
        return Err(format!(
            "bundle path {path:?} is empty, too long or has a NUL byte or backslash"
        ));
    }
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!(
            "bundle path {path:?} has an empty, '.' or '..' segment"
        ));
    }
    Ok(())
}

/// Where the link at `path` points, as a path from the bundle's root; an error when it
/// is absolute or climbs out.
pub fn link_target_inside(path: &str, target: &str) -> Result<String, String> {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return Err(format!("link {path} -> {target:?} is not a relative link"));
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    parts.pop();
    for seg in target.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("link {path} -> {target} leaves the bundle"));
                }
            }
            s => parts.push(s),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_stay_inside_the_bundle() {
        assert_eq!(
            link_target_inside("node_modules/next", ".pnpm/next@16/node_modules/next"),
            Ok("node_modules/.pnpm/next@16/node_modules/next".into())
        );
        assert_eq!(link_target_inside("a/b/c", "../../d"), Ok("d".into()));
        for bad in ["../../x", "/etc/passwd", "", "../../../a/b"] {
            assert!(link_target_inside("a/b", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn specs_and_bundles_are_checked() {
        let spec = ServerSpec {
            kind: "nextjs".into(),
            node: "24.1.0".into(),
            command: vec!["node".into(), "server.js".into()],
            cwd: ".".into(),
            health: "/".into(),
        };
        assert!(spec.validate().is_ok());
        for bad in [
            ServerSpec {
                command: vec!["sh".into()],
                ..spec.clone()
            },
            ServerSpec {
                cwd: "../x".into(),
                ..spec.clone()
            },
            ServerSpec {
                health: "x".into(),
                ..spec.clone()
            },
            ServerSpec {
                node: "24".into(),
                ..spec.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let mut b = ServerBundle::default();
        b.files.insert(
            "server.js".into(),
            BundleFile {
                hash: "a".repeat(64),
                size: 1,
                exec: false,
            },
        );
        assert!(b.validate().is_ok());
        b.links.insert("node_modules/x".into(), "../../etc".into());
        assert!(b.validate().is_err());
        b.links.clear();
        // A chain: each link's text stays inside, but the second passes through the
        // first, which climbs back to the root.
        b.links.insert("d0/d1/s".into(), "../..".into());
        b.links.insert("next".into(), "d0/d1/s/../../../etc".into());
        assert!(b
            .validate()
            .unwrap_err()
            .contains("passes through the link d0/d1/s"));
        b.links.clear();
        b.links.insert("a".into(), ".".into());
        b.files.insert(
            "a/x".into(),
            BundleFile {
                hash: "a".repeat(64),
                size: 1,
                exec: false,
            },
        );
        assert!(b
            .validate()
            .unwrap_err()
            .contains("goes through the link a"));
        b.files.remove("a/x");
        b.links.clear();
        // pnpm's links between packages pass through folders only.
        b.links.insert(
            "node_modules/next".into(),
            ".pnpm/next@16/node_modules/next".into(),
        );
        b.links.insert(
            "node_modules/.pnpm/next@16/node_modules/react".into(),
            "../../react@19/node_modules/react".into(),
        );
        assert!(b.validate().is_ok(), "{:?}", b.validate());
        b.links.clear();
        b.files.insert(
            "../x".into(),
            BundleFile {
                hash: "a".repeat(64),
                size: 1,
                exec: false,
            },
        );
        assert!(b.validate().is_err());
    }
}
