//! Preview protection: a project's previews (never its production site) answer only
//! requests that carry its bypass token (`x-cdeploy-bypass`, for CI), or a cookie earned
//! with the password or the token. Everyone else gets a password form (or, without a
//! password, a page saying a token is needed), status 401.
//!
//! The cookie is `<expiry>.<HMAC-SHA256(cookie key, slug, expiry)>`, host-only, HttpOnly,
//! SameSite=Lax (and `Secure` behind a TLS terminator), for [`COOKIE_DAYS`]. The key lives in the project's protection record
//! and is replaced whenever protection changes, which ends every cookie at once.
//!
//! The `cookie` crate reads `Cookie` headers and writes `Set-Cookie`; the value is signed
//! here rather than with its signed jar, because the signature binds the project's slug
//! and the expiry (a cookie of one project, or an old one, is worth nothing elsewhere)
//! under a per-project key, where the jar signs a name and value under one key.

use bytes::Bytes;
use cdeploy_core::manifest::Protection;
use cookie::{Cookie, SameSite};
use hmac::{Hmac, Mac};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::body::{full, Body};

/// The header CI sends the bypass token in.
pub const BYPASS_HEADER: &str = "x-cdeploy-bypass";
/// A query parameter that trades the bypass token for a cookie (a browser, a test
/// runner that cannot set headers): the answer redirects to the same URL without it.
pub const BYPASS_QUERY: &str = "cdeploy_bypass";
/// Where the password form posts.
pub const UNLOCK_PATH: &str = "/.cdeploy/unlock";
pub const COOKIE: &str = "cdeploy_preview";
pub const COOKIE_DAYS: u64 = 7;
/// Largest form body accepted at [`UNLOCK_PATH`].
pub const MAX_FORM_BYTES: usize = 4096;

/// What every answer that needs protection carries: a shared cache (a CDN, a corporate
/// proxy) must never keep a protected page for the next visitor, who has no cookie.
pub const PRIVATE: HeaderValue = HeaderValue::from_static("private, no-store");

/// What to do with a request for a protected preview.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// The URL holds a bypass token and the visitor is admitted: go to `location`, the
    /// same local URL without it (a token never stays in a URL, where history, logs and
    /// `Referer` would keep it), setting the cookie when the token was the right one.
    Redeem {
        location: String,
        set_cookie: bool,
    },
    Denied,
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Whether `token` is the project's bypass token.
pub fn token_matches(p: &Protection, token: &str) -> bool {
    let given = sha256_hex(token.trim().as_bytes());
    bool::from(given.as_bytes().ct_eq(p.bypass.as_bytes()))
}

fn signature(p: &Protection, slug: &str, expiry: u64) -> Option<String> {
    let key = hex::decode(&p.cookie_key).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{slug}\0{expiry}").as_bytes());
    Some(hex::encode(mac.finalize().into_bytes()))
}

/// A fresh cookie value for `slug`, valid [`COOKIE_DAYS`] from `now` (unix seconds).
pub fn cookie_value(p: &Protection, slug: &str, now: u64) -> Option<String> {
    let expiry = now + COOKIE_DAYS * 86_400;
    Some(format!("{expiry}.{}", signature(p, slug, expiry)?))
}

