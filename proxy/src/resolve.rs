//! From a request path to what the proxy serves: the path decoded (and checked), and
//! the file chosen for it. Which file, rule or fallback answers is decided by
//! [`cdeploy_core::rules::route`], which `cdeploy inspect --route` explains by too.

use hyper::StatusCode;

use crate::ProxyError;

/// Decodes a request path and refuses traversal tricks
/// ([`cdeploy_core::rules::route::decode_path`]).
pub fn decode_path(raw: &str) -> Result<std::borrow::Cow<'_, str>, ProxyError> {
    cdeploy_core::rules::route::decode_path(raw).map_err(|e| ProxyError::BadRequest(e.0))
}

/// The file chosen for a request.
#[derive(Debug)]
pub struct Found<'a, F> {
    pub path: &'a str,
    pub file: &'a F,
    pub status: StatusCode,
}

/// Folders whose files a framework names by content or build (Next.js's build output,
/// SvelteKit's `immutable` folder, Astro's assets): never changed in place.
const IMMUTABLE_FOLDERS: &[&str] = &["/_next/static/", "/_app/immutable/", "/_astro/", "/_nuxt/"];
/// Inside them, what is rewritten in place (Nuxt's build manifest).
const MUTABLE_INSIDE: &[&str] = &["/_nuxt/builds/"];

/// Fingerprinted file names (`index-DiwrgTda.js`, `app.3f9a1c2b.css`), and the files of
/// a framework's immutable folders, never change content, so browsers may cache them
/// for a year.
pub fn is_fingerprinted(path: &str) -> bool {
    if IMMUTABLE_FOLDERS.iter().any(|f| path.starts_with(f))
        && !MUTABLE_INSIDE.iter().any(|f| path.starts_with(f))
    {
        return true;
    }
    let name = path.rsplit('/').next().unwrap_or("");
    let Some((stem, _ext)) = name.rsplit_once('.') else {
        return false;
    };
    // Vite's hashes (`[name]-[hash]`) may hold `_` (base64url).
    let Some(tag) = stem.rsplit(['-', '.']).next() else {
        return false;
    };
    tag.len() != stem.len()
        && (8..=64).contains(&tag.len())
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .any(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints() {
        assert!(is_fingerprinted("/assets/index-DiwrgTda.js"));
        assert!(is_fingerprinted("/assets/about-BoF__kyQ.js"));
        assert!(!is_fingerprinted("/my_library_file.js"));
        assert!(is_fingerprinted("/static/js/main.3f9a1c2b.js"));
        assert!(!is_fingerprinted("/index.html"));
        assert!(!is_fingerprinted("/favicon.ico"));
        assert!(!is_fingerprinted("/assets/vendor-library.js"));
        // Turbopack's chunk names carry no separator; the folder says it.
        assert!(is_fingerprinted("/_next/static/chunks/31qp8jfkw0x2h.js"));
        assert!(is_fingerprinted("/_app/immutable/entry/start.js"));
        assert!(!is_fingerprinted("/_nuxt/builds/latest.json"));
        assert!(is_fingerprinted("/_nuxt/DlAUqK2U.js"));
    }
}
