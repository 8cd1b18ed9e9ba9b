//! `cdeploy-proxy`: serves deployments by `Host`.
//!
//! `<slug>.<domain>` serves the slug's production deployment (`routes/<slug>.json`),
//! `<slug>--<id>.<domain>` serves one exact deployment. Everything it reads is immutable
//! except route pointers, so manifests and small blobs are cached without expiry and
//! routes for a couple of seconds.
//!
//! # Layout
//! * [`resolve`] — URL path decoding and the path → file rules (clean URLs, SPA, 404.html).
//! * [`serve`] — building responses: ETag/304, Range, precompressed variants, caching headers.
//! * [`site`] — a manifest prepared for serving (header values and keys computed once).
//! * [`origin`] — a read-only HTTP origin (a public bucket URL, the seed's `BASE_PATH`).
//! * this file — host parsing, caches, and the hyper server loop.

pub mod origin;
pub mod resolve;
pub mod serve;
pub mod site;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cdeploy_core::ids::{self, DeploymentId};
use cdeploy_core::layout;
use cdeploy_core::manifest::{Manifest, Route};

use crate::site::ServedSite;
use cdeploy_core::storage::{get_json, DynStorage, StorageError};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use moka::future::Cache;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub type Body = Full<Bytes>;

/// Settings of a proxy instance.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Public domain sites live under (`localhost:8000` → `my-app.localhost:8000`).
    pub domain: String,
    /// How long a route pointer is trusted before storage is asked again.
    pub route_ttl: Duration,
    /// Memory for cached file contents.
    pub blob_cache_bytes: u64,
}

