//! Answering a request: the proxy's own pages on the bare domain, the gate in front of a
//! protected project's previews, then the file; and [`run`], the proxy on a listener of
//! the connection layer (`cdeploy_conn`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use cdeploy_core::rules::route::{self, Answer, Router};
use hyper::header::{HeaderName, HeaderValue};

use crate::body::{full, Body};
use crate::host::{host_only, request_host, Target};
use crate::resolve::Found;
use crate::upstream::{Forward, Origin};
use crate::{protect, resolve, serve, Proxy, ProxyError};

/// What the protection gate decided for a request.
enum Gate {
    /// Not a protected preview.
    Open,
    /// A protected preview the visitor may see: its answer is private.
    Protected,
    /// Answered at the gate (a redirect that trades a token for a cookie, or the form).
    Answered(Response<Body>),
}

impl Proxy {
    /// Answers one request. Never panics on input; errors become 4xx/5xx pages.
    pub async fn handle<B: Forward>(&self, req: Request<B>) -> Response<Body> {
        self.handle_peer(req, None).await
    }

    /// [`Proxy::handle`] for a request from `peer` (the connection's other end, passed
    /// on to a rule's upstream in `X-Forwarded-For`).
    pub async fn handle_from<B: Forward>(
        &self,
        req: Request<B>,
        peer: std::net::IpAddr,
    ) -> Response<Body> {
        self.handle_peer(req, Some(peer)).await
    }

    async fn handle_peer<B: Forward>(
        &self,
        req: Request<B>,
        peer: Option<std::net::IpAddr>,
    ) -> Response<Body> {
        let head = req.method() == Method::HEAD;
        let host = req.headers().get(hyper::header::HOST).cloned();
        match self.try_handle(req, peer).await {
            Ok(resp) => resp,
            Err(e) => {
                match &e {
                    ProxyError::Storage(err) => {
                        tracing::warn!(error = %err, ?host, "storage error")
                    }
                    ProxyError::Upstream(why) | ProxyError::UpstreamRefused(why) => {
                        tracing::warn!(error = %why, ?host, "a rule's upstream failed")
                    }
                    _ => {}
                }
                let mut resp = serve::error_page(&e);
                if head {
                    *resp.body_mut() = full(Bytes::new());
                }
                resp
            }
        }
    }

    async fn try_handle<B: Forward>(
        &self,
        req: Request<B>,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Response<Body>, ProxyError> {
        let read = matches!(*req.method(), Method::GET | Method::HEAD);
        let host = request_host(&req)?;
        let Some((slug, target)) = self.parse_host(&host) else {
            if !read {
                return Err(ProxyError::MethodNotAllowed);
            }
            return self.own_page(&host, req.uri().path()).await;
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
        let host_name = host_only(&host).to_ascii_lowercase();
        let routed = route::Request {
            host: &host_name,
            path: &path,
            query: req.uri().query(),
        };
        let mut resp = match served.router.answer(&served.files, served.site, &routed) {
            // What an upstream answers is relayed as it is: header rules are the site's.
            Answer::Proxy { url, .. } => {
                let origin = Origin {
                    host: &host,
                    tls: protect::behind_tls(req.headers()),
                    visitor: peer,
                };
                return self.upstream.forward(req, &url, origin).await;
            }
            _ if !read => return Err(ProxyError::MethodNotAllowed),
            Answer::File {
                path, file, status, ..
            } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                serve::file(self, &req, Found { path, file, status }).await?
            }
            Answer::Redirect {
                status, location, ..
            } => serve::redirect(status, &location, req.method() == Method::HEAD),
            Answer::Status { status, .. } => {
                let e = if status == 410 {
                    ProxyError::Gone
                } else {
                    ProxyError::NotFound
                };
                let mut resp = serve::error_page(&e);
                if req.method() == Method::HEAD {
                    *resp.body_mut() = full(Bytes::new());
                }
                resp
            }
        };
        apply_headers(&served.router, &path, resp.headers_mut());
        if protected {
            resp.headers_mut()
                .insert(hyper::header::CACHE_CONTROL, protect::PRIVATE);
        }
        Ok(resp)
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
    /// (An unknown project costs no protection read: its route says it is unknown.)
    async fn gate<B>(
        &self,
        req: &Request<B>,
        slug: &str,
        target: &Target,
    ) -> Result<Gate, ProxyError> {
        if matches!(target, Target::Production) || self.production(slug).await?.is_none() {
            return Ok(Gate::Open);
        }
        let Some(p) = self.protection(slug).await? else {
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
                        *resp.body_mut() = full(Bytes::new());
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
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The proxy as a connection's service.
#[derive(Clone)]
pub struct ProxyService {
    pub proxy: Arc<Proxy>,
    /// The connection's peer address.
    pub peer: std::net::IpAddr,
}

impl cdeploy_conn::ConnService for ProxyService {
    type Body = Body;
    fn call(&self, req: Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> {
        let proxy = self.proxy.clone();
        let peer = self.peer;
        if req.method() == Method::POST && req.uri().path() == protect::UNLOCK_PATH {
            return Box::pin(async move { proxy.unlock(req, peer).await });
        }
        Box::pin(async move { proxy.handle_from(req, peer).await })
    }
}

/// Serves HTTP/1.1 and HTTP/2 on `listener` until `shutdown` is cancelled, then lets
/// in-flight requests finish (up to 10 s). Connections are capped and timed by `conns`.
pub async fn run(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    conns: Arc<cdeploy_conn::Conns>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    cdeploy_conn::serve(
        listener,
        conns,
        move |peer| ProxyService {
            proxy: proxy.clone(),
            peer: peer.ip(),
        },
        shutdown,
    )
    .await
}
