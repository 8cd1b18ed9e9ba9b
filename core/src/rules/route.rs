//! What answers a request for a deployment: a redirect, rewrite or proxy rule, a file,
//! the SPA fallback or `404.html`; and the headers rules add to the answer. The proxy
//! serves by it and `cdeploy inspect --route` explains by it, so both always agree.
//!
//! # Order
//! 1. The redirect rules, in order (`_redirects`, then cdeploy.toml): the first whose
//!    path, host and query match decides. While a file exists at the path, rules without
//!    `!` are passed over (the file shadows them, as on Netlify); forced ones still apply.
//! 2. A file: exact, then `dir/` + `index.html`, then clean URLs (`/about` →
//!    `/about.html`, `/about/index.html`).
//! 3. The SPA fallback (`/index.html`, for page-like paths only, so a missing
//!    `/assets/x.js` stays a 404), then `/404.html` with status 404, then a bare 404.
//!
//! Paths are matched decoded (`/caf%C3%A9` is `/café`); what a rule captures is
//! percent-encoded again where it goes into a URL.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::pattern::{expand_with, Captures, Pattern, Segment};
use super::redirects::{QueryValue, Redirect};
use super::{HeaderRule, Rules};
use crate::manifest::Site;

/// Longest request path a site answers.
pub const MAX_PATH_LEN: usize = 8192;

/// Why a request path does not name anything ([`decode_path`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadPath(pub &'static str);

/// Decodes a request path and refuses traversal tricks. The result starts with `/`,
/// has no empty, `.` or `..` segments, and keeps a trailing `/` if there was one. A path
/// that is that already (most are) is returned as it is, without a copy.
pub fn decode_path(raw: &str) -> Result<Cow<'_, str>, BadPath> {
    if raw.len() > MAX_PATH_LEN {
        return Err(BadPath("the path is longer than 8 KiB"));
    }
    if is_clean(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| BadPath("the path is not valid UTF-8"))?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return Err(BadPath("the path contains a NUL byte or a backslash"));
    }
    if !decoded.starts_with('/') {
        return Err(BadPath("the path must start with '/'"));
    }
    let mut out = String::with_capacity(decoded.len());
    for seg in decoded.split('/').filter(|s| !s.is_empty()) {
        if seg == "." || seg == ".." {
            return Err(BadPath("the path contains '.' or '..' segments"));
        }
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() || decoded.ends_with('/') {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Whether `raw` is its own decoding: absolute, nothing percent-encoded, no NUL or
/// backslash, and no empty (but a trailing one), `.` or `..` segment.
fn is_clean(raw: &str) -> bool {
    let Some(rest) = raw.strip_prefix('/') else {
        return false;
    };
    if raw.bytes().any(|b| matches!(b, b'%' | b'\\' | b'\0')) {
        return false;
    }
    if rest.is_empty() {
        return true;
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.split('/')
        .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// How a path found its file without a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The path is the file.
    Exact,
    /// `dir/` answered by `dir/index.html`.
    Index,
    /// `/about` answered by `/about.html` or `/about/index.html`.
    CleanUrl,
    /// A page-like path answered by `/index.html`.
    SpaFallback,
    /// Nothing matched: `/404.html`, status 404.
    NotFoundPage,
}

impl Resolution {
    pub fn describe(self) -> &'static str {
        match self {
            Resolution::Exact => "the file itself",
            Resolution::Index => "the folder's index.html",
            Resolution::CleanUrl => "a clean URL (the .html or index.html of the path)",
            Resolution::SpaFallback => "the SPA fallback (/index.html)",
            Resolution::NotFoundPage => "the site's 404 page",
        }
    }
}

/// What led to an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via<'r> {
    Files(Resolution),
    Rule(&'r Redirect),
}

/// What answers a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<'m, 'r, F> {
    /// A file of the deployment, with this status.
    File {
        path: &'m str,
        file: &'m F,
        status: u16,
        via: Via<'r>,
    },
    /// A redirect to `location` (already percent-encoded, a valid header value).
    Redirect {
        status: u16,
        location: String,
        rule: &'r Redirect,
    },
    /// Fetch `url` and relay its answer.
    Proxy { url: String, rule: &'r Redirect },
    /// Nothing to serve: a 404 (or a rule's 404/410 whose page is missing).
    Status {
        status: u16,
        via: Option<&'r Redirect>,
    },
}

/// A request as routing sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'q> {
    /// The host, lower-case, without a port.
    pub host: &'q str,
    /// The path as [`decode_path`] returns it.
    pub path: &'q str,
    /// The raw query string, without `?`.
    pub query: Option<&'q str>,
}

/// The header changes rules make for a path.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HeaderPlan<'r> {
    /// Names (lower-case) to remove from the answer first (`! Name`).
    pub remove: Vec<&'r str>,
    /// Headers to set, replacing the server's own of the same name; a name several
    /// rules give is joined with `, `. With the rules that gave each.
    pub set: Vec<(&'r str, String, Vec<&'r str>)>,
}