impl ProxyConfig {
    pub fn new(domain: impl Into<String>) -> Self {
        ProxyConfig {
            domain: domain.into(),
            route_ttl: Duration::from_secs(2),
            blob_cache_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Largest file kept in the memory cache; larger ones are read from storage each time.
const MAX_CACHED_BLOB: usize = 4 * 1024 * 1024;

/// The proxy's state: storage plus caches. Cheap to share behind an `Arc`.
pub struct Proxy {
    storage: DynStorage,
    domain_host: String,
    routes: Cache<String, Option<String>>,
    /// Last route seen per slug, used when storage fails (serve stale rather than 502).
    last_good_routes: Mutex<HashMap<String, String>>,
    manifests: Cache<String, Arc<ServedSite>>,
    blobs: Cache<String, Bytes>,
}

/// What went wrong while answering; turned into a response by [`serve::error_page`].
#[derive(Debug)]
pub enum ProxyError {
    UnknownHost,
    BadRequest(&'static str),
    MethodNotAllowed,
    NotFound,
    Storage(StorageError),
}

impl From<StorageError> for ProxyError {
    fn from(e: StorageError) -> Self {
        ProxyError::Storage(e)
    }
}

impl Proxy {
    pub fn new(storage: DynStorage, config: ProxyConfig) -> Arc<Self> {
        let domain_host = host_only(&config.domain.to_ascii_lowercase()).to_string();
        Arc::new(Proxy {
            storage,
            domain_host,
            routes: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.route_ttl)
                .build(),
            last_good_routes: Mutex::new(HashMap::new()),
            manifests: Cache::builder().max_capacity(10_000).build(),
            blobs: Cache::builder()
                .weigher(|_k: &String, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
                .max_capacity(config.blob_cache_bytes)
                .build(),
        })
    }

    /// Forgets a cached route pointer (the embedded server calls this after promote/rollback
    /// so the change is visible at once; separate replicas rely on the TTL).
    pub async fn invalidate_route(&self, slug: &str) {
        self.routes.invalidate(slug).await;
    }

    /// Answers one request. Never panics on input; errors become 4xx/5xx pages.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body> {
        match self.try_handle(&req).await {
            Ok(resp) => resp,
            Err(e) => {
                if let ProxyError::Storage(err) = &e {
                    tracing::warn!(error = %err, host = ?req.headers().get(hyper::header::HOST), "storage error");
                }
                serve::error_page(&e)
            }
        }
    }

    async fn try_handle<B>(&self, req: &Request<B>) -> Result<Response<Body>, ProxyError> {
        let method = req.method();
        if method != hyper::Method::GET && method != hyper::Method::HEAD {
            return Err(ProxyError::MethodNotAllowed);
        }
        let host = request_host(req).ok_or(ProxyError::UnknownHost)?;
        let site = self.parse_host(&host);
        let Some((slug, preview)) = site else {
            if host_only(&host) == self.domain_host && req.uri().path() == "/healthz" {
                return Ok(serve::plain(StatusCode::OK, "ok\n"));
            }
            return Err(ProxyError::UnknownHost);
        };
        let path = resolve::decode_path(req.uri().path())?;
        let id = match preview {
            Some(id) => id.to_string(),
            None => self
                .production(&slug)
                .await?
                .ok_or(ProxyError::UnknownHost)?,
        };
        let served = self.manifest(&id).await?.ok_or(ProxyError::UnknownHost)?;
        if served.slug != slug {
            return Err(ProxyError::UnknownHost);
        }
        let Some(found) = resolve::resolve(&served.files, served.site, &path) else {
            return Err(ProxyError::NotFound);
        };
        serve::file(self, req, found).await
    }

    /// `<slug>` or `<slug>--<id>` in front of the configured domain.
    fn parse_host(&self, host: &str) -> Option<(String, Option<DeploymentId>)> {
        let host = host_only(host);
        let label = host.strip_suffix(&self.domain_host)?.strip_suffix('.')?;
        if label.contains('.') {
            return None;
        }
        match label.split_once("--") {
            Some((slug, id)) => {
                ids::validate_slug(slug).ok()?;
                Some((slug.to_string(), Some(DeploymentId::parse(id)?)))
            }
            None => {
                ids::validate_slug(label).ok()?;
                Some((label.to_string(), None))
            }
        }
    }

    async fn production(&self, slug: &str) -> Result<Option<String>, ProxyError> {
        if let Some(hit) = self.routes.get(slug).await {
            return Ok(hit);
        }
        match get_json::<Route>(self.storage.as_ref(), &layout::route(slug)).await {
            Ok(route) => {
                let id = route
                    .map(|r| r.production)
                    .filter(|id| DeploymentId::parse(id).is_some());
                {
                    let mut last = self.last_good_routes.lock().expect("not poisoned");
                    match &id {
                        Some(id) => last.insert(slug.to_string(), id.clone()),
                        None => last.remove(slug),
                    };
                }
                self.routes.insert(slug.to_string(), id.clone()).await;
                Ok(id)
            }
            Err(e) => {
                let stale = self
                    .last_good_routes
                    .lock()
                    .expect("not poisoned")
                    .get(slug)
                    .cloned();
                match stale {
                    Some(id) => Ok(Some(id)),
                    None => Err(e.into()),
                }
            }
        }
    }

    async fn manifest(&self, id: &str) -> Result<Option<Arc<ServedSite>>, ProxyError> {
        if let Some(m) = self.manifests.get(id).await {
            return Ok(Some(m));
        }
        let Some(m) = get_json::<Manifest>(self.storage.as_ref(), &layout::manifest(id)).await?
        else {
            return Ok(None);
        };
        let m = Arc::new(ServedSite::new(m));
        self.manifests.insert(id.to_string(), m.clone()).await;
        Ok(Some(m))
    }

    /// A blob's bytes, from memory when possible.
    pub(crate) async fn blob(&self, key: &str) -> Result<Bytes, ProxyError> {
        if let Some(b) = self.blobs.get(key).await {
            return Ok(b);
        }
        let data = self.storage.get(key).await?.ok_or_else(|| {
            ProxyError::Storage(StorageError::Corrupt {
                key: key.to_string(),
                message: "listed in a manifest but missing".into(),
            })
        })?;
        if data.len() <= MAX_CACHED_BLOB {
            self.blobs.insert(key.to_string(), data.clone()).await;
        }
        Ok(data)
    }
}

fn request_host<B>(req: &Request<B>) -> Option<String> {
    let raw = match req.headers().get(hyper::header::HOST) {
        Some(h) => h.to_str().ok()?.to_string(),
        None => req.uri().authority()?.as_str().to_string(),
    };
    Some(raw.trim().trim_end_matches('.').to_ascii_lowercase())
}

fn host_only(host_port: &str) -> &str {
    // `[::1]:8000` keeps its brackets; `name:8000` loses the port.
    match host_port.rfind(':') {
        Some(i) if !host_port[i..].contains(']') => &host_port[..i],
        _ => host_port,
    }
}

/// Serves HTTP/1.1 and HTTP/2 on `listener` until `shutdown` is cancelled, then lets
/// in-flight requests finish (up to 10 s).
pub async fn run(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(15))
        .max_buf_size(64 * 1024);
    builder.http2().max_concurrent_streams(256);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let proxy = proxy.clone();
            async move { Ok::<_, std::convert::Infallible>(proxy.handle(req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("closing connections still open after 10s"),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
