//! Answering a request: the proxy's own pages on the bare domain, the gate in front of a
//! protected project's previews, then the file; and [`run`], the proxy on a listener of
//! the connection layer (`cdeploy_conn`).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use cdeploy_core::rules::route::{self, Answer, Router};
use hyper::header::{HeaderName, HeaderValue};

use cdeploy_core::domains::DomainRoute;
use cdeploy_core::ids;

use crate::body::{without_body, Body};
use crate::domains::{redirect_to, ACME_CHALLENGE_PREFIX};
use crate::host::{host_only, request_host, Target};
use crate::resolve::Found;
use crate::site::ServedFile;
use crate::upstream::{Forward, Origin};
use crate::{protect, resolve, serve, Proxy, ProxyError};

/// Whether a server app's request goes to its server: what no file or rule answers,
/// and every method but `GET` and `HEAD` that no redirect or proxy rule takes.
fn for_server<F>(answer: &Answer<'_, '_, F>, read: bool) -> bool {
    match answer {
        Answer::Status { via: None, .. } => true,
        Answer::File { .. } => !read,
        _ => false,
    }
}

/// Logs a failure of storage or of an upstream, with the host it was for.
fn log_failure(e: &ProxyError, host: &str) {
    match e {
        // Quoted (`?`): a visitor's Host may hold spaces and `key=value` look-alikes.
        ProxyError::Storage(err) => tracing::warn!(error = %err, ?host, "storage error"),
        ProxyError::Upstream(why) | ProxyError::UpstreamRefused(why) => {
            tracing::warn!(error = %why, ?host, "a rule's upstream failed")
        }
        ProxyError::Runtime(why, _) => {
            tracing::warn!(error = %why, ?host, "a site's server failed")
        }
        _ => {}
    }
}

/// What the protection gate decided for a request.
enum Gate {
    /// Not a protected preview.
    Open,
    /// A protected preview the visitor may see: its answer is private.
    Protected,
    /// Answered at the gate (a redirect that trades a token for a cookie, or the form).
    Answered(Response<Body>),
}

/// The connection a request came on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Conn {
    /// The peer's address (passed on to a rule's upstream in `X-Forwarded-For`).
    pub peer: Option<std::net::IpAddr>,
    /// The request came over this proxy's own TLS listener.
    pub tls: bool,
}

/// The site a request's host names, or an answer for the host itself.
enum Named<'h> {
    Site {
        /// Borrowed from the host, or a custom domain's project.
        slug: Cow<'h, str>,
        target: Target,
        /// The custom domain's settings, when the host is one.
        domain: Option<Arc<DomainRoute>>,
    },
    Answered(Response<Body>),
}

impl Proxy {
    /// Answers one request. Never panics on input; errors become 4xx/5xx pages.
    pub async fn handle<B: Forward>(&self, req: Request<B>) -> Response<Body> {
        self.handle_on(req, Conn::default()).await
    }

    /// [`Proxy::handle`] for a request that came on `conn`.
    pub async fn handle_on<B: Forward>(&self, req: Request<B>, conn: Conn) -> Response<Body> {
        let head = req.method() == Method::HEAD;
        // One level of futures, not two: each level holds its own copy of the request,
        // and the whole future is moved into place at every level.
        let answered = match request_host(&req) {
            Ok(host) => {
                let answered = self.answer_host(req, conn, &host).await;
                if let Err(e) = &answered {
                    log_failure(e, &host);
                }
                answered
            }
            Err(e) => Err(e),
        };
        match answered {
            Ok(resp) => resp,
            Err(e) => {
                let mut resp = serve::error_page(&e);
                if head {
                    without_body(&mut resp);
                }
                resp
            }
        }
    }

