//! Storage keys. The same layout is used in a local directory and in an S3 bucket/prefix.

use crate::manifest::Encoding;

pub fn blob(hash: &str) -> String {
    format!("blobs/{hash}")
}

pub fn blob_variant(hash: &str, enc: Encoding) -> String {
    format!("blobs/{hash}.{}", enc.suffix())
}

pub fn source_map(deployment: &str) -> String {
    format!("deployments/{deployment}/source.json")
}

pub fn manifest(deployment: &str) -> String {
    format!("deployments/{deployment}/manifest.json")
}

/// A server app's bundle ([`crate::server::ServerBundle`]).
pub fn server_bundle(deployment: &str) -> String {
    format!("deployments/{deployment}/server.json")
}

pub fn log(deployment: &str) -> String {
    format!("deployments/{deployment}/log.jsonl")
}

pub fn route(slug: &str) -> String {
    format!("routes/{slug}.json")
}

/// A project's build cache entry (its installed dependencies as a zstd-compressed tar), for builders
/// without a cache directory of their own (ECS tasks). `entry` is a hex digest.
pub fn build_cache(slug: &str, entry: &str) -> String {
    format!("cache/{slug}/{entry}.tar.zst")
}

/// [`build_cache`] of one trust scope ([`cache_scope`]): `cache/<slug>/<scope>/<entry>.tar.zst`.
pub fn build_cache_scoped(slug: &str, scope: &str, entry: &str) -> String {
    format!("cache/{slug}/{scope}/{entry}.tar.zst")
}

/// The trust scope of a build's caches: `production`, `preview` (previews without a
/// branch, deployed by hand with a token), or `branch-<12 hex of the branch's SHA-256>`.
/// A build reads and writes only its own scope's caches, so a branch anyone may push to
/// can neither plant code for production nor read what production's builds left.
pub fn cache_scope(preview: bool, branch: Option<&str>) -> String {
    match (preview, branch) {
        (false, _) => "production".into(),
        (true, None) => "preview".into(),
        (true, Some(b)) => format!("branch-{}", &crate::sha256_hex(b.as_bytes())[..12]),
    }
}

/// Whether `scope` is what [`cache_scope`] makes.
pub fn is_cache_scope(scope: &str) -> bool {
    scope == "production"
        || scope == "preview"
        || scope.strip_prefix("branch-").is_some_and(|h| {
            h.len() == 12
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// A project's variables marked `runtime` for one target (`production`, `preview`),
/// sealed for the proxies' servers ([`crate::server::SealedEnv`]).
pub fn runtime_env(slug: &str, target: &str) -> String {
    format!("{RUNTIME_ENV_PREFIX}{slug}/{target}.json")
}

/// Where every [`runtime_env`] document is.
pub const RUNTIME_ENV_PREFIX: &str = "runtime-env/";

/// A branch alias of a project: `{"deployment": id}`.
pub fn alias(slug: &str, label: &str) -> String {
    format!("aliases/{slug}/{label}.json")
}

/// Where preview protection records live.
pub const PROTECTION_PREFIX: &str = "protection/";

/// A project's preview protection ([`crate::manifest::StoredProtection`]).
pub fn protection(slug: &str) -> String {
    format!("{PROTECTION_PREFIX}{slug}.json")
}

/// Where all of a project's branch aliases live.
pub fn alias_prefix(slug: &str) -> String {
    format!("aliases/{slug}/")
}

/// Where all of a project's build cache entries live.
pub fn build_cache_prefix(slug: &str) -> String {
    format!("cache/{slug}/")
}

/// A valid build cache entry name: 1 to 64 lowercase hex digits.
pub fn is_cache_entry(entry: &str) -> bool {
    !entry.is_empty()
        && entry.len() <= 64
        && entry
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What a custom domain serves (`crate::domains::DomainRoute`).
pub fn domain(name: &str) -> String {
    format!("domains/{name}.json")
}

/// A certificate the proxies serve (`crate::domains::StoredCert`); `name` may be
/// `*.<domain>`, kept as `certs/_wildcard.<domain>.json` (storage keys have no `*`, and
/// no domain a project adds has a `_`).
pub fn cert(name: &str) -> String {
    match name.strip_prefix("*.") {
        Some(parent) => format!("certs/_wildcard.{parent}.json"),
        None => format!("certs/{name}.json"),
    }
}

/// The key authorization a CA's HTTP-01 challenge for `token` expects.
pub fn acme_http01(token: &str) -> String {
    format!("acme/http-01/{token}")
}

/// The certificate a CA's TLS-ALPN-01 challenge for `name` expects (RFC 8737).
pub fn acme_tls_alpn(name: &str) -> String {
    format!("acme/tls-alpn-01/{name}.json")
}

/// The ACME account (its key sealed).
pub const ACME_ACCOUNT: &str = "acme/account.json";
