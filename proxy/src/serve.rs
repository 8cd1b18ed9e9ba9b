//! Responses: headers, conditional requests, ranges and encodings.

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::body::{full, Body};
use crate::resolve::Found;
use crate::site::{Representation, ServedFile};
use crate::{Proxy, ProxyError};

const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const BYTES: HeaderValue = HeaderValue::from_static("bytes");
const VARY: HeaderValue = HeaderValue::from_static("Accept-Encoding");

/// Builds the response for a resolved file. Content is read only when the response
/// carries it (not for HEAD or 304), only the requested range of a large file is read,
/// and large files stream from storage rather than sitting in memory.
pub async fn file<B>(
    proxy: &Proxy,
    req: &Request<B>,
    found: Found<'_, ServedFile>,
) -> Result<Response<Body>, ProxyError> {
    let file = found.file;
    let headers = req.headers();
    let head = req.method() == hyper::Method::HEAD;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let mut resp = with_file_headers(file);
    let rep = representation(proxy, headers, file, range.is_some()).await;
    if found.status == StatusCode::OK && if_none_match(headers, &rep.etag, &file.hash) {
        resp.headers_mut().insert(header::ETAG, own(&rep.etag));
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(resp);
    }
    let sent = Sent::prepare(proxy, file, rep, head).await?;
    resp.headers_mut().insert(header::ETAG, own(&sent.rep.etag));
    if let Some(enc) = sent.rep.encoding {
        resp.headers_mut().insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(enc.token()),
        );
    }
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v == sent.rep.etag);
    if let (Some(range), true, StatusCode::OK) = (range, if_range_ok, found.status) {
        match parse_range(range, file.size) {
            RangeResult::Satisfiable(start, end) => {
                return partial(proxy, resp, &sent, file.size, (start, end), head).await;
            }
            RangeResult::Unsatisfiable => return Ok(unsatisfiable(resp, file.size)),
            RangeResult::Ignore => {}
        }
    }
    whole(proxy, resp, sent, found.status, head).await
}

/// A copy of a site's header value for one response. (A clone shares the site's
/// buffer, whose count every core would write for every response of the file.)
fn own(v: &HeaderValue) -> HeaderValue {
    HeaderValue::from_bytes(v.as_bytes()).unwrap_or_else(|_| v.clone())
}

/// A response with the headers every answer for `file` carries, and no body yet.
fn with_file_headers(file: &ServedFile) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.headers_mut() = hyper::HeaderMap::with_capacity(12);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, own(&file.content_type));
    h.insert(header::CACHE_CONTROL, file.cache_control.clone());
    h.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    h.insert(header::ACCEPT_RANGES, BYTES);
    if !file.variants.is_empty() {
        h.insert(header::VARY, VARY);
    }
    resp
}

/// The representation the client asked for: the best encoding it accepts, or the
/// identity for a range (ranges address the identity; never mix them with encodings),
/// or for a page whose compression was found not to pay (it is served, and
/// revalidated, as the identity).
async fn representation<'a>(
    proxy: &Proxy,
    headers: &hyper::HeaderMap,
    file: &'a ServedFile,
    ranged: bool,
) -> &'a Representation {
    let rep = if ranged {
        &file.identity
    } else {
        pick_encoding(headers, &file.variants).unwrap_or(&file.identity)
    };
    if proxy.known_incompressible(rep).await {
        &file.identity
    } else {
        rep
    }
}

/// The representation a response carries, once it is settled: its bytes when they were
/// made for this response, its size when it is known without reading it.
struct Sent<'a> {
    rep: &'a Representation,
    made: Option<Bytes>,
    size: Option<u64>,
}

impl<'a> Sent<'a> {
    /// A small file's variant is made now (or taken from the cache); one that would not
    /// be smaller, or cannot be made now (every compression slot busy; a HEAD, which only
    /// takes what is made already), leaves the identity to be served.
    async fn prepare(
        proxy: &Proxy,
        file: &'a ServedFile,
        mut rep: &'a Representation,
        head: bool,
    ) -> Result<Self, ProxyError> {
        let mut made = None;
        if rep.on_demand {
            made = proxy.compressed(rep, &file.identity.key, head).await?;
            if made.is_none() {
                rep = &file.identity;
            }
        }
        // The identity size is in the manifest; a stored variant's is asked of storage
        // (no content).
        let size = match (rep.encoding, &made) {
            (None, _) => Some(file.size),
            (Some(_), Some(made)) => Some(made.len() as u64),
            (Some(_), None) => proxy.blob_size(&rep.key).await?,
        };
        Ok(Sent { rep, made, size })
    }