    /// The answer for a request to `host` (its `Host`, lower-cased).
    async fn answer_host<B: Forward>(
        &self,
        req: Request<B>,
        conn: Conn,
        host: &str,
    ) -> Result<Response<Body>, ProxyError> {
        let read = matches!(*req.method(), Method::GET | Method::HEAD);
        let secure = conn.tls || protect::behind_tls(req.headers());
        let (slug, target, domain) = match self.named(&req, host, secure).await? {
            Named::Site {
                slug,
                target,
                domain,
            } => (slug, target, domain),
            Named::Answered(resp) => return Ok(resp),
        };
        let protected = match self.gate(&req, &slug, &target).await? {
            Gate::Open => false,
            Gate::Protected => true,
            Gate::Answered(resp) => return Ok(resp),
        };
        let path = resolve::decode_path(req.uri().path())?;
        let served = self
            .site_of(&slug, target)
            .await?
            .ok_or(ProxyError::UnknownHost)?;
        // `request_host` lower-cased it already.
        let routed = route::Request {
            host: host_only(host),
            path: &path,
            query: req.uri().query(),
        };
        let answer = served.router.answer(&served.files, served.site, &routed);
        if served.server.is_some() && for_server(&answer, read) {
            let url = self.deployment_url(&slug, &served.id, secure);
            let mut resp = Box::pin(self.to_server(req, &served, (host, conn, url))).await?;
            if protected {
                keep_private(resp.headers_mut());
            }
            return Ok(resp);
        }
        let mut resp = match answer {
            // What an upstream answers is relayed as it is: header rules are the site's.
            Answer::Proxy { url, .. } => {
                let origin = Origin {
                    site: &slug,
                    host,
                    tls: secure,
                    visitor: conn.peer,
                };
                // Boxed: a forward's future is large, and most requests are not one.
                let mut resp = Box::pin(self.upstream.forward(req, &url, origin)).await?;
                if protected {
                    keep_private(resp.headers_mut());
                }
                return Ok(resp);
            }
            // Redirects answer any method (307 and 308 keep it); the rest only reads.
            answer @ Answer::Redirect { .. } => self.answer(&req, answer).await?,
            _ if !read => return Err(ProxyError::MethodNotAllowed),
            answer => self.answer(&req, answer).await?,
        };
        apply_headers(&served.router, &path, resp.headers_mut());
        if let Some(hsts) = domain
            .as_ref()
            .and_then(|d| d.hsts.as_deref())
            .filter(|_| secure)
        {
            if let Ok(v) = HeaderValue::from_str(hsts) {
                resp.headers_mut()
                    .insert(hyper::header::STRICT_TRANSPORT_SECURITY, v);
            }
        }
        if protected {
            keep_private(resp.headers_mut());
        }
        Ok(resp)
    }

