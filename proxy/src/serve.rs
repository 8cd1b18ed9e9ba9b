//! Responses: headers, conditional requests, ranges and encodings.

use bytes::Bytes;
use cdeploy_core::layout;
use cdeploy_core::manifest::{Encoding, Manifest};
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::resolve::{is_fingerprinted, Found};
use crate::{Body, Proxy, ProxyError};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "public, max-age=0, must-revalidate";

/// Builds the response for a resolved file.
pub async fn file<B>(
    proxy: &Proxy,
    req: &Request<B>,
    _manifest: &Manifest,
    found: Found<'_>,
) -> Result<Response<Body>, ProxyError> {
    let entry = found.entry;
    let headers = req.headers();
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    // Ranges address the identity representation; never mix them with encodings.
    let encoding = if range.is_some() {
        None
    } else {
        pick_encoding(headers, &entry.encodings)
    };
    let etag = match encoding {
        Some(enc) => format!("\"{}-{}\"", entry.hash, enc.suffix()),
        None => format!("\"{}\"", entry.hash),
    };
    let cache_control = if entry.content_type.starts_with("text/html") {
        "no-cache"
    } else if is_fingerprinted(found.path) {
        IMMUTABLE
    } else {
        REVALIDATE
    };

    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, &entry.content_type)
        .header(header::CACHE_CONTROL, cache_control)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::ACCEPT_RANGES, "bytes");
    if !entry.encodings.is_empty() {
        builder = builder.header(header::VARY, "Accept-Encoding");
    }
    builder = builder.header(header::ETAG, &etag);

    if found.status == StatusCode::OK && if_none_match(headers, &etag, &entry.hash) {
        return Ok(builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Full::new(Bytes::new()))
            .expect("valid response"));
    }

    let key = match encoding {
        Some(enc) => layout::blob_variant(&entry.hash, enc),
        None => layout::blob(&entry.hash),
    };
    let data = proxy.blob(&key).await?;
    if let Some(enc) = encoding {
        builder = builder.header(header::CONTENT_ENCODING, enc.token());
    }

    let if_range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|v| v == etag));
    if let (Some(range), true, StatusCode::OK) = (range, if_range_ok, found.status) {
        match parse_range(range, data.len() as u64) {
            RangeResult::Satisfiable(start, end) => {
                let body = data.slice(start as usize..=end as usize);
                return Ok(builder
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(
                        header::CONTENT_RANGE,
                        format!("bytes {start}-{end}/{}", data.len()),
                    )
                    .header(header::CONTENT_LENGTH, body.len())
                    .body(Full::new(body))
                    .expect("valid response"));
            }
            RangeResult::Unsatisfiable => {
                return Ok(builder
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{}", data.len()))
                    .body(Full::new(Bytes::new()))
                    .expect("valid response"));
            }
            RangeResult::Ignore => {}
        }
    }
    Ok(builder
        .status(found.status)
        .header(header::CONTENT_LENGTH, data.len())
        .body(Full::new(data))
        .expect("valid response"))
}

/// The best precompressed variant the client accepts (`br` over `gzip`, `q=0` refuses).
fn pick_encoding(headers: &hyper::HeaderMap, available: &[Encoding]) -> Option<Encoding> {
    if available.is_empty() {
        return None;
    }
    let accept = headers.get(header::ACCEPT_ENCODING)?.to_str().ok()?;
    let accepts = |token: &str| {
        accept.split(',').any(|part| {
            let mut it = part.split(';');
            let name = it.next().unwrap_or("").trim();
            let q = it
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            name.eq_ignore_ascii_case(token) && q > 0.0
        })
    };
    [Encoding::Br, Encoding::Gzip]
        .into_iter()
        .find(|e| available.contains(e) && accepts(e.token()))
}

/// `If-None-Match` matching any representation of the same content.
fn if_none_match(headers: &hyper::HeaderMap, etag: &str, hash: &str) -> bool {
    let Some(v) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    v.split(',').map(str::trim).any(|tag| {
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || tag == etag || tag.trim_matches('"').split('-').next() == Some(hash)
    })
}

enum RangeResult {
    Satisfiable(u64, u64),
    Unsatisfiable,
    /// Malformed or multi-range: answer with the whole file, as RFC 9110 allows.
    Ignore,
}

fn parse_range(v: &str, len: u64) -> RangeResult {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return RangeResult::Ignore;
    };
    if spec.contains(',') {
        return RangeResult::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeResult::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (true, true) => return RangeResult::Ignore,
        (true, false) => match b.parse::<u64>() {
            Ok(0) => return RangeResult::Unsatisfiable,
            Ok(n) => (len.saturating_sub(n), len.saturating_sub(1)),
            Err(_) => return RangeResult::Ignore,
        },
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else {
                return RangeResult::Ignore;
            };
            let end = if b.is_empty() {
                len.saturating_sub(1)
            } else {
                match b.parse::<u64>() {
                    Ok(e) if e >= start => e.min(len.saturating_sub(1)),
                    _ => return RangeResult::Ignore,
                }
            };
            (start, end)
        }
    };
    if len == 0 || parsed.0 >= len {
        RangeResult::Unsatisfiable
    } else {
        RangeResult::Satisfiable(parsed.0, parsed.1)
    }
}

pub fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .expect("valid response")
}

/// The proxy's own pages for errors.
pub fn error_page(e: &ProxyError) -> Response<Body> {
    let (status, title, detail) = match e {
        ProxyError::UnknownHost => (
            StatusCode::NOT_FOUND,
            "Site not found",
            "No deployment is served at this address.",
        ),
        ProxyError::NotFound => (
            StatusCode::NOT_FOUND,
            "Page not found",
            "This deployment has no file at this path.",
        ),
        ProxyError::BadRequest(why) => (StatusCode::BAD_REQUEST, "Bad request", *why),
        ProxyError::MethodNotAllowed => (
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "Only GET and HEAD are served.",
        ),
        ProxyError::Storage(_) => (
            StatusCode::BAD_GATEWAY,
            "Bad gateway",
            "The site's storage is unavailable. Try again shortly.",
        ),
    };
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{code} {title}</title><style>body{{font:16px/1.5 system-ui,sans-serif;display:grid;place-items:center;\
min-height:90vh;color:#222}}h1{{font-size:1.4em;margin:0}}p{{color:#666}}</style></head><body><main>\
<h1>{code} · {title}</h1><p>{detail}</p></main></body></html>",
        code = status.as_u16()
    );
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(html)))
        .expect("valid response");
    if matches!(e, ProxyError::MethodNotAllowed) {
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    resp
}