/// Whether the visitor reached us over TLS: the proxy itself speaks plain HTTP, so only a
/// TLS terminator in front can say so, with `X-Forwarded-Proto: https`. (A client that
/// sends the header itself only makes its own cookie `Secure`.)
pub fn behind_tls(headers: &HeaderMap) -> bool {
    // A name made once: looking one up by a string parses the string each time.
    const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    headers
        .get(X_FORWARDED_PROTO)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` header for a fresh cookie; `Secure` when the visitor came over TLS
/// ([`behind_tls`]), so the browser never sends it over plain HTTP afterwards.
pub fn set_cookie(p: &Protection, slug: &str, now: u64, secure: bool) -> Option<HeaderValue> {
    let cookie = Cookie::build((COOKIE, cookie_value(p, slug, now)?))
        .path("/")
        .max_age(cookie::time::Duration::days(COOKIE_DAYS as i64))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .build();
    HeaderValue::from_str(&cookie.to_string()).ok()
}

fn cookie_valid(p: &Protection, slug: &str, value: &str, now: u64) -> bool {
    let Some((expiry, sig)) = value.split_once('.') else {
        return false;
    };
    let Ok(expiry) = expiry.parse::<u64>() else {
        return false;
    };
    if expiry <= now {
        return false;
    }
    signature(p, slug, expiry).is_some_and(|want| bool::from(want.as_bytes().ct_eq(sig.as_bytes())))
}

/// Every cookie the request carries (one `Cookie` header or several); a malformed pair
/// is skipped, not the whole header.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = Cookie<'_>> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
}

/// Removes what opens a protected preview (the cookie, the bypass header) from headers
/// sent on to a rule's upstream: they are credentials for this platform, not the site's.
pub fn strip_cookie(headers: &mut HeaderMap) {
    headers.remove(BYPASS_HEADER);
    if !headers.contains_key(header::COOKIE) {
        return;
    }
    let kept: Vec<String> = cookies(headers)
        .filter(|c| c.name() != COOKIE)
        .map(|c| c.stripped().to_string())
        .collect();
    headers.remove(header::COOKIE);
    if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
        if !kept.is_empty() {
            headers.insert(header::COOKIE, v);
        }
    }
}

/// Decides a request for a protected preview of `slug`.
pub fn check(
    p: &Protection,
    slug: &str,
    headers: &HeaderMap,
    uri: &hyper::Uri,
    now: u64,
) -> Access {
    let by_header = headers
        .get(BYPASS_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|token| token_matches(p, token));
    let by_cookie =
        cookies(headers).any(|c| c.name() == COOKIE && cookie_valid(p, slug, c.value(), now));
    let (token, _) = split_query(uri);
    let by_query = token.as_deref().is_some_and(|t| token_matches(p, t));
    match token {
        Some(_) if by_header || by_cookie || by_query => Access::Redeem {
            location: without_bypass(uri),
            set_cookie: by_query,
        },
        _ if by_header || by_cookie => Access::Allowed,
        _ => Access::Denied,
    }
}

/// The bypass token in a URL's query (decoded), and the query's other pairs.
fn split_query(uri: &hyper::Uri) -> (Option<String>, Vec<&str>) {
    let mut token = None;
    let mut rest = Vec::new();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some((BYPASS_QUERY, v)) => {
                token = Some(
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned(),
                )
            }
            _ if pair == BYPASS_QUERY => token = Some(String::new()),
            _ => rest.push(pair),
        }
    }
    (token, rest)
}

/// The request's path and query, without the bypass token, as a local URL: leading
/// slashes and backslashes become one `/`, so `//evil.example/` stays on this site.
pub fn without_bypass(uri: &hyper::Uri) -> String {
    let (_, rest) = split_query(uri);
    let mut location = format!("/{}", uri.path().trim_start_matches(['/', '\\']));
    if !rest.is_empty() {
        location.push('?');
        location.push_str(&rest.join("&"));
    }
    location
}

/// Checks a password against the stored Argon2 hash (slow on purpose).
pub fn password_matches(p: &Protection, password: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let Some(stored) = &p.password else {
        return false;
    };
    let Ok(hash) = PasswordHash::new(stored) else {
        return false;
    };
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok()
}

/// A path to go back to after the form: a local absolute path, else `/`.
pub fn safe_next(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control());
    if ok {
        next.to_string()
    } else {
        "/".to_string()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The 401 page: the password form, or (no password) how to get in.
pub fn challenge(
    p: &Protection,
    next: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response<Body> {
    let body = if p.password.is_some() {
        format!(
            "<h1>This preview is protected</h1><p>Enter the project's preview password.</p>\
<form method=\"post\" action=\"{UNLOCK_PATH}\"><input type=\"hidden\" name=\"next\" value=\"{}\">\
<input type=\"password\" name=\"password\" autofocus required autocomplete=\"current-password\" aria-label=\"Password\">\
<button type=\"submit\">Open</button></form>{}",
            escape(&safe_next(next)),
            error
                .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
                .unwrap_or_default()
        )
    } else {
        format!(
            "<h1>This preview is protected</h1><p>Open it with the project's bypass token: the \
<code>{BYPASS_HEADER}</code> header, or <code>?{BYPASS_QUERY}=…</code> once in a browser.</p>"
        )
    };
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<meta name=\"robots\" content=\"noindex\"><title>Protected preview</title><style>body{{font:16px/1.5 system-ui,sans-serif;\
display:grid;place-items:center;min-height:90vh;color:#222}}h1{{font-size:1.4em;margin:0}}p{{color:#666}}\
.error{{color:#b00}}input,button{{font:inherit;padding:.4em .6em;margin:.2em}}</style></head><body><main>{body}</main></body></html>"
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, PRIVATE)
        .header("x-robots-tag", "noindex")
        .body(full(Bytes::from(html)))
        .expect("valid response")
}

/// `303` to `location` (a local path), setting the cookie when there is one.
pub fn redirect(cookie: Option<HeaderValue>, location: &str) -> Response<Body> {
    let mut resp = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, location)
        .header(header::CACHE_CONTROL, PRIVATE)
        .body(full(Bytes::new()))
        .expect("valid response");
    if let Some(cookie) = cookie {
        resp.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    resp
}

/// `password` and `next` from an `application/x-www-form-urlencoded` body (names and
/// values decoded alike, `+` as a space; the last of a repeated field wins).
pub fn parse_form(body: &[u8]) -> (String, String) {
    let (mut password, mut next) = (String::new(), "/".to_string());
    for (k, v) in form_urlencoded::parse(body) {
        match &*k {
            "password" => password = v.into_owned(),
            "next" => next = v.into_owned(),
            _ => {}
        }
    }
    (password, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protection(password: Option<&str>) -> Protection {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let hash = password.map(|pw| {
            let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
            argon2::Argon2::default()
                .hash_password(pw.as_bytes(), &salt)
                .unwrap()
                .to_string()
        });
        Protection {
            password: hash,
            bypass: sha256_hex(b"tok"),
            cookie_key: hex::encode([7u8; 32]),
            updated_at: String::new(),
        }
    }

    fn uri(s: &str) -> hyper::Uri {
        s.parse().unwrap()
    }

    #[test]
    fn the_token_the_cookie_or_nothing() {
        let p = protection(None);
        let mut h = HeaderMap::new();
        assert_eq!(check(&p, "app", &h, &uri("/"), 100), Access::Denied);
        h.insert(BYPASS_HEADER, "tok".parse().unwrap());
        assert_eq!(check(&p, "app", &h, &uri("/"), 100), Access::Allowed);
        h.insert(BYPASS_HEADER, "nope".parse().unwrap());
        assert_eq!(check(&p, "app", &h, &uri("/"), 100), Access::Denied);

        let cookie = cookie_value(&p, "app", 100).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("junk; a=b; {COOKIE}={cookie}").parse().unwrap(),
        );
        assert_eq!(check(&p, "app", &h, &uri("/x"), 200), Access::Allowed);
        // In a second Cookie header (HTTP/2 sends one per cookie) it counts the same.
        let mut two = HeaderMap::new();
        two.append(header::COOKIE, "a=b".parse().unwrap());
        two.append(
            header::COOKIE,
            format!("{COOKIE}={cookie}").parse().unwrap(),
        );
        assert_eq!(check(&p, "app", &two, &uri("/x"), 200), Access::Allowed);
        // Another project's cookie, an expired one, or one signed before a change: no.
        assert_eq!(check(&p, "other", &h, &uri("/x"), 200), Access::Denied);
        assert_eq!(
            check(&p, "app", &h, &uri("/x"), 100 + 8 * 86_400),
            Access::Denied
        );
        let changed = Protection {
            cookie_key: hex::encode([8u8; 32]),
            ..p.clone()
        };
        assert_eq!(check(&changed, "app", &h, &uri("/x"), 200), Access::Denied);
    }

    #[test]
    fn the_cookie_is_secure_only_behind_tls() {
        let p = protection(None);
        let mut h = HeaderMap::new();
        assert!(!behind_tls(&h));
        let plain = set_cookie(&p, "app", 1, behind_tls(&h)).unwrap();
        let text = plain.to_str().unwrap();
        assert!(!text.contains("Secure"), "{plain:?}");
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"] {
            assert!(text.contains(attribute), "{attribute} missing: {text}");
        }
        for (proto, tls) in [
            ("https", true),
            ("HTTPS", true),
            ("https, http", true),
            ("http", false),
        ] {
            h.insert("x-forwarded-proto", proto.parse().unwrap());
            assert_eq!(behind_tls(&h), tls, "{proto}");
        }
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        let secure = set_cookie(&p, "app", 1, behind_tls(&h)).unwrap();
        let secure = secure.to_str().unwrap();
        assert!(
            secure.split("; ").any(|attribute| attribute == "Secure"),
            "{secure}"
        );
    }

    #[test]
    fn a_token_in_the_query_is_traded_for_a_cookie() {
        let p = protection(None);
        let h = HeaderMap::new();
        assert_eq!(
            check(&p, "app", &h, &uri("/docs?a=1&cdeploy_bypass=tok&b=2"), 1),
            Access::Redeem {
                location: "/docs?a=1&b=2".into(),
                set_cookie: true,
            }
        );
        assert_eq!(
            check(&p, "app", &h, &uri("/?cdeploy_bypass=bad"), 1),
            Access::Denied
        );
        // Never a redirect off the site: `//host` and `/\host` stay local paths.
        for (path, local) in [
            ("//evil.example/?cdeploy_bypass=tok", "/evil.example/"),
            ("/\\evil.example?cdeploy_bypass=tok&x", "/evil.example?x"),
            ("///a//b?cdeploy_bypass=tok", "/a//b"),
        ] {
            assert_eq!(
                check(&p, "app", &h, &uri(path), 1),
                Access::Redeem {
                    location: local.into(),
                    set_cookie: true
                },
                "{path}"
            );
        }
        // Admitted by a cookie (or the header), the token still leaves the URL; a wrong
        // one sets no cookie.
        let mut with_cookie = HeaderMap::new();
        let cookie = cookie_value(&p, "app", 1).unwrap();
        with_cookie.insert(
            header::COOKIE,
            format!("{COOKIE}={cookie}").parse().unwrap(),
        );
        assert_eq!(
            check(&p, "app", &with_cookie, &uri("/a?cdeploy_bypass=tok"), 1),
            Access::Redeem {
                location: "/a".into(),
                set_cookie: true
            }
        );
        assert_eq!(
            check(&p, "app", &with_cookie, &uri("/a?cdeploy_bypass=nope"), 1),
            Access::Redeem {
                location: "/a".into(),
                set_cookie: false
            }
        );
        assert_eq!(
            check(&p, "app", &with_cookie, &uri("/a?b=1"), 1),
            Access::Allowed
        );
    }

    #[test]
    fn passwords_forms_and_redirects() {
        let p = protection(Some("correct horse"));
        assert!(password_matches(&p, "correct horse"));
        assert!(!password_matches(&p, "correct hors"));
        assert!(!password_matches(&protection(None), ""));
        assert_eq!(
            parse_form(b"next=%2Fdocs%3Fa%3D1&password=correct+horse"),
            ("correct horse".to_string(), "/docs?a=1".to_string())
        );
        // Encoded names, a literal plus, no `next`.
        assert_eq!(
            parse_form(b"pass%77ord=a%2Bb+c&other=1"),
            ("a+b c".to_string(), "/".to_string())
        );
        for bad in ["//evil.example", "https://evil.example", "/\\evil", "x"] {
            assert_eq!(safe_next(bad), "/");
        }
        assert_eq!(safe_next("/a/b?c"), "/a/b?c");
        let page = challenge(&p, "/\"><script>", Some("<b>"), StatusCode::UNAUTHORIZED);
        assert_eq!(page.status(), 401);
    }
}
