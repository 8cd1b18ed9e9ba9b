//! Which Node.js a build asks for (`[build] node`, `.nvmrc`, `.node-version`, volta,
//! engines, else the default line), and how that request resolves to a published
//! release once the builder has the list.

use std::path::Path;

use serde::Serialize;

use super::project::{rel_display, Project};
use super::repo_file::read_repo_file;
use crate::config::BuildConfig;

/// The Node.js line used when the project names none: the current LTS line every
/// supported framework builds with. A major resolves to its newest release.
pub const DEFAULT_NODE: &str = "24";

/// The requested Node.js version and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeChoice {
    /// As written: `22.12.0`, `22`, `>=22.12`, `lts/jod`…
    pub spec: String,
    /// `.nvmrc`, `package.json engines.node`, `the default`…
    pub source: String,
}

/// Decides which Node.js the build asks for: `[build] node`, `.nvmrc`, `.node-version`
/// (from the project up to the repository root, like nvm), `volta.node`, `engines.node`,
/// else [`DEFAULT_NODE`].
pub(super) fn node_version(
    root: &Path,
    dir: &Path,
    project: &Project,
    cfg: &BuildConfig,
) -> NodeChoice {
    if let Some(v) = cfg.node.as_deref().filter(|v| !v.trim().is_empty()) {
        return NodeChoice {
            spec: v.trim().to_string(),
            source: "build.node in cdeploy.toml".into(),
        };
    }
    let mut at = dir;
    loop {
        for file in [".nvmrc", ".node-version"] {
            if let Some(spec) = read_repo_file(root, at, file)
                .ok()
                .flatten()
                .and_then(|t| first_version_line(&t))
            {
                let rel = rel_display(root, &at.join(file));
                return NodeChoice { spec, source: rel };
            }
        }
        if at == root {
            break;
        }
        match at.parent() {
            Some(p) if p.starts_with(root) => at = p,
            _ => break,
        }
    }
    if let Some(v) = project.str_at(&["volta", "node"]) {
        return NodeChoice {
            spec: v,
            source: "package.json volta.node".into(),
        };
    }
    if let Some(v) = project.str_at(&["engines", "node"]) {
        return NodeChoice {
            spec: v,
            source: "package.json engines.node".into(),
        };
    }
    NodeChoice {
        spec: DEFAULT_NODE.into(),
        source: "the default".into(),
    }
}

/// The version in an `.nvmrc` (comments and blank lines skipped).
fn first_version_line(text: &str) -> Option<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find(|l| !l.is_empty())
        .filter(|l| l.len() <= 64)
        .map(String::from)
}

/// Node.js LTS lines by codename, as `lts/<name>` in `.nvmrc`.
pub const LTS_CODENAMES: &[(&str, u64)] = &[
    ("argon", 4),
    ("boron", 6),
    ("carbon", 8),
    ("dubnium", 10),
    ("erbium", 12),
    ("fermium", 14),
    ("gallium", 16),
    ("hydrogen", 18),
    ("iron", 20),
    ("jod", 22),
    ("krypton", 24),
];

/// A Node.js version request in a form the builder can resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSpec {
    /// A semver range (`22`, `22.x`, `>=22.12`, `^20.11`); an exact version is a range
    /// of one.
    Range(String),
    /// `node`, `latest`, `current`: the newest release.
    Latest,
}

/// A Node.js request that is not one: the message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeSpecError {
    #[error("{0:?} is not a Node.js LTS line (lts/jod, lts/krypton, lts/*…)")]
    UnknownLts(String),
    #[error("{0:?} is not a Node.js version: use a version (22.12.0), a major (22), a range (>=22.12) or lts/<name>")]
    NotAVersion(String),
    #[error("is longer than 64 characters")]
    TooLong,
}

/// Parses what `.nvmrc`, `engines.node` or `[build] node` say into a [`NodeSpec`]; the
/// error says what is accepted.
pub fn parse_node_spec(spec: &str) -> Result<NodeSpec, NodeSpecError> {
    let s = spec.trim();
    let lower = s.to_ascii_lowercase();
    if matches!(lower.as_str(), "node" | "latest" | "current" | "stable") {
        return Ok(NodeSpec::Latest);
    }
    if let Some(name) = lower.strip_prefix("lts/") {
        if name == "*" || name == "latest" {
            let newest = LTS_CODENAMES.last().map(|(_, m)| *m).unwrap_or(24);
            return Ok(NodeSpec::Range(newest.to_string()));
        }
        return LTS_CODENAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| NodeSpec::Range(m.to_string()))
            .ok_or_else(|| NodeSpecError::UnknownLts(s.to_string()));
    }
    let s = s.strip_prefix('v').unwrap_or(s);
    nodejs_semver::Range::parse(s)
        .map(|_| NodeSpec::Range(s.to_string()))
        .map_err(|_| NodeSpecError::NotAVersion(spec.to_string()))
}

