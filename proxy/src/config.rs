//! A proxy instance's settings.

use std::sync::Arc;
use std::time::Duration;

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
    /// Networks a site's rules may proxy to besides public addresses (none by default:
    /// loopback, private and link-local addresses are refused).
    pub proxy_allow: crate::upstream::ProxyAllow,
    /// The port of this proxy's TLS listener. A redirect to HTTPS for a request whose
    /// `Host` names a port (the visitor reached a non-standard port, not a load balancer
    /// on 80) goes to this port, where a `Host` without one goes to 443.
    pub tls_port: Option<u16>,
    /// Where server apps' servers run; `None`: a deployment with a server answers 502
    /// for every path no static file answers.
    pub runtimes: Option<cdeploy_runtime::Runtimes>,
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
            proxy_allow: Default::default(),
            tls_port: None,
            runtimes: None,
        }
    }
}