    /// Whether it is read whole into memory (and cached) rather than streamed.
    fn small(&self) -> bool {
        self.size.is_some_and(|s| s <= crate::MAX_CACHED_BLOB)
    }
}

/// 206: bytes `start..=end` of a file of `len` bytes.
async fn partial(
    proxy: &Proxy,
    mut resp: Response<Body>,
    sent: &Sent<'_>,
    len: u64,
    (start, end): (u64, u64),
    head: bool,
) -> Result<Response<Body>, ProxyError> {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_RANGE,
        content_range(&format!("bytes {start}-{end}/{len}")),
    );
    *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    if !head {
        *resp.body_mut() = if sent.small() {
            let data = proxy.small_blob(&sent.rep.key).await?;
            let end = (end as usize).min(data.len().saturating_sub(1));
            full(data.slice((start as usize).min(end)..=end))
        } else {
            proxy.blob_stream(&sent.rep.key, Some((start, end))).await?
        };
    }
    say_length(&mut resp, end - start + 1, head);
    Ok(resp)
}

/// 416: no byte of a file of `len` bytes is in the range.
fn unsatisfiable(mut resp: Response<Body>, len: u64) -> Response<Body> {
    resp.headers_mut().insert(
        header::CONTENT_RANGE,
        content_range(&format!("bytes */{len}")),
    );
    *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
    resp
}

/// The whole representation, with the status the path resolved to (200, or 404 for a
/// site's own 404 page).
async fn whole(
    proxy: &Proxy,
    mut resp: Response<Body>,
    sent: Sent<'_>,
    status: StatusCode,
    head: bool,
) -> Result<Response<Body>, ProxyError> {
    *resp.status_mut() = status;
    if !head {
        let small = sent.small();
        *resp.body_mut() = if let Some(made) = sent.made {
            full(made)
        } else if small {
            full(proxy.small_blob(&sent.rep.key).await?)
        } else {
            proxy.blob_stream(&sent.rep.key, None).await?
        };
    }
    if let Some(size) = sent.size {
        say_length(&mut resp, size, head);
    }
    Ok(resp)
}

/// `Content-Length: len` for an answer to HEAD, an empty one or one streamed. (A body in
/// memory has its exact length, which hyper writes itself, without a header value made
/// for it; over HTTP/2 it says nothing of an empty one.)
fn say_length(resp: &mut Response<Body>, len: u64, head: bool) {
    if head || len == 0 || !matches!(resp.body(), Body::Full(_)) {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
}

fn content_range(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).expect("digits and ASCII")
}

/// The best precompressed variant the client accepts (`br` over `gzip`, `q=0` refuses).
/// (Hand-written: headers 0.4 has no typed `Accept-Encoding`.)
fn pick_encoding<'a>(
    headers: &hyper::HeaderMap,
    available: &'a [Representation],
) -> Option<&'a Representation> {
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
    // Variants are stored best first (br, then gzip).
    available
        .iter()
        .find(|r| r.encoding.is_some_and(|e| accepts(e.token())))
}

/// `If-None-Match` matching any representation of the same content. (Hand-written:
/// `headers::IfNoneMatch` compares one ETag at a time, and a client holding the gzip
/// variant's tag must get its 304 for the brotli one too: every variant's tag starts
/// with the content's hash.)
fn if_none_match(headers: &hyper::HeaderMap, etag: &HeaderValue, hash: &str) -> bool {
    let Some(v) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    v.split(',').map(str::trim).any(|tag| {
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || etag == tag || tag.trim_matches('"').split('-').next() == Some(hash)
    })
}

enum RangeResult {
    Satisfiable(u64, u64),
    Unsatisfiable,
    /// Malformed or multi-range: answer with the whole file, as RFC 9110 allows.
    Ignore,
}

/// One `bytes=` range against a representation of `len` bytes, as RFC 9110 §14.1.2 reads
/// it. (Hand-written: `headers::Range::satisfiable_ranges` in headers 0.4 refuses a suffix
/// longer than the file, which the RFC serves whole, and passes `start > end` and starts
/// past the end through unchecked.)
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

/// A rule's redirect. It may change with the next deployment, so browsers and caches
/// check again rather than keep it (a 301 is otherwise kept for good).
pub fn redirect(status: u16, location: &str, head: bool) -> Response<Body> {
    // The body does not repeat the location: an answer stays small whatever the rule
    // filled in.
    let body = if head {
        Bytes::new()
    } else {
        Bytes::from_static(b"Redirecting\n")
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "public, max-age=0, must-revalidate")
        .body(full(body))
        .expect("valid response");
    match HeaderValue::from_str(location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        // Targets are percent-encoded when filled in; this cannot happen.
        Err(_) => *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
    }
    resp
}

