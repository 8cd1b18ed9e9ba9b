//! `cdeploy.toml`: the per-repository configuration. Every key is optional.
//!
//! Errors name the file, the line and the key; unknown keys are returned as warnings so
//! a typo never silently changes a deployment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{git, ids};

pub const FILE_NAME: &str = "cdeploy.toml";

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "BuildConfig::is_empty")]
    pub build: BuildConfig,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "SiteConfig::is_empty")]
    pub site: SiteConfig,
    /// `[runtime]`: a server app's server (see [`RuntimeConfig`]).
    #[serde(default, skip_serializing_if = "RuntimeConfig::is_empty")]
    pub runtime: RuntimeConfig,
    /// `[[redirects]]` and `[[headers]]`: rules after the output's `_redirects` and
    /// `_headers` (see [`crate::rules`]).
    #[serde(flatten)]
    pub rules: crate::rules::RulesConfig,
}

/// `[build]`: how to turn source into static output. Also the API's `"build"` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BuildConfig {
    /// Monorepo subdirectory, relative to the repository root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Node.js version for the build: exact (`22.12.0`), a major (`22`), a range
    /// (`>=22.12`) or `lts/<name>`; else `.nvmrc`, `.node-version`, package.json.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `false`: this build neither restores nor saves the dependency cache
    /// (`cdeploy deploy --force`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    /// `false`: this build runs even when a ready deployment of the project was built
    /// from the same inputs (`cdeploy deploy --force`; for builds that fetch data the
    /// repository does not hold). Unset: such a build is skipped and that deployment's
    /// output reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_unchanged: Option<bool>,
}

impl BuildConfig {
    pub fn is_empty(&self) -> bool {
        self == &BuildConfig::default()
    }

    /// Checks that paths stay inside the repository and commands are sane.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (key, value) in [("root", &self.root), ("output", &self.output)] {
            if let Some(v) = value {
                if let Err(msg) = check_relative_path(v) {
                    return Err((format!("build.{key}"), msg));
                }
            }
        }
        for (key, value) in [("install", &self.install), ("command", &self.command)] {
            if let Some(v) = value {
                if v.contains('\0') {
                    return Err((format!("build.{key}"), "contains a NUL byte".into()));
                }
                if v.len() > 4096 {
                    return Err((
                        format!("build.{key}"),
                        "is longer than 4096 characters".into(),
                    ));
                }
            }
        }
        if let Some(v) = &self.node {
            if let Err(msg) = crate::plan::check_node_spec(v) {
                return Err(("build.node".into(), msg.to_string()));
            }
        }
        Ok(())
    }
}

/// `[site]`: how the proxy resolves paths. `None` means "decide from the output".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SiteConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spa: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_urls: Option<bool>,
    /// `false`: a built site without a root `index.html` is fine (an asset bucket, an
    /// API mock). By default such an output fails the build: it is almost always the
    /// wrong folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_index: Option<bool>,
}

impl SiteConfig {
    pub fn is_empty(&self) -> bool {
        self == &SiteConfig::default()
    }
}

/// `[runtime]`: how a server app's server starts, for a project no framework preset
/// knows as one (a plain Node.js server), and what the deployment checks before it is
/// ready. Frameworks that build a server (Next.js) need none of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    /// The command that starts the server (`node server.js`), run in the project folder
    /// after the build; it must listen on `PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// The path a health request asks for before the deployment is ready (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// A folder of static files the proxy serves itself (default `public` when it
    /// exists), relative to the project folder; everything else goes to the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assets: Option<String>,
}

impl RuntimeConfig {
    pub fn is_empty(&self) -> bool {
        self == &RuntimeConfig::default()
    }

    pub fn validate(&self) -> Result<(), (String, String)> {
        if let Some(start) = &self.start {
            let words = crate::plan::server::start_words(start)
                .map_err(|m| ("runtime.start".to_string(), m))?;
            if words.first().map(String::as_str) != Some("node") {
                return Err((
                    "runtime.start".into(),
                    format!("starts with `node` (the server runs on the build's Node.js), not {start:?}"),
                ));
            }
        }
        if let Some(h) = &self.health {
            if !h.starts_with('/') || h.len() > 1024 || h.contains(char::is_whitespace) {
                return Err((
                    "runtime.health".into(),
                    format!("{h:?} is not a path (it starts with '/', has no spaces and at most 1024 characters)"),
                ));
            }
        }
        if let Some(a) = &self.assets {
            check_relative_path(a).map_err(|m| ("runtime.assets".to_string(), m))?;
        }
        Ok(())
    }
}

