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

use crate::body::{full, Body};
use crate::host::{host_only, request_host, Target};
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
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body> {
        match self.try_handle(&req).await {
            Ok(resp) => resp,
            Err(e) => {
                if let ProxyError::Storage(err) = &e {
                    tracing::warn!(error = %err, host = ?req.headers().get(hyper::header::HOST), "storage error");
                }
                let mut resp = serve::error_page(&e);
                if req.method() == Method::HEAD {
                    *resp.body_mut() = full(Bytes::new());
                }
                resp
            }
        }
    }

    async fn try_handle<B>(&self, req: &Request<B>) -> Result<Response<Body>, ProxyError> {
        let method = req.method();
        if method != Method::GET && method != Method::HEAD {
            return Err(ProxyError::MethodNotAllowed);
        }
        let host = request_host(req)?;
        let Some((slug, target)) = self.parse_host(&host) else {
            return self.own_page(&host, req.uri().path()).await;
        };
        let protected = match self.gate(req, &slug, &target).await? {
            Gate::Open => false,
            Gate::Protected => true,
            Gate::Answered(resp) => return Ok(resp),
        };
        let path = resolve::decode_path(req.uri().path())?;
        let served = self
            .site_of(&slug, target)
            .await?
            .ok_or(ProxyError::UnknownHost)?;
        let Some(found) = resolve::resolve(&served.files, served.site, &path) else {
            return Err(ProxyError::NotFound);
        };
        let mut resp = serve::file(self, req, found).await?;
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
        if req.method() == Method::POST && req.uri().path() == protect::UNLOCK_PATH {
            let peer = self.peer;
            return Box::pin(async move { proxy.unlock(req, peer).await });
        }
        Box::pin(async move { proxy.handle(req).await })
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
