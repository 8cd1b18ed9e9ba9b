//! Path patterns of redirect and header rules, as Netlify and Cloudflare write them:
//! literal segments, `:name` placeholders that match one segment, and a trailing `*`
//! (a splat) that matches the rest of the path, empty included. `/blog/*` matches
//! `/blog`, `/blog/` and `/blog/a/b`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Segment {
    Literal(String),
    /// `:name`: any one non-empty segment, captured under `name`.
    Placeholder(String),
}

/// A parsed path pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pattern {
    pub segments: Vec<Segment>,
    /// Ends in `*`: matches any rest, captured as `splat`.
    pub splat: bool,
    /// Ends in `/` (without a splat): `/docs/` matches `/docs` and `/docs/` alike, as
    /// Netlify treats a trailing slash.
    pub trailing_slash: bool,
}

impl std::fmt::Display for Pattern {
    /// The pattern as a rule would write it (literals decoded).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in &self.segments {
            match s {
                Segment::Literal(l) => write!(f, "/{l}")?,
                Segment::Placeholder(n) => write!(f, "/:{n}")?,
            }
        }
        if self.splat {
            f.write_str("/*")
        } else if self.trailing_slash || self.segments.is_empty() {
            f.write_str("/")
        } else {
            Ok(())
        }
    }
}

/// What a matched path filled in: placeholders by name, and `splat`.
pub type Captures = BTreeMap<String, String>;

/// Why a pattern does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("a path must start with /")]
    NotAbsolute,
    #[error("`*` may only end a path (as its last segment)")]
    SplatInside,
    #[error("placeholder {0:?} must be `:` followed by letters, digits or `_`")]
    BadPlaceholder(String),
    #[error("placeholder :{0} appears twice")]
    DuplicatePlaceholder(String),
    #[error("`:splat` is the name of what `*` matches; call the placeholder something else")]
    ReservedName,
    #[error("longer than {} bytes", super::MAX_TARGET_LEN)]
    TooLong,
    #[error("{0:?} does not decode (percent escapes must make UTF-8, without `/`, NUL or `\\`)")]
    BadEscape(String),
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let rest = text.strip_prefix('/').ok_or(PatternError::NotAbsolute)?;
        if text.len() > super::MAX_TARGET_LEN {
            return Err(PatternError::TooLong);
        }
        let mut segments = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut splat = false;
        let mut trailing_slash = false;
        let parts: Vec<&str> = rest.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if *part == "*" {
                if !last {
                    return Err(PatternError::SplatInside);
                }
                splat = true;
            } else if part.contains('*') {
                return Err(PatternError::SplatInside);
            } else if let Some(name) = part.strip_prefix(':') {
                let valid = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !valid {
                    return Err(PatternError::BadPlaceholder(part.to_string()));
                }
                if name == "splat" {
                    return Err(PatternError::ReservedName);
                }
                if !seen.insert(name) {
                    return Err(PatternError::DuplicatePlaceholder(name.to_string()));
                }
                segments.push(Segment::Placeholder(name.to_string()));
            } else if part.is_empty() {
                // `//` inside collapses; a final empty part is the trailing slash.
                if last && i > 0 {
                    trailing_slash = true;
                }
            } else {
                segments.push(Segment::Literal(decode_literal(part)?));
            }
        }
        Ok(Pattern {
            segments,
            splat,
            trailing_slash,
        })
    }

    /// Whether `path` (decoded, starting with `/`) matches: no allocation, so trying
    /// many rules costs little.
    pub fn matches(&self, path: &str) -> bool {
        self.walk(path, |_, _| {}).is_some()
    }

    /// The captures when `path` (decoded, starting with `/`) matches.
    pub fn captures(&self, path: &str) -> Option<Captures> {
        let mut caps = Captures::new();
        let rest = self.walk(path, |name, value| {
            caps.insert(name.to_string(), value.to_string());
        })?;
        if self.splat {
            caps.insert("splat".into(), rest.to_string());
        }
        Some(caps)
    }

    /// Matches segment by segment, calling `capture` for placeholders; on a match, the
    /// rest of the path after the pattern's segments (the splat's value).
    fn walk<'p>(&self, path: &'p str, mut capture: impl FnMut(&str, &'p str)) -> Option<&'p str> {
        let mut rest = path.strip_prefix('/')?;
        for segment in &self.segments {
            let (part, after) = match rest.split_once('/') {
                Some((part, after)) => (part, after),
                // Every segment matches a non-empty part: none is left.
                None if rest.is_empty() => return None,
                None => (rest, ""),
            };
            match segment {
                Segment::Literal(l) if l == part => {}
                Segment::Placeholder(name) if !part.is_empty() => capture(name, part),
                _ => return None,
            }
            rest = after;
        }
        if self.splat {
            return Some(rest);
        }
        // Nothing left, or only the trailing slash.
        rest.is_empty().then_some(rest)
    }

    /// Placeholder names (and `splat` when the pattern has one) a target may use.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let placeholders = self.segments.iter().filter_map(|s| match s {
            Segment::Placeholder(n) => Some(n.as_str()),
            Segment::Literal(_) => None,
        });
        placeholders.chain(self.splat.then_some("splat"))
    }
}