    /// A file, a redirect or a status page for a site.
    async fn answer<B>(
        &self,
        req: &Request<B>,
        answer: Answer<'_, '_, ServedFile>,
    ) -> Result<Response<Body>, ProxyError> {
        let head = req.method() == Method::HEAD;
        Ok(match answer {
            Answer::File {
                path, file, status, ..
            } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                serve::file(self, req, Found { path, file, status }).await?
            }
            Answer::Redirect {
                status, location, ..
            } => serve::redirect(status, &location, head),
            Answer::Status { status, .. } => {
                let e = match status {
                    410 => ProxyError::Gone,
                    414 => ProxyError::UriTooLong,
                    _ => ProxyError::NotFound,
                };
                let mut resp = serve::error_page(&e);
                if head {
                    without_body(&mut resp);
                }
                resp
            }
            Answer::Proxy { .. } => unreachable!("proxies are answered by the caller"),
        })
    }

    /// What the host names: a CA's challenge answer (before anything else), a project
    /// under the platform's domain, a custom domain (or its redirect), the bare domain's
    /// own pages, or nothing.
    async fn named<'h, B>(
        &self,
        req: &Request<B>,
        host: &'h str,
        secure: bool,
    ) -> Result<Named<'h>, ProxyError> {
        let read = matches!(*req.method(), Method::GET | Method::HEAD);
        if let Some(token) = req.uri().path().strip_prefix(ACME_CHALLENGE_PREFIX) {
            if read {
                if let Some(resp) = Box::pin(self.acme_answer(token)).await? {
                    return Ok(Named::Answered(resp));
                }
            }
        }
        if let Some((slug, target)) = self.parse_host(host) {
            return Ok(Named::Site {
                slug: Cow::Borrowed(slug),
                target,
                domain: None,
            });
        }
        let name = host_only(host);
        // Only a name can be a domain: anything else is no site, without a storage read.
        let plausible = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !name.contains("..");
        if name != self.domain_host && plausible {
            if let Some(domain) = self.custom_domain(name).await? {
                if let Some(other) = &domain.redirect {
                    let scheme = if secure { "https" } else { "http" };
                    // The other name on the port the visitor reached.
                    let to = match port_of(host) {
                        Some(port) => format!("{other}:{port}"),
                        None => other.clone(),
                    };
                    let mut resp = redirect_to(scheme, &to, req.uri());
                    // HSTS goes with every answer over HTTPS, redirects included.
                    if let Some(v) = domain
                        .hsts
                        .as_deref()
                        .filter(|_| secure)
                        .and_then(|h| HeaderValue::from_str(h).ok())
                    {
                        resp.headers_mut()
                            .insert(hyper::header::STRICT_TRANSPORT_SECURITY, v);
                    }
                    return Ok(Named::Answered(resp));
                }
                if domain.https_redirect && !secure {
                    let to = self.https_authority(name, host);
                    return Ok(Named::Answered(redirect_to("https", &to, req.uri())));
                }
                let target = match &domain.branch {
                    Some(branch) => Target::Alias(
                        ids::branch_label(branch, &domain.slug).ok_or(ProxyError::UnknownHost)?,
                    ),
                    None => Target::Production,
                };
                return Ok(Named::Site {
                    slug: Cow::Owned(domain.slug.clone()),
                    target,
                    domain: Some(domain),
                });
            }
        }
        if !read {
            return Err(ProxyError::MethodNotAllowed);
        }
        Ok(Named::Answered(
            Box::pin(self.own_page(host, req.uri().path())).await?,
        ))
    }

    /// A server app's request, sent to its deployment's server.
    async fn to_server<B: Forward>(
        &self,
        req: Request<B>,
        served: &crate::site::ServedSite,
        (host, conn, url): (&str, Conn, String),
    ) -> Result<Response<Body>, ProxyError> {
        let spec = served.server.as_ref().ok_or(ProxyError::NotFound)?;
        let relay = self.runtime.as_ref().ok_or_else(|| {
            ProxyError::Runtime("this proxy runs no site servers (no runtimes)".into(), None)
        })?;
        // What a visitor says of itself is believed only behind trusted proxies: the
        // server learns the address and scheme the platform saw.
        let trusted = self.trusted_proxies;
        let visit = crate::runtime::Visit {
            host,
            tls: conn.tls || (trusted > 0 && protect::behind_tls(req.headers())),
            visitor: conn
                .peer
                .map(|peer| crate::visitor::client_address(req.headers(), peer, trusted)),
            url,
        };

        relay
            .forward(req, (&served.slug, &served.id, spec), visit)
            .await
    }

    /// A deployment's own address, `<slug>--<id>.<domain>`.
    fn deployment_url(&self, slug: &str, id: &str, secure: bool) -> String {
        let scheme = if secure { "https" } else { "http" };
        format!("{scheme}://{slug}--{id}.{}", self.domain)
    }

    /// Where HTTPS is for `name`, asked as `host`: on 443 (no port), unless the visitor
    /// reached a port of its own, when it is this proxy's TLS port.
    fn https_authority(&self, name: &str, host: &str) -> String {
        match (port_of(host), self.tls_port) {
            (Some(_), Some(tls)) if tls != 443 => format!("{name}:{tls}"),
            _ => name.to_string(),
        }
    }

    /// A host that names no site: the bare domain answers its health pages, anything
    /// else is an unknown host.
    async fn own_page(&self, host: &str, path: &str) -> Result<Response<Body>, ProxyError> {
        if host_only(host) != self.domain_host {
            return Err(ProxyError::UnknownHost);
        }
        match path {
            "/healthz" => Ok(serve::plain(StatusCode::OK, "ok\n")),
            // Ready: storage answers (a replica that cannot read it sends 503 to its load
            // balancer rather than 502s to visitors).
            "/readyz" => Ok(match self.storage.check().await {
                Ok(()) => serve::plain(StatusCode::OK, "ready\n"),
                Err(e) => {
                    tracing::warn!(error = %e, "not ready: storage");
                    serve::plain(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable\n")
                }
            }),
            _ => Err(ProxyError::UnknownHost),
        }
    }

    /// Previews of a protected project answer only who has the token or a cookie.
    /// (An unknown project costs no protection read, and answers nothing: its route
    /// says it is unknown, whatever a thread's memo still holds of its sites.)
    async fn gate<B>(
        &self,
        req: &Request<B>,
        slug: &str,
        target: &Target,
    ) -> Result<Gate, ProxyError> {
        if matches!(target, Target::Production) {
            return Ok(Gate::Open);
        }
        // Boxed: the shared caches' futures would make every request's future large.
        if Box::pin(self.production(slug)).await?.is_none() {
            return Err(ProxyError::UnknownHost);
        }
        let Some(p) = Box::pin(self.protection(slug)).await? else {
            return Ok(Gate::Open);
        };
        Ok(
            match protect::check(&p, slug, req.headers(), req.uri(), unix_now()) {
                protect::Access::Allowed => Gate::Protected,
                protect::Access::Redeem {
                    location,
                    set_cookie,
                } => {
                    let secure = protect::behind_tls(req.headers());
                    let cookie = set_cookie
                        .then(|| protect::set_cookie(&p, slug, unix_now(), secure))
                        .flatten();
                    Gate::Answered(protect::redirect(cookie, &location))
                }
                protect::Access::Denied => {
                    let next = protect::without_bypass(req.uri());
                    let mut resp = protect::challenge(&p, &next, None, StatusCode::UNAUTHORIZED);
                    if req.method() == Method::HEAD {
                        without_body(&mut resp);
                    }
                    Gate::Answered(resp)
                }
            },
        )
    }
}

