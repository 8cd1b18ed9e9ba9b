//! Requests for a server app's server: everything of a deployment with a server that no
//! static file answers (and every request that is not `GET` or `HEAD`) goes to the
//! deployment's runtime ([`cdeploy_runtime::Runtimes`]), which starts it if it sleeps.
//!
//! The server gets the visitor's `Host` (it builds its own links from it), with
//! `X-Forwarded-Host`, `X-Forwarded-Proto`, `X-Forwarded-For` and an `X-Request-Id`
//! that its log line in the runtime's log carries too; hop-by-hop headers and the
//! preview-protection cookie are not passed on. Its answer loses hop-by-hop headers,
//! `Clear-Site-Data`, and the `Domain` of its cookies (a site must not set cookies for
//! the platform's other sites). A server that cannot start or crashed answers `502`,
//! at once; the lease on it is held until its answer's body is relayed, so it is
//! never stopped mid-answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cdeploy_core::server::ServerSpec;
use cdeploy_runtime::{RuntimeError, Runtimes};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response};

use crate::body::Body;
use crate::upstream::{relay, strip_hop_by_hop, Forward};
use crate::ProxyError;

/// Longest wait for the next bytes of a server's answer.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// The proxy's way to deployments' servers.
pub(crate) struct RuntimeRelay {
    runtimes: Runtimes,
    client: reqwest::Client,
}

/// Who asked, for the forwarded headers and the runtime's log.
pub(crate) struct Visit<'a> {
    pub host: &'a str,
    pub tls: bool,
    pub visitor: Option<std::net::IpAddr>,
    /// The deployment's own address (`CDEPLOY_URL` for its server).
    pub url: String,
}

impl RuntimeRelay {
    pub(crate) fn new(runtimes: Runtimes) -> RuntimeRelay {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(READ_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("the runtime client builds");
        RuntimeRelay { runtimes, client }
    }

    /// Sends `req` to deployment `id`'s server (started if asleep) and relays its answer.
    pub(crate) async fn forward<B: Forward>(
        &self,
        req: Request<B>,
        (slug, id, spec): (&str, &str, &ServerSpec),
        visit: Visit<'_>,
    ) -> Result<Response<Body>, ProxyError> {
        let env = vec![("CDEPLOY_URL".to_string(), visit.url.clone())];
        let lease = self
            .runtimes
            .lease((slug, id), spec, env)
            .await
            .map_err(|e| match &e {
                RuntimeError::Busy(_) => {
                    ProxyError::Busy("too many site servers are running; try again shortly")
                }
                RuntimeError::Crashed { retry_in, .. } => {
                    ProxyError::Runtime(e.to_string(), Some(*retry_in))
                }
                RuntimeError::StartFailed(_) => ProxyError::Runtime(e.to_string(), Some(1)),
            })?;
        let started = Instant::now();
        let request_id = request_id();
        let (parts, body) = req.into_parts();
        let head = parts.method == hyper::Method::HEAD;
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        let url = format!("http://{}{path}", lease.addr);
        let headers = outgoing(parts.headers, &visit, &request_id);
        let line = |status: &str| {
            format!(
                "{} {} → {status} in {} ms (request {request_id})",
                parts.method,
                shown(&path),
                started.elapsed().as_millis()
            )
        };
        let mut request = self
            .client
            .request(parts.method.clone(), url)
            .headers(headers);
        if let Some(body) = body.into_upstream() {
            request = request.body(body);
        }
        let sent = match request.send().await {
            Ok(sent) => sent,
            Err(e) => {
                self.runtimes.note(id, &line(&format!("no answer ({e})")));
                return Err(ProxyError::Runtime(
                    format!("the site's server did not answer: {e}"),
                    None,
                ));
            }
        };
        self.runtimes.note(id, &line(sent.status().as_str()));
        Ok(relay(sent, lease, head))
    }
}

/// A path as the log shows it: at most 200 characters.
fn shown(path: &str) -> &str {
    match path.char_indices().nth(200) {
        Some((i, _)) => &path[..i],
        None => path,
    }
}

/// The visitor's headers as the server gets them.
fn outgoing(mut headers: HeaderMap, visit: &Visit<'_>, request_id: &str) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    crate::protect::strip_cookie(&mut headers);
    if let Ok(v) = HeaderValue::from_str(visit.host) {
        headers.insert(header::HOST, v.clone());
        headers.insert("x-forwarded-host", v);
    }
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if visit.tls { "https" } else { "http" }),
    );
    if let Some(ip) = visit.visitor {
        if let Ok(v) = HeaderValue::from_str(&ip.to_string()) {
            headers.insert("x-forwarded-for", v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
    headers
}

/// A request id: unique in this process, not guessable from the last one.
fn request_id() -> String {
    use std::hash::BuildHasher;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let h = KEY.get_or_init(Default::default).hash_one(n);
    format!("{h:016x}")
}
