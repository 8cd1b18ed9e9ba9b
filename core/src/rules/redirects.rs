//! The `_redirects` file (Netlify's syntax, which Cloudflare Pages reads too): one rule
//! a line, `FROM [QUERY…] TO [STATUS[!]]`, first match wins.
//!
//! * `FROM`: a path pattern ([`Pattern`]), or a whole `https://host/path` URL for a rule
//!   that applies on one host only (an apex redirected to its `www`, say).
//! * `QUERY`: `key=:name` (the parameter must be present; its value is captured) or
//!   `key=value` (it must have that value).
//! * `TO`: a local path or an `http(s)://` URL; `:name` and `:splat` are filled in.
//! * `STATUS`: 301 (the default), 302, 303, 307 or 308 redirect; 200 rewrites (serves
//!   `TO` in place, or proxies to an absolute URL); 404 and 410 serve `TO` with that
//!   status. `!` forces the rule even when a file exists at the path.
//!
//! Conditions Netlify also has (`Country=`, `Language=`, `Role=`, `Cookie=`) are refused
//! by name rather than ignored: a rule that silently applies to everyone is worse than
//! none.

use serde::{Deserialize, Serialize};

use super::pattern::{references, Pattern};
use super::RuleError;

/// Statuses a rule may have.
pub const STATUSES: [u16; 8] = [200, 301, 302, 303, 307, 308, 404, 410];

/// One query condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryCondition {
    pub key: String,
    /// `key=:name`: any value, captured as `name`; `key=value`: exactly `value`.
    pub value: QueryValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryValue {
    Capture(String),
    Equals(String),
}

/// One compiled redirect, rewrite or proxy rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// Applies only to requests for this host (lower-cased), when `FROM` was a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub from: Pattern,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<QueryCondition>,
    pub to: String,
    pub status: u16,
    /// Applies even when a file exists at the path (`!`).
    #[serde(default)]
    pub force: bool,
    /// Where the rule was written (`_redirects:12`), for errors and `inspect --route`.
    pub source: String,
}

impl Redirect {
    /// A `200` to an absolute URL: the proxy fetches it.
    pub fn is_proxy(&self) -> bool {
        self.status == 200 && is_absolute(&self.to)
    }
}

pub(super) fn is_absolute(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

impl std::fmt::Display for Redirect {
    /// The rule as a `_redirects` line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(host) = &self.host {
            write!(f, "https://{host}")?;
        }
        write!(f, "{}", self.from)?;
        for q in &self.query {
            match &q.value {
                QueryValue::Capture(name) => write!(f, " {}=:{name}", q.key)?,
                QueryValue::Equals(value) => write!(f, " {}={value}", q.key)?,
            }
        }
        write!(
            f,
            " {} {}{}",
            self.to,
            self.status,
            if self.force { "!" } else { "" }
        )
    }
}

