//! `cdeploy-proxy`: serves deployments by `Host`.
//!
//! `<slug>.<domain>` serves the slug's production deployment (`routes/<slug>.json`),
//! `<slug>--<id>.<domain>` serves one exact deployment. Everything it reads is immutable
//! except route pointers, so manifests and small blobs are cached without expiry and
//! routes for a couple of seconds. Connections (caps, timeouts, graceful shutdown) are
//! the `cdeploy-conn` crate's.
//!
//! # Layout
//! * `config` — [`ProxyConfig`]: the domain, cache lifetimes and sizes, trusted proxies,
//!   the protection keys.
//! * `state` — [`Proxy`]: storage, its caches and the limits on work at once; the
//!   invalidation hooks the embedded server calls.
//! * `handle` — answering a request ([`Proxy::handle`]): the bare domain's health
//!   pages, the gate in front of protected previews, the file; [`ProxyService`] and
//!   [`run`], the proxy on a `cdeploy_conn` listener.
//! * `domains` — custom domains: what a name serves, a CA's HTTP-01 answers, the
//!   redirects a domain asks for (its other name, HTTPS).
//! * `host` — which site a request names: its host read as `<slug>`, `<slug>--<id>` or
//!   `<branch>--<slug>`.
//! * `lookup` — route pointers (stale ones when storage fails), branch aliases,
//!   manifests and protection records, read through the caches.
//! * `blobs` — file contents: the memory cache, streams and ranges from storage,
//!   variants compressed on demand.
//! * [`upstream`] — rules that proxy: where they may go, the headers passed on, the
//!   answer streamed back.
//! * `runtime` — server apps: requests no file answers sent to the deployment's server
//!   (started on its first request by `cdeploy_runtime`), the answer relayed.
//! * `tls` — HTTPS: [`Tls`], the handshake that picks a certificate by SNI from
//!   storage, with HTTP/2 by ALPN and shared session resumption.
//! * `unlock` — the password form's answer ([`Proxy::unlock`]), with limits per visitor
//!   and per project.
//! * `visitor` — the visitor's address behind trusted proxies (`X-Forwarded-For`).
//! * `error` — [`ProxyError`], what went wrong while answering.
//! * `body` — [`Body`]: bytes from memory, or a stream from storage.
//! * [`resolve`] — URL path decoding (the path → answer rules are `cdeploy_core::rules::route`'s).
//! * [`serve`] — building responses: ETag/304, Range, precompressed variants, caching
//!   headers, the error pages.
//! * [`site`] — a manifest prepared for serving (header values and keys computed once).
//! * [`protect`] — preview protection: bypass tokens, cookies, the password form.
//! * `tests` — the proxy answering requests over a real local storage.
#![forbid(unsafe_code)]

mod blobs;
mod body;
mod config;
mod domains;
mod error;
mod handle;
mod host;
mod hot;
mod lookup;
pub mod protect;
pub mod resolve;
mod runtime;
pub mod serve;
pub mod site;
mod state;
mod tls;
mod unlock;
pub mod upstream;
mod visitor;

pub use blobs::MAX_CACHED_BLOB;
pub use body::Body;
pub use config::ProxyConfig;
pub use domains::ACME_CHALLENGE_PREFIX;
pub use error::ProxyError;
pub use handle::{run, run_tls, Conn, ProxyService};
pub use runtime::StoredEnv;
pub use state::Proxy;
pub use tls::{Tls, ACME_TLS_ALPN};
pub use unlock::{MAX_PASSWORD_FAILURES, MAX_PROJECT_PASSWORD_FAILURES};
pub use visitor::{client_address, forwarded_for, parse_forwarded};

#[cfg(test)]
mod tests;
