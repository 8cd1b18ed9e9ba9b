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
//! * this file — host parsing, caches, and the proxy as a service of the connection
//!   layer (the `cdeploy-conn` crate).
#![forbid(unsafe_code)]

pub mod origin;
pub mod protect;
pub mod resolve;
pub mod serve;
pub mod site;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cdeploy_core::ids::{self, DeploymentId};
use cdeploy_core::layout;
use cdeploy_core::manifest::{Manifest, Protection, ProtectionUnreadable, Route};

use crate::site::ServedSite;
use cdeploy_core::storage::{get_json, ByteRange, DynStorage, StorageError};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use moka::future::Cache;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A response body: bytes from memory, or a stream from storage.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub(crate) fn full(data: Bytes) -> Body {
    Full::new(data)
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn streamed(stream: cdeploy_core::storage::ByteStream) -> Body {
    use futures_util::TryStreamExt;
    StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync()
}

/// Settings of a proxy instance.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Public domain sites live under (`localhost:8000` → `my-app.localhost:8000`).
    pub domain: String,
    /// How long a route pointer (or its absence) is trusted before storage is asked again.
    pub route_ttl: Duration,
    /// How long a loaded manifest is trusted: a deleted deployment stops being served by
    /// other replicas within this (the embedded proxy forgets it at once).
    pub manifest_ttl: Duration,
    /// How long "no such deployment" is remembered.
    pub negative_ttl: Duration,
    /// Memory for cached file contents.
    pub blob_cache_bytes: u64,
    /// Storage reads filling the memory cache at once; more wait their turn.
    pub max_storage_reads: usize,
    /// Proxies in front of this one that append the address they saw to
    /// `X-Forwarded-For` (a load balancer: 1; a CDN in front of it: 2). A visitor's
    /// address, which wrong preview passwords are counted by, is that many entries from
    /// the right; 0 (the default) takes the connection's peer and ignores the header.
    pub trusted_proxies: usize,
    /// Opens preview protection records the server sealed (`CDEPLOY_PROTECTION_KEY`);
    /// without it a sealed record keeps its previews closed.
    pub protection_keys: Option<Arc<cdeploy_core::seal::Keyring>>,
}

impl ProxyConfig {
    pub fn new(domain: impl Into<String>) -> Self {
        ProxyConfig {
            domain: domain.into(),
            route_ttl: Duration::from_secs(2),
            manifest_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            blob_cache_bytes: 256 * 1024 * 1024,
            max_storage_reads: 64,
            trusted_proxies: 0,
            protection_keys: None,
        }
    }
}

/// Largest file kept in the memory cache; larger ones are streamed from storage, and
/// only the requested range is read.
pub const MAX_CACHED_BLOB: u64 = 4 * 1024 * 1024;

/// Positive manifests live `manifest_ttl`, negative ones `negative_ttl`.
struct ManifestExpiry {
    positive: Duration,
    negative: Duration,
}

impl moka::Expiry<String, Option<Arc<ServedSite>>> for ManifestExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Option<Arc<ServedSite>>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(if value.is_some() {
            self.positive
        } else {
            self.negative
        })
    }
}

/// What a host names of a project.
#[derive(Debug, Clone)]
enum Target {
    Production,
    Deployment(DeploymentId),
    /// A branch's newest preview, by the branch's label.
    Alias(String),
}

/// The proxy's state: storage plus caches. Cheap to share behind an `Arc`.
pub struct Proxy {
    storage: DynStorage,
    domain_host: String,
    /// Production deployment per slug (`None`: no such site; empty: previews only),
    /// for `route_ttl`.
    routes: Cache<String, Option<String>>,
    /// The deployment of each `<slug>/<label>` branch alias, for `route_ttl`.
    aliases: Cache<String, Option<String>>,
    /// Last route seen per slug, used when storage fails (serve stale rather than 502).
    last_good_routes: Mutex<HashMap<String, String>>,
    manifests: Cache<String, Option<Arc<ServedSite>>>,
    blobs: Cache<String, Bytes>,
    /// Sizes of precompressed variants (not in manifests), asked of storage once.
    variant_sizes: Cache<String, Option<u64>>,
    reads: tokio::sync::Semaphore,
    /// Compressions on demand running at once (half the cores): past them a page is
    /// served uncompressed rather than queued, so visitors asking for many uncached pages
    /// never take every core.
    compressions: tokio::sync::Semaphore,
    /// Each project's preview protection (`None`: previews are public), for `route_ttl`.
    protections: Cache<String, Option<OpenedProtection>>,
    /// Wrong preview passwords per project and visitor address in the last minute.
    password_failures: Cache<(String, std::net::IpAddr), Arc<std::sync::atomic::AtomicU32>>,
    /// Proxies in front that append to `X-Forwarded-For` ([`ProxyConfig::trusted_proxies`]).
    trusted_proxies: usize,
    /// [`ProxyConfig::protection_keys`].
    protection_keys: Option<Arc<cdeploy_core::seal::Keyring>>,
    /// Password checks (Argon2) running at once.
    password_checks: tokio::sync::Semaphore,
}