/// Parses a `_redirects` file named `file` (for messages). Every bad line is reported,
/// not only the first.
pub fn parse(file: &str, text: &str) -> Result<Vec<Redirect>, Vec<RuleError>> {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let source = format!("{file}:{}", n + 1);
        match parse_line(line, &source) {
            Ok(rule) => rules.push(rule),
            Err(reason) => errors.push(RuleError { at: source, reason }),
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

fn parse_line(line: &str, source: &str) -> Result<Redirect, String> {
    let mut tokens = line.split_whitespace();
    let from = tokens.next().ok_or("an empty rule")?;
    let mut query = Vec::new();
    let to = loop {
        let token = tokens.next().ok_or_else(|| {
            format!("{from}: no target (a path starting with / or an http(s):// URL)")
        })?;
        if token.starts_with('/') || is_absolute(token) {
            break token;
        }
        query.push(query_condition(token)?);
    };
    let (status, force) = match tokens.next() {
        None => (301, false),
        Some(token) => status(token)?,
    };
    if let Some(extra) = tokens.next() {
        return Err(match extra.split_once('=') {
            Some((key, _)) => format!(
                "{key}= conditions are not supported (only the path and query decide a rule)"
            ),
            None => format!("unexpected {extra:?} after the status"),
        });
    }
    rule(from, query, to, (status, force), source)
}

/// Checks and compiles one rule, however it was written (a `_redirects` line or a
/// `[[redirects]]` table).
pub(super) fn rule(
    from: &str,
    query: Vec<QueryCondition>,
    to: &str,
    (status, force): (u16, bool),
    source: &str,
) -> Result<Redirect, String> {
    if !STATUSES.contains(&status) {
        return Err(format!(
            "status {status} is not one a rule may have (200, 301, 302, 303, 307, 308, 404, 410)"
        ));
    }
    for (what, text) in [("path", from), ("target", to)] {
        if text.len() > super::MAX_TARGET_LEN {
            return Err(format!(
                "the {what} is longer than {} bytes",
                super::MAX_TARGET_LEN
            ));
        }
        if text
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!(
                "the {what} {text:?} contains a space or a control character"
            ));
        }
    }
    if !(to.starts_with('/') || is_absolute(to)) {
        return Err(format!(
            "{to:?} is not a target (a path starting with / or an http(s):// URL)"
        ));
    }
    if is_absolute(to) {
        url::Url::parse(to).map_err(|e| format!("{to}: not a URL ({e})"))?;
    }
    let (host, path) = split_from(from)?;
    let from_pattern = Pattern::parse(path).map_err(|e| format!("{from}: {e}"))?;
    let known: Vec<&str> = from_pattern
        .names()
        .chain(query.iter().filter_map(|q| match &q.value {
            QueryValue::Capture(name) => Some(name.as_str()),
            QueryValue::Equals(_) => None,
        }))
        .collect();
    if let Some(unknown) = references(to).into_iter().find(|r| !known.contains(r)) {
        return Err(if unknown == "splat" {
            format!("{to} uses :splat, but {from} has no `*`")
        } else {
            format!("{to} uses :{unknown}, which {from} does not capture")
        });
    }
    if matches!(status, 404 | 410) && is_absolute(to) {
        return Err(format!("a {status} serves a page of this site, not {to}"));
    }
    Ok(Redirect {
        host,
        from: from_pattern,
        query,
        to: to.to_string(),
        status,
        force,
        source: source.to_string(),
    })
}

/// A `FROM` that is a URL applies on its host only.
fn split_from(from: &str) -> Result<(Option<String>, &str), String> {
    let Some(rest) = from
        .strip_prefix("https://")
        .or_else(|| from.strip_prefix("http://"))
    else {
        return Ok((None, from));
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return Err(format!("{from}: {host:?} is not a host name"));
    }
    Ok((Some(host.to_ascii_lowercase()), path))
}

pub(super) fn query_condition(token: &str) -> Result<QueryCondition, String> {
    let (raw_key, raw_value) = token
        .split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| {
            format!("{token:?} is neither a target (/path or http(s)://…) nor a query condition (key=value)")
        })?;
    // Compared with the request's query as a browser encodes it: decoded both sides.
    let decode = |s: &str| -> String {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let key = decode(raw_key);
    let value = match raw_value.strip_prefix(':') {
        Some("splat") => {
            return Err(format!(
            "{token}: `:splat` is what a path's `*` matches; name the query capture something else"
        ))
        }
        Some(name)
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            QueryValue::Capture(name.to_string())
        }
        Some(_) => return Err(format!("{token}: a capture is key=:name")),
        None => QueryValue::Equals(decode(raw_value)),
    };
    Ok(QueryCondition { key, value })
}