/// The header rules for `path`: removals first, then what they set (replacing the
/// proxy's own header of that name).
fn apply_headers(router: &Router, path: &str, headers: &mut hyper::HeaderMap) {
    if router.rules().headers.is_empty() {
        return;
    }
    let plan = router.headers_for(path);
    for name in plan.remove {
        headers.remove(name);
    }
    for (name, value, _) in plan.set {
        // Names and values were checked when the deployment was made.
        let (Ok(name), Ok(mut value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            continue;
        };
        // `Vary` is added to: an encoded answer keeps `Accept-Encoding` in it.
        if name == hyper::header::VARY {
            if let Some(ours) = headers.get(&name).and_then(|v| v.to_str().ok()) {
                if let Ok(both) =
                    HeaderValue::from_str(&format!("{ours}, {}", value.to_str().unwrap_or("")))
                {
                    value = both;
                }
            }
        }
        headers.insert(name, value);
    }
}

/// A protected preview's answer is for its visitor only: no shared cache may keep it,
/// whatever a rule or an upstream said.
fn keep_private(headers: &mut hyper::HeaderMap) {
    for name in ["cdn-cache-control", "surrogate-control", "expires"] {
        headers.remove(name);
    }
    let vendor: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().ends_with("-cdn-cache-control"))
        .cloned()
        .collect();
    for name in vendor {
        headers.remove(name);
    }
    headers.insert(hyper::header::CACHE_CONTROL, protect::PRIVATE);
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The proxy as a connection's service.
#[derive(Clone)]
pub struct ProxyService(Arc<ConnProxy>);

/// A connection's own handle on the proxy: each request clones this one, whose count
/// only the connection's thread writes, not the proxy's, which every core would.
struct ConnProxy {
    proxy: Arc<Proxy>,
    conn: Conn,
}

impl ProxyService {
    /// For a connection from `peer`, over this proxy's own TLS when `tls`.
    pub fn new(proxy: Arc<Proxy>, peer: std::net::IpAddr, tls: bool) -> Self {
        let conn = Conn {
            peer: Some(peer),
            tls,
        };
        ProxyService(Arc::new(ConnProxy { proxy, conn }))
    }
}

impl cdeploy_conn::ConnService for ProxyService {
    type Body = Body;
    fn call(&self, req: Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> {
        let this = self.0.clone();
        let conn = this.conn;
        let unlock = req.method() == Method::POST && req.uri().path() == protect::UNLOCK_PATH;
        if let Some(peer) = conn.peer.filter(|_| unlock) {
            return Box::pin(async move { this.proxy.unlock(req, peer).await });
        }
        Box::pin(async move { this.proxy.handle_on(req, conn).await })
    }
}

/// Serves HTTPS on `listener` (certificates by SNI, [`crate::Tls`]) until `shutdown` is
/// cancelled, as [`run`] does plain HTTP.
pub async fn run_tls(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    conns: Arc<cdeploy_conn::Conns>,
    shutdown: CancellationToken,
    workers: Option<Arc<cdeploy_conn::Workers>>,
) -> std::io::Result<()> {
    let tls = crate::Tls(proxy.clone());
    cdeploy_conn::serve_on(
        listener,
        conns,
        move |peer| ProxyService::new(proxy.clone(), peer.ip(), true),
        shutdown,
        tls,
        workers,
    )
    .await
}

/// Serves HTTP/1.1 and HTTP/2 on `listener` until `shutdown` is cancelled, then lets
/// in-flight requests finish (up to 10 s). Connections are capped and timed by `conns`,
/// and served on `workers`' threads when given.
pub async fn run(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    conns: Arc<cdeploy_conn::Conns>,
    shutdown: CancellationToken,
    workers: Option<Arc<cdeploy_conn::Workers>>,
) -> std::io::Result<()> {
    cdeploy_conn::serve_on(
        listener,
        conns,
        move |peer| ProxyService::new(proxy.clone(), peer.ip(), false),
        shutdown,
        cdeploy_conn::Plain,
        workers,
    )
    .await
}

/// The port a `Host` names, if any (`example.com:8080` → 8080).
fn port_of(host: &str) -> Option<u16> {
    let (_, port) = host.rsplit_once(':')?;
    port.parse().ok()
}
