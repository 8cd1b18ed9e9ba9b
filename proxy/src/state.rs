//! The proxy's state: storage, the caches in front of it and the limits on work at once,
//! built once from a [`ProxyConfig`]; and the hooks that make a cache forget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cdeploy_core::manifest::{Protection, ProtectionUnreadable};
use cdeploy_storage::DynStorage;
use moka::future::Cache;
use tokio::sync::Semaphore;

use crate::config::ProxyConfig;
use crate::host::host_only;
use crate::site::ServedSite;

/// A project's protection record as this proxy could open it (or why it couldn't).
pub(crate) type OpenedProtection = Result<Arc<Protection>, Arc<ProtectionUnreadable>>;

/// The proxy's state: storage plus caches. Cheap to share behind an `Arc`.
pub struct Proxy {
    /// This proxy among others in the process (its serving threads' memo, `hot`).
    pub(crate) id: u64,
    /// Bumped whenever the proxy forgets something: a thread's memo of a site taken
    /// before it is stale.
    pub(crate) generation: AtomicU64,
    pub(crate) storage: DynStorage,
    pub(crate) domain_host: String,
    /// Production deployment per slug (`None`: no such site; empty: previews only),
    /// for `route_ttl`.
    pub(crate) routes: Cache<String, Option<String>>,
    /// The deployment of each `<slug>/<label>` branch alias, for `route_ttl`.
    pub(crate) aliases: Cache<String, Option<String>>,
    /// Last route seen per slug, used when storage fails (serve stale rather than 502).
    pub(crate) last_good_routes: Mutex<HashMap<String, String>>,
    pub(crate) manifests: Cache<String, Option<Arc<ServedSite>>>,
    pub(crate) blobs: Cache<String, Bytes>,
    /// Sizes of precompressed variants (not in manifests), asked of storage once.
    pub(crate) variant_sizes: Cache<String, Option<u64>>,
    pub(crate) reads: Semaphore,
    /// Compressions on demand running at once (half the cores): past them a page is
    /// served uncompressed rather than queued, so visitors asking for many uncached pages
    /// never take every core.
    pub(crate) compressions: Semaphore,
    /// Each project's preview protection (`None`: previews are public), for `route_ttl`.
    pub(crate) protections: Cache<String, Option<OpenedProtection>>,
    /// Wrong preview passwords per project and visitor address in the last minute.
    pub(crate) password_failures: Cache<(String, IpAddr), Arc<AtomicU32>>,
    /// Proxies in front that append to `X-Forwarded-For` ([`ProxyConfig::trusted_proxies`]).
    pub(crate) trusted_proxies: usize,
    /// [`ProxyConfig::protection_keys`].
    pub(crate) protection_keys: Option<Arc<cdeploy_core::seal::Keyring>>,
    /// [`ProxyConfig::tls_port`].
    pub(crate) tls_port: Option<u16>,
    /// Password checks (Argon2) running at once.
    pub(crate) password_checks: Semaphore,
    /// What each custom domain serves (`None`: not one), for `route_ttl`.
    pub(crate) domains: Cache<String, Option<Arc<cdeploy_core::domains::DomainRoute>>>,
    /// TLS configurations by certificate name (`None`: no such certificate), for
    /// `route_ttl` (a renewed certificate is served within it).
    pub(crate) certs: Cache<String, Option<Arc<rustls::ServerConfig>>>,
    pub(crate) sessions: crate::tls::Sessions,
    /// Where rules that proxy send requests.
    pub(crate) upstream: crate::upstream::Upstream,
    /// Where server apps' requests go.
    pub(crate) runtime: Option<crate::runtime::RuntimeRelay>,
    /// The platform's domain as configured (with its port), for deployments' URLs.
    pub(crate) domain: String,
}

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

impl Proxy {
    pub fn new(storage: DynStorage, config: ProxyConfig) -> Arc<Self> {
        let domain_host = host_only(&config.domain.to_ascii_lowercase()).to_string();
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Arc::new(Proxy {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
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
            reads: Semaphore::new(config.max_storage_reads.max(1)),
            compressions: Semaphore::new(
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
            tls_port: config.tls_port,
            password_checks: Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
            domains: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.route_ttl)
                .build(),
            certs: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.route_ttl.max(std::time::Duration::from_secs(30)))
                .build(),
            sessions: crate::tls::Sessions::new(),
            upstream: crate::upstream::Upstream::new(config.proxy_allow),
            runtime: config.runtimes.map(crate::runtime::RuntimeRelay::new),
            domain: config.domain.to_ascii_lowercase(),
        })
    }

    /// Forgets a cached route pointer (the embedded server calls this after promote/rollback
    /// so the change is visible at once; separate replicas rely on the TTL).
    pub async fn invalidate_route(&self, slug: &str) {
        self.routes.invalidate(slug).await;
        self.forgot();
    }

    /// Forgets a project's preview protection (it just changed).
    pub async fn invalidate_protection(&self, slug: &str) {
        self.protections.invalidate(slug).await;
        self.forgot();
    }

    /// Forgets a branch alias (it just moved).
    pub async fn invalidate_alias(&self, slug: &str, label: &str) {
        self.aliases.invalidate(&format!("{slug}/{label}")).await;
        self.forgot();
    }

    /// Forgets a deployment (deleted, or just activated after a miss was cached).
    pub async fn invalidate_deployment(&self, id: &str) {
        self.manifests.invalidate(id).await;
        self.forgot();
    }

    /// Makes every thread's memo of a site stale.
    pub(crate) fn forgot(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        crate::hot::forget(self.id);
    }
}
