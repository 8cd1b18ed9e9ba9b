//! A site's routing rules: redirects, rewrites and proxies (`_redirects`), and response
//! headers by path (`_headers`), in the syntax Netlify and Cloudflare Pages read, plus
//! the same as `[[redirects]]` and `[[headers]]` tables in cdeploy.toml. They are parsed
//! and checked when a deployment is made (a bad line fails the deploy naming
//! `file:line` and the reason), compiled into the deployment's manifest ([`Rules`]),
//! and nothing is guessed at request time.
//!
//! # Layout
//! * this file — [`Rules`], [`compile`] from a deployment's sources, [`RuleError`] and
//!   the limits.
//! * [`pattern`] — path patterns (`/news/:year/*`), matching and filling in targets.
//! * [`redirects`] — the `_redirects` file.
//! * [`headers`] — the `_headers` file.
//! * [`config`] — the `[[redirects]]` and `[[headers]]` tables of cdeploy.toml.
//! * [`route`] — what answers a request: a rule, a file (clean URLs, the SPA fallback,
//!   `404.html`), and which headers rules add.

pub mod config;
pub mod headers;
pub mod pattern;
pub mod redirects;
pub mod route;

use serde::{Deserialize, Serialize};

pub use config::RulesConfig;
pub use headers::HeaderRule;
pub use pattern::{Captures, Pattern};
pub use redirects::Redirect;

/// The redirects file in a deployment's output (its root).
pub const REDIRECTS_FILE: &str = "_redirects";
/// The headers file in a deployment's output (its root).
pub const HEADERS_FILE: &str = "_headers";
/// Largest `_redirects` or `_headers` file.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most redirect rules, and most header rules, of one deployment (files and
/// cdeploy.toml together).
pub const MAX_RULES: usize = 10_000;
/// Longest path pattern or target of a rule (a header value may be 4 times this).
pub const MAX_TARGET_LEN: usize = 2048;

/// One bad line of a rules file: where (`_redirects:12`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {reason}")]
pub struct RuleError {
    pub at: String,
    pub reason: String,
}

/// A deployment's compiled rules, as its manifest holds them: redirects in the order
/// they are tried (`_redirects`, then cdeploy.toml), header rules likewise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirects: Vec<Redirect>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderRule>,
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.redirects.is_empty() && self.headers.is_empty()
    }
}

/// Where a deployment's rules come from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sources<'a> {
    /// The text of the output's `_redirects`, if it has one.
    pub redirects_file: Option<&'a str>,
    /// The text of the output's `_headers`, if it has one.
    pub headers_file: Option<&'a str>,
    /// The tables of cdeploy.toml.
    pub config: Option<&'a RulesConfig>,
}

/// Parses and checks every source; every bad line is reported, not only the first.
pub fn compile(sources: Sources<'_>) -> Result<Rules, Vec<RuleError>> {
    let mut errors = Vec::new();
    let mut rules = Rules::default();
    for (name, text) in [
        (REDIRECTS_FILE, sources.redirects_file),
        (HEADERS_FILE, sources.headers_file),
    ] {
        if text.is_some_and(|t| t.len() as u64 > MAX_FILE_BYTES) {
            errors.push(RuleError {
                at: name.to_string(),
                reason: format!("larger than {} KiB", MAX_FILE_BYTES >> 10),
            });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if let Some(text) = sources.redirects_file {
        match redirects::parse(REDIRECTS_FILE, text) {
            Ok(r) => rules.redirects = r,
            Err(e) => errors.extend(e),
        }
    }
    if let Some(text) = sources.headers_file {
        match headers::parse(HEADERS_FILE, text) {
            Ok(h) => rules.headers = h,
            Err(e) => errors.extend(e),
        }
    }
    if let Some(config) = sources.config {
        match config.compile(crate::config::FILE_NAME) {
            Ok(more) => {
                rules.redirects.extend(more.redirects);
                rules.headers.extend(more.headers);
            }
            Err(e) => errors.extend(e),
        }
    }
    for (what, count) in [
        ("redirect", rules.redirects.len()),
        ("header", rules.headers.len()),
    ] {
        if count > MAX_RULES {
            errors.push(RuleError {
                at: format!("{REDIRECTS_FILE}, {HEADERS_FILE} and cdeploy.toml"),
                reason: format!("{count} {what} rules; at most {MAX_RULES} per deployment"),
            });
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

/// Several errors as one message, a line each (at most 20, then how many more).
pub fn describe(errors: &[RuleError]) -> String {
    const SHOWN: usize = 20;
    let mut lines: Vec<String> = errors.iter().take(SHOWN).map(ToString::to_string).collect();
    if errors.len() > SHOWN {
        lines.push(format!("… and {} more", errors.len() - SHOWN));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_then_config_in_order_and_every_error_reported() {
        let config: RulesConfig = toml::from_str(
            "[[redirects]]\nfrom = \"/b\"\nto = \"/c\"\n[[headers]]\nfor = \"/*\"\nvalues = { X-Two = \"2\" }\n",
        )
        .unwrap();
        let rules = compile(Sources {
            redirects_file: Some("/a /b\n"),
            headers_file: Some("/*\n  X-One: 1\n"),
            config: Some(&config),
        })
        .unwrap();
        let sources: Vec<&str> = rules.redirects.iter().map(|r| r.source.as_str()).collect();
        assert_eq!(sources, ["_redirects:1", "cdeploy.toml [[redirects]] #1"]);
        assert_eq!(rules.headers.len(), 2);

        let errors = compile(Sources {
            redirects_file: Some("/a\n"),
            headers_file: Some("  X: 1\n"),
            config: None,
        })
        .unwrap_err();
        let at: Vec<&str> = errors.iter().map(|e| e.at.as_str()).collect();
        assert_eq!(at, ["_redirects:1", "_headers:1"]);
    }

    #[test]
    fn limits_are_enforced() {
        let many: String = (0..=MAX_RULES).map(|i| format!("/a{i} /b\n")).collect();
        let errors = compile(Sources {
            redirects_file: Some(&many),
            ..Sources::default()
        })
        .unwrap_err();
        assert!(errors[0].reason.contains("at most 10000"), "{errors:?}");
        let huge = "#".repeat(MAX_FILE_BYTES as usize + 1);
        let errors = compile(Sources {
            headers_file: Some(&huge),
            ..Sources::default()
        })
        .unwrap_err();
        assert_eq!(errors[0].to_string(), "_headers: larger than 1024 KiB");
        let long = format!("/a /{}", "x".repeat(MAX_TARGET_LEN));
        let errors = compile(Sources {
            redirects_file: Some(&long),
            ..Sources::default()
        })
        .unwrap_err();
        assert!(errors[0].reason.contains("longer than 2048"), "{errors:?}");
    }
}