fn status(token: &str) -> Result<(u16, bool), String> {
    let (digits, force) = match token.strip_suffix('!') {
        Some(d) => (d, true),
        None => (token, false),
    };
    match digits.parse::<u16>() {
        Ok(code) if STATUSES.contains(&code) => Ok((code, force)),
        Ok(code) => Err(format!(
            "status {code} is not one a rule may have (200, 301, 302, 303, 307, 308, 404, 410)"
        )),
        Err(_) if token.contains('=') => Err(format!(
            "{token}: query conditions go between the path and the target"
        )),
        Err(_) => Err(format!("{token:?} is not a status")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Redirect {
        let mut rules = parse("_redirects", line).unwrap_or_else(|e| panic!("{line}: {e:?}"));
        assert_eq!(rules.len(), 1);
        rules.remove(0)
    }

    fn refused(line: &str) -> String {
        let errors = parse("_redirects", line).expect_err(line);
        errors[0].to_string()
    }

    #[test]
    fn netlify_examples_read() {
        let r = one("/home              /");
        assert_eq!((r.to.as_str(), r.status, r.force), ("/", 301, false));
        let r = one("/my-redirect        /                 302");
        assert_eq!(r.status, 302);
        let r = one("/news/:year/:month/:date/:slug  /blog/:year/:month/:date/:slug");
        assert_eq!(r.from.names().count(), 4);
        let r = one("/news/*  /blog/:splat");
        assert!(r.from.splat);
        let r = one("/*    /index.html   200");
        assert_eq!(r.status, 200);
        assert!(!r.is_proxy());
        let r = one("/api/*  https://api.example.com/:splat  200");
        assert!(r.is_proxy());
        let r = one("/app/  /app/index.html  200!");
        assert!(r.force);
        let r = one("/store id=:id  /blog/:id  301");
        assert_eq!(
            r.query,
            vec![QueryCondition {
                key: "id".into(),
                value: QueryValue::Capture("id".into())
            }]
        );
        let r = one("/articles id=:id tag=:tag /posts/:tag/:id 301");
        assert_eq!(r.query.len(), 2);
        let r = one("/en/*  /en/404.html  404");
        assert_eq!(r.status, 404);
        let r = one("https://example.com/*  https://www.example.com/:splat  301!");
        assert_eq!(r.host.as_deref(), Some("example.com"));
        let r = one("/old  /new  410");
        assert_eq!(r.status, 410);
        assert_eq!(r.source, "_redirects:1");
    }

    #[test]
    fn rules_print_as_lines() {
        for line in [
            "/home / 301",
            "/news/:year/* /blog/:year/:splat 302",
            "/store id=:id /blog/:id 301",
            "https://example.com/* https://www.example.com/:splat 301!",
            "/docs/ /guide/ 200",
        ] {
            assert_eq!(one(line).to_string(), line);
        }
    }

    #[test]
    fn comments_blank_lines_and_line_numbers() {
        let text = "# comment\n\n/a /b\n   \n/c /d 302\n";
        let rules = parse("_redirects", text).unwrap();
        assert_eq!(rules[0].source, "_redirects:3");
        assert_eq!(rules[1].source, "_redirects:5");
    }

    #[test]
    fn bad_lines_are_refused_by_line_with_the_reason() {
        assert!(refused("/a").contains("no target"), "{}", refused("/a"));
        assert!(refused("/a /b 305").contains("status 305"));
        assert!(refused("/a /b 301 Country=au,nz").contains("Country= conditions"));
        assert!(refused("/a /b 200 extra").contains("unexpected"));
        assert!(refused("/a /b/:splat").contains("no `*`"));
        assert!(refused("/a/:x /b/:y").contains(":y"));
        assert!(refused("a /b").contains("start with /"));
        assert!(refused("/a/*/b /c").contains("`*`"));
        assert!(refused("/a /b 404 x").contains("unexpected"));
        assert!(refused("/a https://x.test/ 404").contains("404"));
        assert!(refused("/a junk /b").contains("\"junk\""));
        let errors = parse("_redirects", "/ok /fine\n/bad\n/worse /x 999\n").unwrap_err();
        let lines: Vec<String> = errors.iter().map(|e| e.at.clone()).collect();
        assert_eq!(lines, vec!["_redirects:2", "_redirects:3"]);
        assert!(errors[0].to_string().starts_with("_redirects:2: "));
    }
}