/// Wrong passwords a project's previews take from one address in a minute before the
/// form answers that address 429 (everyone else can still unlock).
pub const MAX_PASSWORD_FAILURES: u32 = 10;
/// Wrong passwords a project's previews take in a minute from all addresses together
/// before the form answers everyone 429: many addresses (an IPv6 block, a botnet) get
/// no more guesses than this.
pub const MAX_PROJECT_PASSWORD_FAILURES: u32 = 100;

/// What went wrong while answering; turned into a response by [`serve::error_page`].
#[derive(Debug)]
pub enum ProxyError {
    UnknownHost,
    BadRequest(&'static str),
    MethodNotAllowed,
    NotFound,
    Storage(StorageError),
    /// A preview protection record this proxy can't open (sealed, without its key).
    ProtectionUnreadable(Arc<ProtectionUnreadable>),
}

/// A project's protection record as this proxy could open it (or why it couldn't).
type OpenedProtection = Result<Arc<Protection>, Arc<ProtectionUnreadable>>;

impl From<StorageError> for ProxyError {
    fn from(e: StorageError) -> Self {
        ProxyError::Storage(e)
    }
}

impl From<Arc<StorageError>> for ProxyError {
    fn from(e: Arc<StorageError>) -> Self {
        // Shared by every request that waited on the same read.
        ProxyError::Storage(match Arc::try_unwrap(e) {
            Ok(e) => e,
            Err(shared) => StorageError::Backend(shared.to_string()),
        })
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
            aliases: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.route_ttl)
                .build(),
            manifests: Cache::builder()
                .max_capacity(10_000)
                .expire_after(ManifestExpiry {
                    positive: config.manifest_ttl,
                    negative: config.negative_ttl,
                })
                .build(),
            blobs: Cache::builder()
                // The key and the entry's own keeping count too: an empty "not worth
                // compressing" mark is not free.
                .weigher(|k: &String, v: &Bytes| {
                    u32::try_from(v.len() + k.len() + 64).unwrap_or(u32::MAX)
                })
                .max_capacity(config.blob_cache_bytes)
                .build(),
            variant_sizes: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.manifest_ttl)
                .build(),
            reads: tokio::sync::Semaphore::new(config.max_storage_reads.max(1)),
            compressions: tokio::sync::Semaphore::new(
                (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1),
            ),
            protections: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.route_ttl)
                .build(),
            password_failures: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            trusted_proxies: config.trusted_proxies,
            protection_keys: config.protection_keys,
            password_checks: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
        })
    }

    /// Forgets a cached route pointer (the embedded server calls this after promote/rollback
    /// so the change is visible at once; separate replicas rely on the TTL).
    pub async fn invalidate_route(&self, slug: &str) {
        self.routes.invalidate(slug).await;
    }

    /// Forgets a project's preview protection (it just changed).
    pub async fn invalidate_protection(&self, slug: &str) {
        self.protections.invalidate(slug).await;
    }

    /// Forgets a branch alias (it just moved).
    pub async fn invalidate_alias(&self, slug: &str, label: &str) {
        self.aliases.invalidate(&format!("{slug}/{label}")).await;
    }

    /// Forgets a deployment (deleted, or just activated after a miss was cached).
    pub async fn invalidate_deployment(&self, id: &str) {
        self.manifests.invalidate(id).await;
    }

    /// Answers one request. Never panics on input; errors become 4xx/5xx pages.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body> {
        match self.try_handle(&req).await {
            Ok(resp) => resp,
            Err(e) => {
                if let ProxyError::Storage(err) = &e {
                    tracing::warn!(error = %err, host = ?req.headers().get(hyper::header::HOST), "storage error");
                }
                let mut resp = serve::error_page(&e);
                if req.method() == hyper::Method::HEAD {
                    *resp.body_mut() = full(Bytes::new());
                }
                resp
            }
        }
    }

    async fn try_handle<B>(&self, req: &Request<B>) -> Result<Response<Body>, ProxyError> {
        let method = req.method();
        if method != hyper::Method::GET && method != hyper::Method::HEAD {
            return Err(ProxyError::MethodNotAllowed);
        }
        let host = request_host(req)?;
        let site = self.parse_host(&host);
        let Some((slug, target)) = site else {
            if host_only(&host) == self.domain_host {
                match req.uri().path() {
                    "/healthz" => return Ok(serve::plain(StatusCode::OK, "ok\n")),
                    // Ready: storage answers (a replica that cannot read it sends 503
                    // to its load balancer rather than 502s to visitors).
                    "/readyz" => {
                        return Ok(match self.storage.check().await {
                            Ok(()) => serve::plain(StatusCode::OK, "ready\n"),
                            Err(e) => {
                                tracing::warn!(error = %e, "not ready: storage");
                                serve::plain(
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "storage unavailable\n",
                                )
                            }
                        })
                    }
                    _ => {}
                }
            }
            return Err(ProxyError::UnknownHost);
        };
        // Previews of a protected project answer only who has the token or a cookie.
        // (An unknown project costs no protection read: its route says it is unknown.)
        let mut protected = false;
        if !matches!(target, Target::Production) && self.production(&slug).await?.is_some() {
            if let Some(p) = self.protection(&slug).await? {
                protected = true;
                match protect::check(&p, &slug, req.headers(), req.uri(), unix_now()) {
                    protect::Access::Allowed => {}
                    protect::Access::Redeem {
                        location,
                        set_cookie,
                    } => {
                        let secure = protect::behind_tls(req.headers());
                        let cookie = set_cookie
                            .then(|| protect::set_cookie(&p, &slug, unix_now(), secure))
                            .flatten();
                        return Ok(protect::redirect(cookie, &location));
                    }
                    protect::Access::Denied => {
                        let next = protect::without_bypass(req.uri());
                        let mut resp =
                            protect::challenge(&p, &next, None, StatusCode::UNAUTHORIZED);
                        if method == hyper::Method::HEAD {
                            *resp.body_mut() = full(Bytes::new());
                        }
                        return Ok(resp);
                    }
                }
            }
        }
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

    /// What a host in front of the configured domain names: `<slug>` (production),
    /// `<slug>--<id>` (one deployment), `<branch>--<slug>` (a branch's newest preview).
    /// A right-hand side that is a deployment id makes it the second (so a slug that
    /// looks like an id, 16 letters and digits, has no branch aliases).
    fn parse_host(&self, host: &str) -> Option<(String, Target)> {
        let host = host_only(host);
        let label = host.strip_suffix(&self.domain_host)?.strip_suffix('.')?;
        if label.contains('.') {
            return None;
        }
        let Some((left, right)) = label.split_once("--") else {
            ids::validate_slug(label).ok()?;
            return Some((label.to_string(), Target::Production));
        };
        if let Some(id) = DeploymentId::parse(right) {
            ids::validate_slug(left).ok()?;
            return Some((left.to_string(), Target::Deployment(id)));
        }
        let is_label = !left.is_empty()
            && !left.starts_with('-')
            && left
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        ids::validate_slug(right).ok()?;
        is_label.then(|| (right.to_string(), Target::Alias(left.to_string())))
    }

    /// The site `target` of `slug` names, if it is served. A deployment is served only
    /// while its project is: `rm` takes previews and aliases down too.
    async fn site_of(
        &self,
        slug: &str,
        target: Target,
    ) -> Result<Option<Arc<ServedSite>>, ProxyError> {
        let Some(production) = self.production(slug).await? else {
            return Ok(None);
        };
        let id = match target {
            Target::Production if production.is_empty() => return Ok(None),
            Target::Production => production,
            Target::Deployment(id) => id.to_string(),
            Target::Alias(label) => match self.alias(slug, &label).await? {
                Some(id) => id,
                None => return Ok(None),
            },
        };
        Ok(self.manifest(&id).await?.filter(|m| m.slug == slug))
    }

    /// A project's preview protection, if it has one.
    async fn protection(&self, slug: &str) -> Result<Option<Arc<Protection>>, ProxyError> {
        let entry = self
            .protections
            .try_get_with_by_ref(slug, async {
                let Some(stored) = get_json::<cdeploy_core::manifest::StoredProtection>(
                    self.storage.as_ref(),
                    &layout::protection(slug),
                )
                .await?
                else {
                    return Ok(None);
                };
                let opened = stored.open(slug, self.protection_keys.as_deref());
                if let Err(e) = &opened {
                    tracing::warn!(%slug, "{e}");
                }
                Ok::<_, StorageError>(Some(opened.map(Arc::new).map_err(Arc::new)))
            })
            .await?;
        // A record this proxy can't open is an error page, never "not protected": the
        // previews stay closed.
        entry.transpose().map_err(ProxyError::ProtectionUnreadable)
    }

    /// `POST /.cdeploy/unlock` on a preview host: the password form's answer.
    pub async fn unlock(&self, req: Request<Incoming>, peer: std::net::IpAddr) -> Response<Body> {
        match self.try_unlock(req, peer).await {
            Ok(resp) => resp,
            Err(e) => serve::error_page(&e),
        }
    }

    async fn try_unlock(
        &self,
        req: Request<Incoming>,
        peer: std::net::IpAddr,
    ) -> Result<Response<Body>, ProxyError> {
        let host = request_host(&req)?;
        let visitor = client_address(req.headers(), peer, self.trusted_proxies);
        let Some((slug, target)) = self.parse_host(&host) else {
            return Err(ProxyError::UnknownHost);
        };
        if matches!(target, Target::Production) {
            return Err(ProxyError::NotFound);
        }
        let Some(p) = self.protection(&slug).await? else {
            return Err(ProxyError::NotFound);
        };
        let secure = protect::behind_tls(req.headers());
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > protect::MAX_FORM_BYTES) {
            return Err(ProxyError::BadRequest("the form is too large"));
        }
        let body = http_body_util::Limited::new(req.into_body(), protect::MAX_FORM_BYTES)
            .collect()
            .await
            .map_err(|_| ProxyError::BadRequest("the form is too large or was cut off"))?
            .to_bytes();
        let (password, next) = protect::parse_form(&body);
        let counter = |key: (String, std::net::IpAddr)| {
            self.password_failures
                .get_with(key, async { Arc::new(Default::default()) })
        };
        let failures = counter((slug.clone(), visitor)).await;
        // All addresses together, under the unspecified address.
        let all = counter((slug.clone(), std::net::Ipv6Addr::UNSPECIFIED.into())).await;
        use std::sync::atomic::Ordering;
        // Counted before the (slow) check, so guesses sent at once cannot all slip under
        // the limit; a right password gives its count back.
        let mine = failures.fetch_add(1, Ordering::Relaxed);
        let everyone = all.fetch_add(1, Ordering::Relaxed);
        let give_back = || {
            failures.fetch_sub(1, Ordering::Relaxed);
            all.fetch_sub(1, Ordering::Relaxed);
        };
        if mine >= MAX_PASSWORD_FAILURES || everyone >= MAX_PROJECT_PASSWORD_FAILURES {
            return Ok(protect::challenge(
                &p,
                &next,
                Some("Too many wrong passwords: wait a minute and try again."),
                StatusCode::TOO_MANY_REQUESTS,
            ));
        }
        // Argon2 takes ~19 MiB and tens of milliseconds a check: a few at once, and the
        // rest are told to come back rather than queued (or held in memory).
        let Ok(_slot) = self.password_checks.try_acquire() else {
            give_back();
            let mut busy = protect::challenge(
                &p,
                &next,
                Some("Busy checking passwords: try again in a moment."),
                StatusCode::SERVICE_UNAVAILABLE,
            );
            busy.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from(1),
            );
            return Ok(busy);
        };
        let checked = p.clone();
        let ok =
            tokio::task::spawn_blocking(move || protect::password_matches(&checked, &password))
                .await
                .unwrap_or(false);
        if !ok {
            return Ok(protect::challenge(
                &p,
                &next,
                Some("Wrong password."),
                StatusCode::UNAUTHORIZED,
            ));
        }
        give_back();
        match protect::set_cookie(&p, &slug, unix_now(), secure) {
            Some(cookie) => Ok(protect::redirect(Some(cookie), &protect::safe_next(&next))),
            None => Err(ProxyError::NotFound),
        }
    }

    /// The deployment a branch alias points at.
    async fn alias(&self, slug: &str, label: &str) -> Result<Option<String>, ProxyError> {
        Ok(self
            .aliases
            .try_get_with(format!("{slug}/{label}"), async {
                let alias = get_json::<cdeploy_core::manifest::Alias>(
                    self.storage.as_ref(),
                    &layout::alias(slug, label),
                )
                .await?;
                Ok::<_, StorageError>(
                    alias
                        .map(|a| a.deployment)
                        .filter(|id| DeploymentId::parse(id).is_some()),
                )
            })
            .await?)
    }

    /// The slug's production deployment. Concurrent misses share one storage read, and
    /// an unknown slug is remembered for `route_ttl` like a known one.
    async fn production(&self, slug: &str) -> Result<Option<String>, ProxyError> {
        let fetched = self
            .routes
            .try_get_with_by_ref(slug, async {
                let route = get_json::<Route>(self.storage.as_ref(), &layout::route(slug)).await?;
                // Empty: a project with previews only.
                let id = route
                    .map(|r| r.production)
                    .filter(|id| id.is_empty() || DeploymentId::parse(id).is_some());
                let mut last = self.last_good_routes.lock().expect("not poisoned");
                match &id {
                    Some(id) => last.insert(slug.to_string(), id.clone()),
                    None => last.remove(slug),
                };
                Ok::<_, StorageError>(id)
            })
            .await;
        match fetched {
            Ok(id) => Ok(id),
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

    /// A deployment's manifest; a missing one is remembered for `negative_ttl`.
    async fn manifest(&self, id: &str) -> Result<Option<Arc<ServedSite>>, ProxyError> {
        Ok(self
            .manifests
            .try_get_with_by_ref(id, async {
                let m = get_json::<Manifest>(self.storage.as_ref(), &layout::manifest(id)).await?;
                Ok::<_, StorageError>(m.map(|m| Arc::new(ServedSite::new(m))))
            })
            .await?)
    }

    /// A small blob's bytes, from memory when possible (concurrent misses share one read).
    pub(crate) async fn small_blob(&self, key: &str) -> Result<Bytes, ProxyError> {
        Ok(self
            .blobs
            .try_get_with_by_ref(key, async {
                let _permit = self.reads.acquire().await.expect("never closed");
                self.storage
                    .get(key)
                    .await?
                    .ok_or_else(|| missing_blob(key))
            })
            .await?)
    }

    /// A large blob (or a range of it), streamed from storage.
    pub(crate) async fn blob_stream(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<Body, ProxyError> {
        let stream = {
            let _permit = self.reads.acquire().await.expect("never closed");
            self.storage.get_stream(key, range).await?
        };
        Ok(streamed(stream.ok_or_else(|| missing_blob(key))?))
    }

    /// A representation's size without reading it (variants are not in the manifest).
    /// A small file's variant made on demand (`None`: compressing does not pay, or no
    /// compression slot is free, or `cached_only` and it is not made yet: serve the
    /// identity). Kept in the blob cache under the variant's own key, so a page is
    /// compressed once while it is in memory, and concurrent misses share one compression.
    pub(crate) async fn compressed(
        &self,
        rep: &site::Representation,
        identity_key: &str,
        cached_only: bool,
    ) -> Result<Option<Bytes>, ProxyError> {
        let Some(enc) = rep.encoding else {
            return Ok(None);
        };
        if let Some(made) = self.blobs.get(&rep.key).await {
            // Empty stands for "not worth it": a compressed file is never empty.
            return Ok((!made.is_empty()).then_some(made));
        }
        if cached_only {
            return Ok(None);
        }
        let Ok(_slot) = self.compressions.try_acquire() else {
            return Ok(None);
        };
        let data = self.small_blob(identity_key).await?;
        let compressed = tokio::task::spawn_blocking(move || {
            cdeploy_core::publish::compress_on_demand(enc, &data)
        })
        .await
        .map_err(|e| {
            ProxyError::Storage(StorageError::Backend(format!(
                "compression task failed: {e}"
            )))
        })?;
        self.blobs
            .insert(rep.key.clone(), compressed.clone().unwrap_or_default())
            .await;
        Ok(compressed)
    }

    /// Whether a made variant is known not to pay (so the identity is what is served).
    pub(crate) async fn known_incompressible(&self, rep: &site::Representation) -> bool {
        rep.on_demand && self.blobs.get(&rep.key).await.is_some_and(|b| b.is_empty())
    }

    pub(crate) async fn blob_size(&self, key: &str) -> Result<Option<u64>, ProxyError> {
        if let Some(b) = self.blobs.get(key).await {
            return Ok(Some(b.len() as u64));
        }
        Ok(self
            .variant_sizes
            .try_get_with_by_ref(key, self.storage.size(key))
            .await?)
    }
}

fn missing_blob(key: &str) -> StorageError {
    StorageError::Corrupt {
        key: key.to_string(),
        message: "listed in a manifest but missing".into(),
    }
}

/// The request's host: one `Host` header (RFC 9112: a request with several is
/// answered 400), or the HTTP/2 `:authority`.
fn request_host<B>(req: &Request<B>) -> Result<String, ProxyError> {
    let mut hosts = req.headers().get_all(hyper::header::HOST).iter();
    let raw = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(ProxyError::BadRequest("more than one Host header")),
        (Some(h), None) => h
            .to_str()
            .map_err(|_| ProxyError::BadRequest("the Host header is not ASCII"))?
            .to_string(),
        (None, _) => req
            .uri()
            .authority()
            .ok_or(ProxyError::UnknownHost)?
            .as_str()
            .to_string(),
    };
    Ok(raw.trim().trim_end_matches('.').to_ascii_lowercase())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The entries of every `X-Forwarded-For` header, left to right, spaces trimmed,
/// unparsed: which ones to believe is the caller's to decide.
pub fn forwarded_for(headers: &hyper::HeaderMap) -> Vec<&str> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect()
}

/// An `X-Forwarded-For` entry's address: bare, or with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:5678`); canonical (an IPv4-mapped IPv6 address is its IPv4 address).
pub fn parse_forwarded(e: &str) -> Option<std::net::IpAddr> {
    e.parse::<std::net::IpAddr>()
        .ok()
        .or_else(|| e.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| e.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
        .map(|a| a.to_canonical())
}

/// The visitor's address, as wrong passwords are counted: the peer, or with `trusted`
/// proxies in front, the entry of `X-Forwarded-For` the outermost of them appended
/// (entries further left are whatever the visitor sent, and are never believed; an entry
/// may carry a port, `1.2.3.4:5678` or `[2001:db8::1]:5678`). An IPv6 address counts as
/// its /64, which one subscriber holds whole. Without a usable entry, the peer.
pub fn client_address(
    headers: &hyper::HeaderMap,
    peer: std::net::IpAddr,
    trusted: usize,
) -> std::net::IpAddr {
    let address = if trusted == 0 {
        peer
    } else {
        let entries = forwarded_for(headers);
        entries
            .len()
            .checked_sub(trusted)
            .and_then(|i| entries.get(i))
            .and_then(|e| parse_forwarded(e))
            .unwrap_or(peer)
    };
    match address.to_canonical() {
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0).into()
        }
        v4 => v4,
    }
}

fn host_only(host_port: &str) -> &str {
    // `[::1]:8000` keeps its brackets; `name:8000` loses the port.
    match host_port.rfind(':') {
        Some(i) if !host_port[i..].contains(']') => &host_port[..i],
        _ => host_port,
    }
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
    fn call(
        &self,
        req: Request<Incoming>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>> {
        let proxy = self.proxy.clone();
        if req.method() == hyper::Method::POST && req.uri().path() == protect::UNLOCK_PATH {
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

#[cfg(test)]
mod tests;