pub fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(full(Bytes::from_static(text.as_bytes())))
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
        ProxyError::Gone => (
            StatusCode::GONE,
            "Gone",
            "This page is gone, on purpose.",
        ),
        ProxyError::Upstream(_) => (
            StatusCode::BAD_GATEWAY,
            "Bad gateway",
            "The service this address is proxied to did not answer.",
        ),
        ProxyError::UpstreamRefused(_) => (
            StatusCode::BAD_GATEWAY,
            "Bad gateway",
            "This address is proxied to a network this platform does not let sites reach.",
        ),
        ProxyError::Runtime(..) => (
            StatusCode::BAD_GATEWAY,
            "Bad gateway",
            "This site's server did not answer. It is started again shortly.",
        ),
        ProxyError::LoopDetected => (
            StatusCode::LOOP_DETECTED,
            "Loop detected",
            "This address is proxied back to this platform.",
        ),
        ProxyError::Busy(why) => (StatusCode::SERVICE_UNAVAILABLE, "Busy", *why),
        ProxyError::UriTooLong => (
            StatusCode::URI_TOO_LONG,
            "URI too long",
            "The address this path is sent to is too long.",
        ),
        ProxyError::BadRequest(why) => (StatusCode::BAD_REQUEST, "Bad request", *why),
        ProxyError::MethodNotAllowed => (
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "Only GET and HEAD are served here.",
        ),
        ProxyError::Storage(_) => (
            StatusCode::BAD_GATEWAY,
            "Bad gateway",
            "The site's storage is unavailable. Try again shortly.",
        ),
        ProxyError::ProtectionUnreadable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Preview unavailable",
            "This preview is protected, and this server can't read its protection settings (the operator must give it the protection key).",
        ),
    };
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{code} {title}</title><style>body{{font:16px/1.5 system-ui,sans-serif;display:grid;place-items:center;\
min-height:90vh;color:#222}}h1{{font-size:1.4em;margin:0}}p{{color:#666}}</style></head><body><main>\
<h1>{code} · {title}</h1><p>{detail}</p></main></body></html>",
        code = status.as_u16()
    );
    // Private too: a protected preview's 404 is no one else's business either.
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, crate::protect::PRIVATE)
        .body(full(Bytes::from(html)))
        .expect("valid response");
    advise(e, resp.headers_mut());
    resp
}

/// What an error page says besides its page: the methods allowed, and when to ask
/// again (soon for work at its limit, after a server's backoff).
fn advise(e: &ProxyError, headers: &mut hyper::HeaderMap) {
    if matches!(e, ProxyError::MethodNotAllowed) {
        headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    let retry = match e {
        ProxyError::Busy(_) => Some(1),
        ProxyError::Runtime(_, retry) => *retry,
        _ => None,
    };
    if let Some(secs) = retry {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_range, RangeResult};

    #[test]
    fn busy_and_backing_off_answers_say_when_to_ask_again() {
        use crate::ProxyError;
        let retry = |e: &ProxyError| {
            super::error_page(e)
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(
            retry(&ProxyError::Runtime("crashed".into(), Some(4))).as_deref(),
            Some("4")
        );
        assert_eq!(retry(&ProxyError::Busy("full")).as_deref(), Some("1"));
        assert_eq!(retry(&ProxyError::Runtime("no answer".into(), None)), None);
        assert_eq!(retry(&ProxyError::NotFound), None);
    }

    fn range(v: &str, len: u64) -> Option<Option<(u64, u64)>> {
        match parse_range(v, len) {
            RangeResult::Satisfiable(a, b) => Some(Some((a, b))),
            RangeResult::Unsatisfiable => Some(None),
            RangeResult::Ignore => None,
        }
    }

    #[test]
    fn ranges_as_rfc_9110_reads_them() {
        assert_eq!(range("bytes=1-3", 10), Some(Some((1, 3))));
        assert_eq!(range("bytes=9-", 10), Some(Some((9, 9))));
        assert_eq!(range("bytes=5-99", 10), Some(Some((5, 9))));
        // A suffix longer than the file is the whole file, not an error.
        assert_eq!(range("bytes=-4", 10), Some(Some((6, 9))));
        assert_eq!(range("bytes=-500", 10), Some(Some((0, 9))));
        assert_eq!(range("bytes=-0", 10), Some(None));
        assert_eq!(range("bytes=10-", 10), Some(None));
        assert_eq!(range("bytes=0-", 0), Some(None));
        // Malformed or several ranges: the whole file, with 200.
        for v in [
            "bytes=3-1",
            "bytes=a-b",
            "bytes=-",
            "items=1-2",
            "bytes=0-1,4-5",
        ] {
            assert_eq!(range(v, 10), None, "{v}");
        }
    }
}