/// Rules by a literal segment of their path: a path is tried only against rules that
/// can match it, so a thousand rules cost about what one does. (A pattern's segments
/// match the path's one for one, so a rule whose segment `n` is `x` matches only paths
/// whose segment `n` is `x`.)
#[derive(Debug, Default)]
struct Index {
    /// By the first segment, when it is literal.
    by_first: HashMap<String, Vec<u32>>,
    /// Rules whose first segment is a placeholder (`/:lang/legacy`), by their first
    /// literal segment: its position (1 to [`LATER_POSITIONS`]) and text.
    by_later: Vec<(usize, HashMap<String, Vec<u32>>)>,
    /// Rules with no literal segment in the first positions (`/*`, `/:a/:b`): tried
    /// for every path.
    wild: Vec<u32>,
}

/// The positions past the first whose literal segments are indexed.
const LATER_POSITIONS: usize = 3;

impl Index {
    fn new<'a>(patterns: impl Iterator<Item = &'a Pattern>) -> Index {
        let mut index = Index::default();
        for (i, p) in patterns.enumerate() {
            let i = i as u32;
            match p.segments.first() {
                Some(Segment::Literal(first)) => {
                    index.by_first.entry(first.clone()).or_default().push(i)
                }
                // `/` alone matches only the root, whose first segment is empty.
                None if !p.splat => index.by_first.entry(String::new()).or_default().push(i),
                _ => match first_literal(p) {
                    Some((position, text)) => {
                        let later = index.later(position);
                        later.entry(text.to_string()).or_default().push(i)
                    }
                    None => index.wild.push(i),
                },
            }
        }
        index
    }

    /// The rules indexed by their literal segment at `position`.
    fn later(&mut self, position: usize) -> &mut HashMap<String, Vec<u32>> {
        let at = match self.by_later.iter().position(|(p, _)| *p == position) {
            Some(at) => at,
            None => {
                self.by_later.push((position, HashMap::new()));
                self.by_later.len() - 1
            }
        };
        &mut self.by_later[at].1
    }

    /// Indexes of the rules that may match `path`, in rule order.
    fn candidates<'a>(&'a self, path: &str) -> impl Iterator<Item = usize> + 'a {
        let segment = |n: usize| path.trim_start_matches('/').split('/').nth(n);
        let list = |map: &'a HashMap<String, Vec<u32>>, n: usize| -> &'a [u32] {
            segment(n)
                .and_then(|s| map.get(s))
                .map_or(&[], Vec::as_slice)
        };
        // Each list is in rule order: the next candidate is the smallest head.
        let mut lists: [&'a [u32]; 2 + LATER_POSITIONS] = [&[]; 2 + LATER_POSITIONS];
        lists[0] = list(&self.by_first, 0);
        lists[1] = &self.wild;
        for (slot, (position, map)) in lists[2..].iter_mut().zip(&self.by_later) {
            *slot = list(map, *position);
        }
        std::iter::from_fn(move || {
            let (k, head) = lists
                .iter()
                .enumerate()
                .filter_map(|(k, l)| l.first().map(|head| (k, *head)))
                .min_by_key(|(_, head)| *head)?;
            lists[k] = &lists[k][1..];
            Some(head as usize)
        })
    }
}

/// The first literal segment of a pattern whose first one is not, when it is within the
/// indexed positions: its position and text.
fn first_literal(p: &Pattern) -> Option<(usize, &str)> {
    p.segments
        .iter()
        .enumerate()
        .take(LATER_POSITIONS + 1)
        .find_map(|(n, s)| match s {
            Segment::Literal(text) => Some((n, text.as_str())),
            Segment::Placeholder(_) => None,
        })
}

/// A deployment's rules, indexed for answering requests.
#[derive(Debug, Default)]
pub struct Router {
    rules: Rules,
    redirects: Index,
    headers: Index,
}

/// Characters a captured value may not carry into a URL as they are (it was decoded
/// from the request path).
const CAPTURE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'`')
    .add(b'{')
    .add(b'}');