/// A path that must stay inside the tree it is relative to.
pub fn check_relative_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("is empty".into());
    }
    if p.contains('\0') || p.contains('\\') {
        return Err("contains a NUL byte or a backslash".into());
    }
    if p.starts_with('/') {
        return Err(format!("{p:?} must be relative to the repository root"));
    }
    if p.split('/').any(|seg| seg == "..") {
        return Err(format!("{p:?} may not contain '..'"));
    }
    Ok(())
}

/// True for a portable environment variable name.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 256
}

/// A problem in a config file, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A parsed file plus the warnings (unknown keys) found on the way.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub config: ProjectConfig,
    pub warnings: Vec<String>,
}

/// Reads `dir/cdeploy.toml`; a missing file is the default configuration.
pub fn load_dir(dir: &Path) -> Result<Loaded, ConfigError> {
    let file = dir.join(FILE_NAME);
    match std::fs::read_to_string(&file) {
        Ok(text) => parse(&text, &file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Loaded::default()),
        Err(e) => Err(ConfigError {
            file,
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        }),
    }
}

/// Parses and validates the text of a config file. `file` is only used in messages.
pub fn parse(text: &str, file: &Path) -> Result<Loaded, ConfigError> {
    let err = |line: Option<usize>, key: Option<String>, message: String| ConfigError {
        file: file.to_path_buf(),
        line,
        key,
        message,
    };
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        err(
            line,
            line.and_then(|l| key_on_line(text, l)),
            e.message().to_string(),
        )
    })?;
    let mut warnings = Vec::new();
    check_unknown_keys(text, &table, file, &mut warnings);

    let config: ProjectConfig = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        err(
            line,
            line.and_then(|l| key_on_line(text, l)),
            e.message().to_string(),
        )
    })?;

    let locate = |key: &str| find_key_line(text, key);
    if let Some(slug) = &config.slug {
        ids::validate_slug(slug)
            .map_err(|e| err(locate("slug"), Some("slug".into()), e.to_string()))?;
    }
    if let Some(url) = &config.git {
        git::validate_git_url(url)
            .map_err(|e| err(locate("git"), Some("git".into()), e.to_string()))?;
    }
    if let Some(branch) = &config.branch {
        git::validate_git_ref(branch)
            .map_err(|e| err(locate("branch"), Some("branch".into()), e.to_string()))?;
    }
    config.runtime.validate().map_err(|(key, msg)| {
        let short = key.rsplit('.').next().unwrap_or(&key).to_string();
        err(locate(&short), Some(key), msg)
    })?;
    config.build.validate().map_err(|(key, msg)| {
        let short = key.rsplit('.').next().unwrap_or(&key).to_string();
        err(locate(&short), Some(key), msg)
    })?;
    for name in config.env.keys() {
        if !is_env_name(name) {
            return Err(err(
                locate(name),
                Some(format!("env.{name}")),
                "is not a valid environment variable name (letters, digits, '_'; not starting with a digit)".into(),
            ));
        }
    }
    if let Err(errors) = config.rules.compile(FILE_NAME) {
        let first = &errors[0];
        // `cdeploy.toml [[redirects]] #2`: the line of that table's header.
        let line = first.at.rsplit_once(" #").and_then(|(head, n)| {
            let table = head.rsplit_once(' ').map(|(_, t)| t)?;
            let n: usize = n.parse().ok()?;
            text.lines()
                .enumerate()
                .filter(|(_, l)| l.trim() == table)
                .nth(n - 1)
                .map(|(i, _)| i + 1)
        });
        let message = match errors.len() {
            1 => first.reason.clone(),
            n => format!("{} (and {} more)", first.reason, n - 1),
        };
        let key = first.at.split_once(' ').map(|(_, k)| k.to_string());
        return Err(err(line, key, message));
    }
    Ok(Loaded { config, warnings })
}

