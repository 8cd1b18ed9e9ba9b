//! The dashboard's files: `/ui/…` answers its HTML shell (the pages are drawn in the
//! browser from the API), `/ui/assets/<name>` its scripts, stylesheet and icon, all
//! embedded in the binary. Every answer carries a strict Content-Security-Policy (no
//! inline script or style, no framing) and is public: the shell holds no data.

use std::io::Write;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// What the dashboard's pages may load and do: only this origin's scripts, styles,
/// images and connections (the API and its WebSocket); no plugin, no base change, no
/// form to elsewhere, and no page may frame it.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The embedded files: name, bytes, content type.
const FILES: &[(&str, &[u8], &str)] = &[
    (
        "index.html",
        include_bytes!("../../ui/index.html"),
        "text/html; charset=utf-8",
    ),
    (
        "app.css",
        include_bytes!("../../ui/app.css"),
        "text/css; charset=utf-8",
    ),
    (
        "app.js",
        include_bytes!("../../ui/app.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "api.js",
        include_bytes!("../../ui/api.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "dom.js",
        include_bytes!("../../ui/dom.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "ansi.js",
        include_bytes!("../../ui/ansi.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "log.js",
        include_bytes!("../../ui/log.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "projects.js",
        include_bytes!("../../ui/projects.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "deployment.js",
        include_bytes!("../../ui/deployment.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "settings.js",
        include_bytes!("../../ui/settings.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "integrations.js",
        include_bytes!("../../ui/integrations.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "admin.js",
        include_bytes!("../../ui/admin.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "icon.svg",
        include_bytes!("../../ui/icon.svg"),
        "image/svg+xml",
    ),
];

/// A file ready to serve: its bytes, gzipped bytes, type and ETag.
struct Asset {
    name: &'static str,
    body: &'static [u8],
    gzip: Vec<u8>,
    content_type: &'static str,
    etag: HeaderValue,
}

/// Compressed once, on first use.
fn assets() -> &'static [Asset] {
    static ASSETS: OnceLock<Vec<Asset>> = OnceLock::new();
    ASSETS.get_or_init(|| {
        FILES
            .iter()
            .map(|&(name, body, content_type)| {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                gz.write_all(body).expect("writing to memory");
                let hash = cdeploy_core::sha256_hex(body);
                Asset {
                    name,
                    body,
                    gzip: gz.finish().expect("writing to memory"),
                    content_type,
                    etag: HeaderValue::from_str(&format!("\"{}\"", &hash[..20])).expect("hex"),
                }
            })
            .collect()
    })
}

/// The headers every dashboard answer carries.
pub fn security_headers(headers: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    };
    set(headers, "content-security-policy", CSP);
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "x-frame-options", "DENY");
    set(headers, "referrer-policy", "no-referrer");
    set(headers, "cross-origin-opener-policy", "same-origin");
    set(headers, "cross-origin-resource-policy", "same-origin");
    set(
        headers,
        "permissions-policy",
        "camera=(), microphone=(), geolocation=(), payment=()",
    );
}

fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some(asset) = assets().iter().find(|a| a.name == name) else {
        let mut r = (StatusCode::NOT_FOUND, "no such file").into_response();
        security_headers(r.headers_mut());
        return r;
    };
    let fresh = request
        .get(IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == asset.etag.as_bytes());
    let gzip = request
        .get(ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else if gzip {
        let mut r = asset.gzip.clone().into_response();
        r.headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        asset.body.into_response()
    };
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(ETAG, asset.etag.clone());
    h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    // Revalidated on every load (a 304 when unchanged): an upgraded server's files are
    // never mixed with an old one's.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(h);
    r
}

async fn shell(request: HeaderMap) -> Response {
    serve("index.html", &request)
}

async fn asset(Path(name): Path<String>, request: HeaderMap) -> Response {
    if name == "index.html" {
        return serve("", &request);
    }
    serve(&name, &request)
}

/// `/` and `/ui` lead to the dashboard; `/ui/…` is its shell, `/ui/assets/…` its files.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(shell))
        .route("/ui/assets/{name}", get(asset))
        .route("/ui/{*page}", get(shell))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_the_pages_import_is_embedded() {
        let names: Vec<&str> = FILES.iter().map(|f| f.0).collect();
        for (name, body, _) in FILES {
            let text = std::str::from_utf8(body).unwrap();
            for module in text.split("later('./").skip(1) {
                let file: String = module.chars().take_while(|c| *c != '\'').collect();
                assert!(
                    names.contains(&file.as_str()),
                    "{name} loads {file}, which is not embedded"
                );
            }
            for line in text.lines() {
                let line = line.trim();
                let Some(from) = line.split(" from '").nth(1) else {
                    continue;
                };
                if !line.starts_with("import ") {
                    continue;
                }
                let file = from.trim_end_matches("';").trim_start_matches("./");
                assert!(
                    names.contains(&file),
                    "{name} imports {file}, which is not embedded"
                );
            }
            for r in text.split("/ui/assets/").skip(1) {
                let file: String = r.chars().take_while(|c| *c != '"').collect();
                if name.ends_with(".html") {
                    assert!(
                        names.contains(&file.as_str()),
                        "{name} loads {file}, which is not embedded"
                    );
                }
            }
        }
    }

    #[test]
    fn no_script_writes_markup() {
        // Values reach the page as text nodes: nothing assigns HTML.
        for (name, body, _) in FILES.iter().filter(|f| f.0.ends_with(".js")) {
            let text = std::str::from_utf8(body).unwrap();
            for bad in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
            ] {
                assert!(!text.contains(bad), "{name} uses {bad}");
            }
        }
    }

    #[test]
    fn answers_carry_the_policy_and_compress() {
        let mut req = HeaderMap::new();
        req.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip, br"));
        let r = serve("app.js", &req);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_ENCODING], "gzip");
        assert!(r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
        let etag = r.headers()[ETAG].clone();
        req.insert(IF_NONE_MATCH, etag);
        assert_eq!(serve("app.js", &req).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            serve("nope.js", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
        assert!(!CSP.contains("unsafe"));
    }
}
