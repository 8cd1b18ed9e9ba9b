//! From a request path to a file of the manifest.
//!
//! Order: exact file → `dir/` + `index.html` → clean URLs (`/about` → `/about.html`,
//! `/about/index.html`) → SPA fallback (`/index.html`, only for page-like paths, so a
//! missing `/assets/x.js` stays a 404) → `/404.html` with status 404 → nothing.

use std::collections::BTreeMap;

use cdeploy_core::manifest::Site;
use hyper::StatusCode;
use percent_encoding::percent_decode_str;

use crate::ProxyError;

/// Decodes a request path and refuses traversal tricks. The result starts with `/`,
/// has no empty, `.` or `..` segments, and keeps a trailing `/` if there was one.
pub fn decode_path(raw: &str) -> Result<String, ProxyError> {
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ProxyError::BadRequest("the path is not valid UTF-8"))?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return Err(ProxyError::BadRequest(
            "the path contains a NUL byte or a backslash",
        ));
    }
    if !decoded.starts_with('/') {
        return Err(ProxyError::BadRequest("the path must start with '/'"));
    }
    let mut out = String::with_capacity(decoded.len());
    for seg in decoded.split('/').filter(|s| !s.is_empty()) {
        if seg == "." || seg == ".." {
            return Err(ProxyError::BadRequest(
                "the path contains '.' or '..' segments",
            ));
        }
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() || decoded.ends_with('/') {
        out.push('/');
    }
    Ok(out)
}

/// The file chosen for a request.
#[derive(Debug)]
pub struct Found<'a, F> {
    pub path: &'a str,
    pub file: &'a F,
    pub status: StatusCode,
}

/// Applies the resolution rules to a decoded path over a deployment's files.
pub fn resolve<'m, F>(
    files: &'m BTreeMap<String, F>,
    site: Site,
    path: &str,
) -> Option<Found<'m, F>> {
    let hit = |p: &str| {
        files.get_key_value(p).map(|(k, file)| Found {
            path: k,
            file,
            status: StatusCode::OK,
        })
    };

    if let Some(dir) = path.strip_suffix('/') {
        if let Some(f) = hit(&format!("{dir}/index.html")) {
            return Some(f);
        }
        if site.clean_urls && !dir.is_empty() {
            if let Some(f) = hit(&format!("{dir}.html")) {
                return Some(f);
            }
        }
    } else {
        if let Some(f) = hit(path) {
            return Some(f);
        }
        if site.clean_urls {
            if let Some(f) =
                hit(&format!("{path}.html")).or_else(|| hit(&format!("{path}/index.html")))
            {
                return Some(f);
            }
        }
    }
    if site.spa && looks_like_page(path) {
        if let Some(f) = hit("/index.html") {
            return Some(f);
        }
    }
    files.get_key_value("/404.html").map(|(k, file)| Found {
        path: k,
        file,
        status: StatusCode::NOT_FOUND,
    })
}

/// A path a browser navigates to (no extension, or `.html`), as opposed to an asset.
fn looks_like_page(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or("");
    match last.rsplit_once('.') {
        None => true,
        Some((_, ext)) => ext.eq_ignore_ascii_case("html") || ext.eq_ignore_ascii_case("htm"),
    }
}

/// Fingerprinted file names (`index-DiwrgTda.js`, `app.3f9a1c2b.css`) never change
/// content, so browsers may cache them for a year.
pub fn is_fingerprinted(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    let Some((stem, _ext)) = name.rsplit_once('.') else {
        return false;
    };
    let Some(tag) = stem.rsplit(['-', '.', '_']).next() else {
        return false;
    };
    tag.len() != stem.len()
        && (8..=64).contains(&tag.len())
        && tag.bytes().all(|b| b.is_ascii_alphanumeric())
        && tag
            .bytes()
            .any(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(decode_path("/").unwrap(), "/");
        assert_eq!(decode_path("/a/b").unwrap(), "/a/b");
        assert_eq!(decode_path("/a//b/").unwrap(), "/a/b/");
        assert_eq!(decode_path("/caf%C3%A9").unwrap(), "/café");
        for bad in [
            "/../etc/passwd",
            "/%2e%2e/x",
            "/a/%2E%2E/b",
            "/a/./b",
            "/a%00b",
            "/a%5c..%5cb",
            "/%ff",
        ] {
            assert!(
                matches!(decode_path(bad), Err(ProxyError::BadRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn fingerprints() {
        assert!(is_fingerprinted("/assets/index-DiwrgTda.js"));
        assert!(is_fingerprinted("/static/js/main.3f9a1c2b.js"));
        assert!(!is_fingerprinted("/index.html"));
        assert!(!is_fingerprinted("/favicon.ico"));
        assert!(!is_fingerprinted("/assets/vendor-library.js"));
    }
}
