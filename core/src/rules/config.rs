//! `[[redirects]]` and `[[headers]]` in cdeploy.toml, shaped as in netlify.toml:
//!
//! ```toml
//! [[redirects]]
//! from = "/blog/*"
//! to = "/news/:splat"
//! status = 301          # the default
//! force = false         # the default
//! query = { id = ":id" } # optional conditions
//!
//! [[headers]]
//! for = "/*"
//! [headers.values]
//! X-Frame-Options = "DENY"
//! ```
//!
//! They follow the output's `_redirects` and `_headers`. Keys Netlify has and cdeploy
//! does not (`conditions`, `signed`, a proxy's `headers`) are refused, never ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::headers::{self, HeaderRule};
use super::pattern::Pattern;
use super::redirects::{self, Redirect};
use super::{RuleError, Rules};

/// The tables of cdeploy.toml, as written (and as the API carries them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RulesConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirects: Vec<RedirectConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeadersConfig>,
}

/// One `[[redirects]]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    pub from: String,
    pub to: String,
    /// 301 unless given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Query conditions: `key = ":name"` (present; captured) or `key = "value"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
}

/// One `[[headers]]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    #[serde(rename = "for")]
    pub path: String,
    /// Header name → value. A value written over several lines is one line, its lines
    /// joined with a space (a trailing `\` dropped).
    #[serde(default)]
    pub values: BTreeMap<String, String>,
}

impl RulesConfig {
    pub fn is_empty(&self) -> bool {
        self.redirects.is_empty() && self.headers.is_empty()
    }

    /// Compiles the tables; `file` names them in messages (`cdeploy.toml [[redirects]] #2`).
    pub fn compile(&self, file: &str) -> Result<Rules, Vec<RuleError>> {
        let mut rules = Rules::default();
        let mut errors = Vec::new();
        for (i, r) in self.redirects.iter().enumerate() {
            let source = format!("{file} [[redirects]] #{}", i + 1);
            match redirect(r, &source) {
                Ok(rule) => rules.redirects.push(rule),
                Err(reason) => errors.push(RuleError { at: source, reason }),
            }
        }
        for (i, h) in self.headers.iter().enumerate() {
            let source = format!("{file} [[headers]] #{}", i + 1);
            match header_rule(h, &source) {
                Ok(rule) => rules.headers.push(rule),
                Err(reason) => errors.push(RuleError { at: source, reason }),
            }
        }
        if errors.is_empty() {
            Ok(rules)
        } else {
            Err(errors)
        }
    }
}

fn redirect(r: &RedirectConfig, source: &str) -> Result<Redirect, String> {
    let query = r
        .query
        .iter()
        .map(|(k, v)| redirects::query_condition(&format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()?;
    redirects::rule(
        &r.from,
        query,
        &r.to,
        (r.status.unwrap_or(301), r.force),
        source,
    )
}

fn header_rule(h: &HeadersConfig, source: &str) -> Result<HeaderRule, String> {
    let path = Pattern::parse(&h.path).map_err(|e| format!("for = {:?}: {e}", h.path))?;
    let mut rule = HeaderRule {
        path,
        set: Vec::new(),
        remove: Vec::new(),
        source: source.to_string(),
    };
    if h.values.is_empty() {
        return Err("no values (add a [headers.values] table)".into());
    }
    for (name, value) in &h.values {
        let joined: Vec<&str> = value
            .lines()
            .map(|l| l.trim().trim_end_matches('\\').trim_end())
            .filter(|l| !l.is_empty())
            .collect();
        headers::set_header(&mut rule, name, &joined.join(" "))?;
    }
    Ok(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(text: &str) -> Result<Rules, Vec<RuleError>> {
        toml::from_str::<RulesConfig>(text)
            .unwrap()
            .compile("cdeploy.toml")
    }

    #[test]
    fn netlify_toml_tables_compile() {
        let rules = compiled(
            r#"
[[redirects]]
from = "/store"
to = "/blog/:id"
query = { id = ":id" }

[[redirects]]
from = "/api/*"
to = "https://api.example.com/:splat"
status = 200
force = true

[[headers]]
for = "/*"
[headers.values]
X-Frame-Options = "DENY"
Link = '''
  </a.css>; rel=preload; as=style, \
  </b.css>; rel=preload; as=style'''
"#,
        )
        .unwrap();
        assert_eq!(rules.redirects[0].status, 301);
        assert_eq!(rules.redirects[0].query.len(), 1);
        assert!(rules.redirects[1].is_proxy() && rules.redirects[1].force);
        assert_eq!(
            rules.headers[0].set,
            vec![
                (
                    "link".to_string(),
                    "</a.css>; rel=preload; as=style, </b.css>; rel=preload; as=style".to_string()
                ),
                ("x-frame-options".to_string(), "DENY".to_string()),
            ]
        );
    }

    #[test]
    fn bad_tables_name_themselves() {
        let errors =
            compiled("[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\nstatus = 305\n").unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "cdeploy.toml [[redirects]] #1: status 305 is not one a rule may have (200, 301, 302, 303, 307, 308, 404, 410)"
        );
        let errors =
            compiled("[[headers]]\nfor = \"/*\"\nvalues = { Set-Cookie = \"a=b\" }\n").unwrap_err();
        assert!(errors[0].reason.contains("set by the server"), "{errors:?}");
        let unknown = toml::from_str::<RulesConfig>(
            "[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\nconditions = { Country = [\"US\"] }\n",
        );
        assert!(unknown.unwrap_err().to_string().contains("conditions"));
    }
}