fn check_unknown_keys(text: &str, table: &toml::Table, file: &Path, warnings: &mut Vec<String>) {
    const TOP: &[&str] = &[
        "slug",
        "git",
        "branch",
        "build",
        "env",
        "site",
        "runtime",
        "redirects",
        "headers",
    ];
    const BUILD: &[&str] = &[
        "root",
        "install",
        "command",
        "output",
        "node",
        "cache",
        "skip_unchanged",
    ];
    const SITE: &[&str] = &["spa", "clean_urls", "require_index"];
    const RUNTIME: &[&str] = &["start", "health", "assets"];
    let mut warn = |key: String| {
        let short = key.rsplit('.').next().unwrap_or(&key).to_string();
        let at = find_key_line(text, &short)
            .map(|l| format!(":{l}"))
            .unwrap_or_default();
        warnings.push(format!(
            "{}{at}: unknown key `{key}` is ignored",
            file.display()
        ));
    };
    for (key, value) in table {
        if !TOP.contains(&key.as_str()) {
            warn(key.clone());
            continue;
        }
        let known: &[&str] = match key.as_str() {
            "build" => BUILD,
            "site" => SITE,
            "runtime" => RUNTIME,
            _ => continue,
        };
        if let Some(sub) = value.as_table() {
            for sub_key in sub.keys() {
                if !known.contains(&sub_key.as_str()) {
                    warn(format!("{key}.{sub_key}"));
                }
            }
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

fn key_on_line(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line - 1)?;
    let (key, _) = l.split_once('=')?;
    let key = key.trim().trim_matches('"');
    let section = text
        .lines()
        .take(line - 1)
        .filter_map(|l| l.trim().strip_prefix('[').and_then(|r| r.strip_suffix(']')))
        .last();
    (!key.is_empty()).then(|| match section {
        Some(s) => format!("{}.{key}", s.trim()),
        None => key.to_string(),
    })
}

fn find_key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.split_once('=')
                .is_some_and(|(k, _)| k.trim().trim_matches('"') == key)
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Loaded, ConfigError> {
        parse(text, Path::new("cdeploy.toml"))
    }

    #[test]
    fn full_file() {
        let l = p(r#"
slug = "my-app"
git = "https://github.com/you/my-app.git"
branch = "main"
[build]
root = "web"
install = "npm ci"
command = "npm run build"
output = "dist"
[env]
VITE_API_URL = "https://api.example.com"
[site]
spa = true
clean_urls = false
"#)
        .unwrap();
        assert!(l.warnings.is_empty());
        assert_eq!(l.config.slug.as_deref(), Some("my-app"));
        assert_eq!(l.config.build.root.as_deref(), Some("web"));
        assert_eq!(l.config.site.spa, Some(true));
        assert_eq!(l.config.env["VITE_API_URL"], "https://api.example.com");
    }

    #[test]
    fn empty_is_default() {
        assert_eq!(p("").unwrap().config, ProjectConfig::default());
    }

    #[test]
    fn type_error_names_line_and_key() {
        let e = p("slug = \"x\"\n[site]\nspa = \"yes\"\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("site.spa"));
        assert!(
            e.to_string()
                .starts_with("cdeploy.toml:3: key `site.spa`: "),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_names_line() {
        let e = p("slug = \"x\"\n[build\n").unwrap_err();
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn invalid_values() {
        let e = p("slug = \"Bad/Slug\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("slug"));
        assert_eq!(e.line, Some(1));
        let e = p("git = \"ext::sh -c id\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("git"));
        let e = p("[build]\noutput = \"../etc\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("build.output"));
        assert_eq!(e.line, Some(2));
        let e = p("[env]\n\"1X\" = \"y\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("env.1X"));
    }

    #[test]
    fn unknown_keys_warn() {
        let l = p("slugg = \"x\"\n[site]\nspa = true\n").unwrap();
        assert_eq!(l.warnings.len(), 1);
        assert!(
            l.warnings[0].contains("unknown key `slugg`"),
            "{:?}",
            l.warnings
        );
        assert!(l.warnings[0].contains("cdeploy.toml:1"), "{:?}", l.warnings);
    }

    #[test]
    fn rule_tables_are_checked_where_they_are_written() {
        let l = p("[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\n[[headers]]\nfor = \"/*\"\n[headers.values]\nX-Frame-Options = \"DENY\"\n").unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        assert_eq!(l.config.rules.redirects[0].to, "/b");
        assert_eq!(l.config.rules.headers[0].values["X-Frame-Options"], "DENY");
        let e = p("[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\n\n[[redirects]]\nfrom = \"/c\"\nto = \"/d/:splat\"\n").unwrap_err();
        assert_eq!(e.line, Some(5));
        assert_eq!(e.key.as_deref(), Some("[[redirects]] #2"));
        assert!(e.message.contains("no `*`"), "{e}");
        let e = p("[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\nsigned = \"X\"\n").unwrap_err();
        assert!(e.message.contains("signed"), "{e}");
    }
}