/// The releases among published `versions` (pre-releases and junk dropped), oldest first.
pub fn releases(versions: &[String]) -> Vec<nodejs_semver::Version> {
    let mut parsed: Vec<nodejs_semver::Version> = versions
        .iter()
        .filter_map(|v| nodejs_semver::Version::parse(v).ok())
        .filter(|v| !v.is_prerelease())
        .collect();
    parsed.sort();
    parsed
}

/// Validation of `[build] node`.
pub fn check_node_spec(spec: &str) -> Result<(), NodeSpecError> {
    if spec.len() > 64 {
        return Err(NodeSpecError::TooLong);
    }
    parse_node_spec(spec).map(|_| ())
}

/// Picks the Node.js release for `spec` from the published `versions`: the default line's
/// newest release when it satisfies the request (`>=18` means "works on 18 and later",
/// not "the newest Node"), else the newest release that does. Pre-releases never.
pub fn pick_node_version(spec: &NodeSpec, versions: &[String]) -> Option<String> {
    let parsed = releases(versions);
    let range = match spec {
        NodeSpec::Latest => return parsed.last().map(|v| v.to_string()),
        NodeSpec::Range(r) => nodejs_semver::Range::parse(r).ok()?,
    };
    let default_major: u64 = DEFAULT_NODE.parse().unwrap_or(24);
    let newest_default = parsed.iter().rev().find(|v| v.major == default_major);
    if let Some(v) = newest_default.filter(|v| range.satisfies(v)) {
        return Some(v.to_string());
    }
    parsed
        .iter()
        .rev()
        .find(|v| range.satisfies(v))
        .map(|v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan;
    use crate::plan::test_support::{plan_of, project};

    #[test]
    fn node_version_sources_in_order() {
        let cfg = BuildConfig {
            node: Some("20".into()),
            ..Default::default()
        };
        let d = project(&[
            (
                "package.json",
                r#"{"engines":{"node":">=22.12"},"volta":{"node":"22.13.1"}}"#,
            ),
            (".node-version", "22.11.0"),
        ]);
        let p = plan(d.path(), d.path(), &cfg, &Default::default());
        assert_eq!(p.node.unwrap().source, "build.node in cdeploy.toml");
        let p = plan(
            d.path(),
            d.path(),
            &BuildConfig::default(),
            &Default::default(),
        );
        assert_eq!(p.node.unwrap().spec, "22.11.0");
        std::fs::remove_file(d.path().join(".node-version")).unwrap();
        let p = plan(
            d.path(),
            d.path(),
            &BuildConfig::default(),
            &Default::default(),
        );
        assert_eq!(p.node.unwrap().source, "package.json volta.node");
        let p = plan_of(&[("package.json", r#"{"engines":{"node":">=22.12"}}"#)]);
        assert_eq!(p.node.unwrap().source, "package.json engines.node");
    }

    #[test]
    fn node_specs_resolve_to_a_release() {
        let versions: Vec<String> = [
            "20.18.0",
            "20.19.5",
            "22.11.0",
            "22.12.0",
            "22.21.1",
            "24.1.0",
            "24.11.1",
            "25.0.0",
            "26.0.0-rc.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let pick = |s: &str| pick_node_version(&parse_node_spec(s).unwrap(), &versions);
        assert_eq!(pick("22.12.0").as_deref(), Some("22.12.0"));
        assert_eq!(pick("v22.12.0").as_deref(), Some("22.12.0"));
        assert_eq!(pick("22").as_deref(), Some("22.21.1"));
        assert_eq!(pick("20.x").as_deref(), Some("20.19.5"));
        // A floor means "works on this and later": the default line when it fits.
        assert_eq!(pick(">=18").as_deref(), Some("24.11.1"));
        assert_eq!(pick(">=22.12").as_deref(), Some("24.11.1"));
        assert_eq!(pick("^20.11 || ^22").as_deref(), Some("22.21.1"));
        assert_eq!(pick("lts/jod").as_deref(), Some("22.21.1"));
        assert_eq!(pick("node").as_deref(), Some("25.0.0"));
        assert_eq!(pick("19"), None);
        assert!(parse_node_spec("lts/nope")
            .unwrap_err()
            .to_string()
            .contains("LTS"));
        assert!(parse_node_spec("banana")
            .unwrap_err()
            .to_string()
            .contains("not a Node.js version"));
    }

    #[test]
    fn bad_requests_say_what_is_accepted() {
        assert_eq!(
            parse_node_spec(" lts/nope ").unwrap_err().to_string(),
            "\"lts/nope\" is not a Node.js LTS line (lts/jod, lts/krypton, lts/*…)"
        );
        assert_eq!(
            parse_node_spec("banana").unwrap_err().to_string(),
            "\"banana\" is not a Node.js version: use a version (22.12.0), a major (22), a range (>=22.12) or lts/<name>"
        );
        assert_eq!(
            check_node_spec(&"1".repeat(65)).unwrap_err().to_string(),
            "is longer than 64 characters"
        );
        assert_eq!(check_node_spec("22"), Ok(()));
    }
}