/// A literal segment as request paths are matched: decoded (`caf%C3%A9` is `café`), so
/// a rule matches whichever way a browser escapes the path.
fn decode_literal(part: &str) -> Result<String, PatternError> {
    let decoded = percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map_err(|_| PatternError::BadEscape(part.to_string()))?;
    if decoded.contains(['/', '\\', '\0']) || decoded == "." || decoded == ".." {
        return Err(PatternError::BadEscape(part.to_string()));
    }
    Ok(decoded.into_owned())
}

/// The placeholder name that starts at byte `i` of `target` (just after a `:`), if one
/// does: a letter or `_`, then letters, digits or `_`. (`://` and a port's `:8443` are
/// not placeholders.)
fn name_at(target: &str, i: usize) -> Option<&str> {
    let bytes = target.as_bytes();
    if !bytes
        .get(i)
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
    {
        return None;
    }
    let len = bytes[i..]
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count();
    Some(&target[i..i + len])
}

/// Where placeholders may start in a target: after the scheme and authority of an
/// absolute URL (`https://[::1]:8443` and `user:pass@` are not placeholders, and a
/// visitor's value never chooses the host), anywhere in a path.
fn path_start(target: &str) -> usize {
    match target.find("://") {
        Some(i) => {
            let authority = i + 3;
            target[authority..]
                .find(['/', '?', '#'])
                .map_or(target.len(), |j| authority + j)
        }
        None => 0,
    }
}

/// `:name` references in a target (`/blog/:year/:splat`), in order.
pub fn references(target: &str) -> Vec<&str> {
    let start = path_start(target);
    target
        .match_indices(':')
        .filter(|(i, _)| *i >= start)
        .filter_map(|(i, _)| name_at(target, i + 1))
        .collect()
}

/// `target` with every `:name` it references replaced by its capture, as `fill` writes
/// it (`fill(name, value, offset of the reference in target, out)`). Names without a capture stay as written (parsing refuses
/// targets that reference unknown names, so a compiled rule never has one).
pub fn expand_with(
    target: &str,
    caps: &Captures,
    fill: impl Fn(&str, &str, usize, &mut String),
) -> String {
    let mut out = String::with_capacity(target.len());
    let start = path_start(target);
    let mut copied = 0;
    for (i, _) in target.match_indices(':') {
        if i < copied || i < start {
            continue;
        }
        let Some(name) = name_at(target, i + 1) else {
            continue;
        };
        if let Some(value) = caps.get(name) {
            out.push_str(&target[copied..i]);
            fill(name, value, i, &mut out);
            copied = i + 1 + name.len();
        }
    }
    out.push_str(&target[copied..]);
    out
}

/// [`expand_with`] filling in captures as they are.
pub fn expand(target: &str, caps: &Captures) -> String {
    expand_with(target, caps, |_, value, _, out| out.push_str(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
        Pattern::parse(pattern)
            .unwrap()
            .captures(path)
            .map(|c| c.into_iter().collect())
    }

    #[test]
    fn literals_placeholders_and_splats() {
        assert_eq!(caps("/home", "/home"), Some(vec![]));
        assert_eq!(caps("/home", "/home/"), Some(vec![]));
        assert_eq!(caps("/home", "/homes"), None);
        assert_eq!(caps("/docs/", "/docs"), Some(vec![]));
        let dated = caps("/news/:year/:month", "/news/2024/02").unwrap();
        assert_eq!(
            dated,
            vec![
                ("month".into(), "02".into()),
                ("year".into(), "2024".into())
            ]
        );
        assert_eq!(caps("/news/:year", "/news/"), None);
        assert_eq!(caps("/news/:year", "/news/2024/02"), None);
        assert_eq!(
            caps("/blog/*", "/blog/a/b.html"),
            Some(vec![("splat".into(), "a/b.html".into())])
        );
        assert_eq!(
            caps("/blog/*", "/blog"),
            Some(vec![("splat".into(), String::new())])
        );
        assert_eq!(caps("/blog/*", "/blogs/x"), None);
        assert_eq!(
            caps("/*", "/anything/at/all"),
            Some(vec![("splat".into(), "anything/at/all".into())])
        );
    }

    #[test]
    fn bad_patterns_say_why() {
        assert_eq!(Pattern::parse("home"), Err(PatternError::NotAbsolute));
        assert_eq!(Pattern::parse("/a/*/b"), Err(PatternError::SplatInside));
        assert_eq!(Pattern::parse("/a*"), Err(PatternError::SplatInside));
        assert_eq!(
            Pattern::parse("/:a/:a"),
            Err(PatternError::DuplicatePlaceholder("a".into()))
        );
        assert_eq!(Pattern::parse("/:splat"), Err(PatternError::ReservedName));
        assert!(matches!(
            Pattern::parse("/:a-b"),
            Err(PatternError::BadPlaceholder(_))
        ));
    }

    #[test]
    fn targets_are_filled_in() {
        let pattern = Pattern::parse("/news/:year/:month/:date/*").unwrap();
        let c = pattern.captures("/news/2004/02/12/my-story").unwrap();
        assert_eq!(
            expand("/blog/:year-:month-:date/:splat", &c),
            "/blog/2004-02-12/my-story"
        );
        assert_eq!(
            expand("https://example.com:8443/:splat?a=1", &c),
            "https://example.com:8443/my-story?a=1"
        );
        assert_eq!(
            references("https://x.test/:year/:splat"),
            vec!["year", "splat"]
        );
        assert_eq!(expand("/déjà/:splat", &c), "/déjà/my-story");
    }
}
