//! The `_headers` file (Netlify's and Cloudflare's syntax): a path pattern on a line of
//! its own, then the headers for it, indented, one `Name: value` a line. Every rule whose
//! pattern matches adds its headers (a name given by several is joined with `, `);
//! `! Name` (Cloudflare) removes a header an earlier rule set.
//!
//! ```text
//! /*
//!   X-Frame-Options: DENY
//! /assets/*
//!   Cache-Control: public, max-age=31536000, immutable
//! ```

use serde::{Deserialize, Serialize};

use super::pattern::Pattern;
use super::RuleError;

/// Headers no rule may set: the proxy owns them (framing, encodings, ranges, caching of
/// protected previews), and a wrong one would break every answer.
/// `Clear-Site-Data` is here too: on a shared platform domain it would reach every
/// other site's cookies; `Vary` is added to, never replaced (an encoded answer must keep
/// `Accept-Encoding` in it).
pub const RESERVED: [&str; 17] = [
    "content-length",
    "content-encoding",
    "content-range",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "set-cookie",
    "accept-ranges",
    "clear-site-data",
    "te",
    "trailer",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "location",
    "content-location",
];

/// One `_headers` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderRule {
    pub path: Pattern,
    /// Names lower-cased, values as written, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    /// Names (lower-cased) removed (`! Name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// Where the rule's path line is (`_headers:4`).
    pub source: String,
}

/// Parses a `_headers` file named `file` (for messages); every bad line is reported.
pub fn parse(file: &str, text: &str) -> Result<Vec<HeaderRule>, Vec<RuleError>> {
    let mut rules: Vec<HeaderRule> = Vec::new();
    let mut errors = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let source = format!("{file}:{}", n + 1);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let indented = raw.starts_with(' ') || raw.starts_with('\t');
        let result = if !indented {
            Pattern::parse(line)
                .map(|path| {
                    rules.push(HeaderRule {
                        path,
                        set: Vec::new(),
                        remove: Vec::new(),
                        source: source.clone(),
                    })
                })
                .map_err(|e| format!("{line}: {e} (header lines are indented under a path)"))
        } else {
            match rules.last_mut() {
                None => {
                    Err("a header before any path (write the path first, unindented)".to_string())
                }
                Some(rule) => header_line(line, rule),
            }
        };
        if let Err(reason) = result {
            errors.push(RuleError { at: source, reason });
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

pub(super) fn header_line(line: &str, rule: &mut HeaderRule) -> Result<(), String> {
    if let Some(name) = line.strip_prefix('!') {
        let name = checked_name(name.trim())?;
        rule.remove.push(name);
        return Ok(());
    }
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| format!("{line:?} is not `Name: value`"))?;
    set_header(rule, name, value)
}

/// Adds `Name: value` to a rule, checked.
pub(super) fn set_header(rule: &mut HeaderRule, name: &str, value: &str) -> Result<(), String> {
    let name = checked_name(name.trim())?;
    let value = value.trim();
    if value.is_empty() {
        return Err(format!(
            "{name} has no value (to remove a header, write `! {name}`)"
        ));
    }
    if value.len() > super::MAX_TARGET_LEN * 4 {
        return Err(format!(
            "the value of {name} is longer than {} bytes",
            super::MAX_TARGET_LEN * 4
        ));
    }
    if !value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err(format!("the value of {name} must be printable ASCII"));
    }
    rule.set.push((name, value.to_string()));
    Ok(())
}

/// A header name as HTTP allows it (RFC 9110 token), lower-cased, and not one the proxy
/// keeps for itself.
pub(super) fn checked_name(name: &str) -> Result<String, String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("{name:?} is not a header name"));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED.contains(&lower.as_str()) {
        return Err(format!(
            "{name} is set by the server and cannot be changed by a rule"
        ));
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_their_headers() {
        let text = "# security\n/*\n  X-Frame-Options: DENY\n  Content-Security-Policy: default-src 'self'\n\n/assets/*\n\tCache-Control: public, max-age=31536000, immutable\n/legacy/:page\n  ! X-Frame-Options\n";
        let rules = parse("_headers", text).unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].source, "_headers:2");
        assert_eq!(
            rules[0].set,
            vec![
                ("x-frame-options".into(), "DENY".into()),
                (
                    "content-security-policy".into(),
                    "default-src 'self'".into()
                )
            ]
        );
        assert_eq!(rules[1].set[0].1, "public, max-age=31536000, immutable");
        assert_eq!(rules[2].remove, vec!["x-frame-options".to_string()]);
    }

    #[test]
    fn bad_lines_say_which_and_why() {
        let errors = parse(
            "_headers",
            "  X-Early: 1\n/ok\n  Bad Name: x\n  Content-Length: 5\n  X-Empty:\n  no colon\n/a/*/b\n",
        )
        .unwrap_err();
        let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            got[0].starts_with("_headers:1: a header before any path"),
            "{got:?}"
        );
        assert!(got[1].starts_with("_headers:3: \"Bad Name\""), "{got:?}");
        assert!(
            got[2].contains("content-length") || got[2].contains("Content-Length"),
            "{got:?}"
        );
        assert!(got[3].contains("no value"), "{got:?}");
        assert!(got[4].contains("not `Name: value`"), "{got:?}");
        assert!(got[5].starts_with("_headers:7: /a/*/b"), "{got:?}");
    }
}