/// A placeholder's value is one segment: a `/` in it is escaped too.
const SEGMENT: &AsciiSet = &CAPTURE.add(b'/');
/// A value filled in after the target's `?` is one query value: it cannot add
/// parameters.
const QUERY_VALUE: &AsciiSet = &SEGMENT.add(b'&').add(b'=').add(b'+').add(b';');
/// Longest target a rule may fill in; a longer one answers `414` (a 2 KiB rule that
/// repeats a long capture must not make megabytes).
pub const MAX_FILLED_LEN: usize = 8192;
/// What a target written with non-ASCII or spaces needs before it is a header value.
const LOCATION: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'<').add(b'>').add(b'`');

impl Router {
    pub fn new(rules: Rules) -> Router {
        Router {
            redirects: Index::new(rules.redirects.iter().map(|r| &r.from)),
            headers: Index::new(rules.headers.iter().map(|h| &h.path)),
            rules,
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// What answers `req` among `files` (URL path → file) with the site's settings.
    pub fn answer<'m, 'r, F>(
        &'r self,
        files: &'m BTreeMap<String, F>,
        site: Site,
        req: &Request<'_>,
    ) -> Answer<'m, 'r, F> {
        let file = find_file(files, site, req.path);
        if !self.rules.redirects.is_empty() {
            let mut query: Option<Vec<(String, String)>> = None;
            for i in self.redirects.candidates(req.path) {
                let rule = &self.rules.redirects[i];
                if file.is_some() && !rule.force {
                    continue;
                }
                if rule.host.as_deref().is_some_and(|h| h != req.host) {
                    continue;
                }
                // Cheap checks first: the path without capturing, the query's keys.
                if !rule.from.matches(req.path) {
                    continue;
                }
                if !rule.query.is_empty() {
                    let pairs = query.get_or_insert_with(|| parse_query(req.query));
                    if !query_present(rule, pairs) {
                        continue;
                    }
                }
                let Some(mut caps) = rule.from.captures(req.path) else {
                    continue;
                };
                if !rule.query.is_empty() {
                    let pairs = query.get_or_insert_with(|| parse_query(req.query));
                    if !query_matches(rule, pairs, &mut caps) {
                        continue;
                    }
                }
                return self.apply(files, site, req, rule, &caps);
            }
        }
        if let Some((path, file, how)) = file {
            return Answer::File {
                path,
                file,
                status: 200,
                via: Via::Files(how),
            };
        }
        fallback(files, site, req.path)
    }

    fn apply<'m, 'r, F>(
        &'r self,
        files: &'m BTreeMap<String, F>,
        site: Site,
        req: &Request<'_>,
        rule: &'r Redirect,
        caps: &Captures,
    ) -> Answer<'m, 'r, F> {
        let Some(mut target) = fill_in(rule, caps) else {
            return Answer::Status {
                status: 414,
                via: Some(rule),
            };
        };
        let local = target.starts_with('/');
        if rule.status == 200 && local || matches!(rule.status, 404 | 410) {
            let path = target.split(['?', '#']).next().unwrap_or("/");
            let found = decode_path(path)
                .ok()
                .and_then(|p| find_file(files, site, &p));
            return match found {
                Some((path, file, _)) => Answer::File {
                    path,
                    file,
                    status: rule.status,
                    via: Via::Rule(rule),
                },
                // A rewrite to a page that is not there is a 404, with the site's 404
                // page when it has one.
                None if rule.status == 200 => match files.get_key_value("/404.html") {
                    Some((path, file)) => Answer::File {
                        path,
                        file,
                        status: 404,
                        via: Via::Rule(rule),
                    },
                    None => Answer::Status {
                        status: 404,
                        via: Some(rule),
                    },
                },
                None => Answer::Status {
                    status: rule.status,
                    via: Some(rule),
                },
            };
        }
        // Redirects and proxies pass the query on, unless the rule matched on it or its
        // target has its own.
        if let Some(q) = req.query.filter(|q| !q.is_empty()) {
            if rule.query.is_empty() && !target.contains('?') {
                target.push('?');
                target.push_str(q);
            }
        }
        if rule.status == 200 {
            Answer::Proxy { url: target, rule }
        } else {
            Answer::Redirect {
                status: rule.status,
                location: target,
                rule,
            }
        }
    }

    /// The header changes for an answer to `path`: every matching rule, in order.
    pub fn headers_for(&self, path: &str) -> HeaderPlan<'_> {
        let mut plan = HeaderPlan::default();
        if self.rules.headers.is_empty() {
            return plan;
        }
        let mut removed = std::collections::HashSet::new();
        for i in self.headers.candidates(path) {
            let rule: &HeaderRule = &self.rules.headers[i];
            if !rule.path.matches(path) {
                continue;
            }
            for name in &rule.remove {
                if !plan.set.is_empty() {
                    plan.set.retain(|(n, _, _)| n != name);
                }
                if removed.insert(name.as_str()) {
                    plan.remove.push(name);
                }
            }
            for (name, value) in &rule.set {
                match plan.set.iter_mut().find(|(n, _, _)| n == name) {
                    Some((_, joined, sources)) => {
                        joined.push_str(", ");
                        joined.push_str(value);
                        sources.push(&rule.source);
                    }
                    None => plan.set.push((name, value.clone(), vec![&rule.source])),
                }
            }
        }
        plan
    }
}

fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A rule's target with its captures filled in, percent-encoded; `None` when it comes
/// out longer than [`MAX_FILLED_LEN`].
fn fill_in(rule: &Redirect, caps: &Captures) -> Option<String> {
    let query_at = rule.to.find('?').unwrap_or(usize::MAX);
    let filled = expand_with(&rule.to, caps, |name, value, at, out| {
        let set = if at > query_at {
            QUERY_VALUE
        } else if name == "splat" {
            CAPTURE
        } else {
            SEGMENT
        };
        out.extend(utf8_percent_encode(value, set));
    });
    let mut target = utf8_percent_encode(&filled, LOCATION).to_string();
    if target.len() > MAX_FILLED_LEN {
        return None;
    }
    // A local target stays on this site whatever was filled in (`//evil.example` or
    // `/\evil.example` would leave it), unless the rule itself says `//`.
    if target.starts_with('/') && !rule.to.starts_with("//") {
        let slashes = target
            .bytes()
            .take_while(|b| *b == b'/' || *b == b'\\')
            .count();
        if slashes > 1 {
            target.replace_range(..slashes, "/");
        }
    }
    Some(target)
}

/// Whether every key a rule's query conditions name is in the query.
fn query_present(rule: &Redirect, pairs: &[(String, String)]) -> bool {
    rule.query
        .iter()
        .all(|cond| pairs.iter().any(|(k, _)| *k == cond.key))
}

fn query_matches(rule: &Redirect, pairs: &[(String, String)], caps: &mut Captures) -> bool {
    rule.query.iter().all(|cond| {
        let Some((_, value)) = pairs.iter().find(|(k, _)| *k == cond.key) else {
            return false;
        };
        match &cond.value {
            QueryValue::Capture(name) => {
                caps.insert(name.clone(), value.clone());
                true
            }
            QueryValue::Equals(expected) => value == expected,
        }
    })
}

/// A file at `path` without fallbacks: exact, `dir/index.html`, clean URLs.
pub fn find_file<'m, F>(
    files: &'m BTreeMap<String, F>,
    site: Site,
    path: &str,
) -> Option<(&'m str, &'m F, Resolution)> {
    let hit = |p: &str, how| files.get_key_value(p).map(|(k, f)| (k.as_str(), f, how));
    if let Some(dir) = path.strip_suffix('/') {
        if let Some(f) = hit(&format!("{dir}/index.html"), Resolution::Index) {
            return Some(f);
        }
        if site.clean_urls && !dir.is_empty() {
            return hit(&format!("{dir}.html"), Resolution::CleanUrl);
        }
        None
    } else {
        if let Some(f) = hit(path, Resolution::Exact) {
            return Some(f);
        }
        if site.clean_urls {
            return hit(&format!("{path}.html"), Resolution::CleanUrl)
                .or_else(|| hit(&format!("{path}/index.html"), Resolution::CleanUrl));
        }
        None
    }
}

/// No file at the path: the SPA fallback, the 404 page, or a bare 404.
fn fallback<'m, 'r, F>(
    files: &'m BTreeMap<String, F>,
    site: Site,
    path: &str,
) -> Answer<'m, 'r, F> {
    if site.spa && looks_like_page(path) {
        if let Some((k, file)) = files.get_key_value("/index.html") {
            return Answer::File {
                path: k,
                file,
                status: 200,
                via: Via::Files(Resolution::SpaFallback),
            };
        }
    }
    match files.get_key_value("/404.html") {
        Some((k, file)) => Answer::File {
            path: k,
            file,
            status: 404,
            via: Via::Files(Resolution::NotFoundPage),
        },
        None => Answer::Status {
            status: 404,
            via: None,
        },
    }
}

/// A path a browser navigates to (no extension, or `.html`), as opposed to an asset.
fn looks_like_page(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or("");
    match last.rsplit_once('.') {
        None => true,
        Some((_, ext)) => ext.eq_ignore_ascii_case("html") || ext.eq_ignore_ascii_case("htm"),
    }
}

#[cfg(test)]
mod tests;
