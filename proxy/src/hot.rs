//! A small memo per serving thread in front of the shared caches, for what nearly every
//! request asks: the site a host names (and what a custom domain serves), and small
//! file contents. A hit costs a hash
//! lookup in a map no other thread touches, where the shared caches (moka) cost a
//! concurrent map, a read log and a clock read each: on a small page they were as much
//! of the proxy's time as HTTP itself (bench/proxy.sh).
//!
//! * Sites are kept [`SITE_TTL`] at most, and forgotten at once when the proxy forgets
//!   anything (every `invalidate_*` bumps its generation), so a promote on this server
//!   is seen at once and one on another within `route_ttl` plus [`SITE_TTL`].
//! * Contents are addressed by their hash and never change: they are kept until the
//!   memo is full, then it starts over.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use cdeploy_core::domains::DomainRoute;

use crate::site::ServedSite;

/// How long a thread trusts a site it looked up.
pub(crate) const SITE_TTL: Duration = Duration::from_millis(100);
/// Sites one thread keeps (past it, the memo starts over).
const MAX_SITES: usize = 1024;
/// Bytes of contents one thread keeps (each entry weighed with its key and keeping, as
/// the shared cache weighs them), entries it keeps, and the largest file it keeps.
const MAX_BLOB_BYTES: usize = 8 * 1024 * 1024;
const MAX_BLOBS: usize = 4096;
const MAX_BLOB: usize = 1024 * 1024;
/// What an entry costs besides its key and contents.
const ENTRY_COST: usize = 64;

/// The memo's maps hash with foldhash (seeded per process), not SipHash: a lookup of a
/// 70-byte content key is a large part of a hit. Only what storage holds is inserted,
/// so a visitor's choice of keys cannot crowd the maps.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// One thread's memo of one proxy (tests run several proxies in one process).
#[derive(Default)]
struct Memo {
    /// Site key → the site, the proxy's generation then, when it was looked up (on the
    /// coarse clock, `cdeploy_conn::coarse_ms`: its 1 to 4 ms tick is precise enough).
    sites: HashMap<String, (LocalSite, u64, u64)>,
    /// Custom domain → what it serves (this thread's own copy), as `sites`.
    domains: HashMap<String, (Arc<DomainRoute>, u64, u64)>,
    /// Storage key → contents.
    blobs: HashMap<String, Bytes>,
    blob_bytes: usize,
}

thread_local! {
    /// Per proxy (its [`crate::Proxy`] id).
    static MEMO: RefCell<HashMap<u64, Memo>> = RefCell::new(HashMap::default());
}

/// A thread's own handle on a shared site: cloned for every request, its count is
/// written by this thread only (the site's own count would be written by every core).
pub(crate) type LocalSite = Arc<Arc<ServedSite>>;

/// Whether an entry made at `at` (coarse ms) at `at_generation` may still be used.
fn fresh(at_generation: u64, at: u64, generation: u64) -> bool {
    at_generation == generation
        && cdeploy_conn::coarse_ms().saturating_sub(at) < SITE_TTL.as_millis() as u64
}

/// What custom domain `name` serves, as this thread looked it up for proxy `proxy` at
/// `generation`, if it is still fresh (only domains that exist are kept).
pub(crate) fn domain(proxy: u64, name: &str, generation: u64) -> Option<Arc<DomainRoute>> {
    MEMO.with_borrow(|m| {
        let (route, at_generation, at) = m.get(&proxy)?.domains.get(name)?;
        fresh(*at_generation, *at, generation).then(|| route.clone())
    })
}

/// Keeps what custom domain `name` serves, looked up at `generation`, as this thread's
/// own copy (whose count only this thread writes), and gives it.
pub(crate) fn keep_domain(
    proxy: u64,
    name: &str,
    generation: u64,
    route: &DomainRoute,
) -> Arc<DomainRoute> {
    let local = Arc::new(route.clone());
    MEMO.with_borrow_mut(|m| {
        let m = m.entry(proxy).or_default();
        if m.domains.len() >= MAX_SITES {
            m.domains.clear();
        }
        let kept = (local.clone(), generation, cdeploy_conn::coarse_ms());
        m.domains.insert(name.to_string(), kept);
    });
    local
}

/// The site under `key` this thread looked up for proxy `proxy` at `generation`, if it
/// is still fresh.
pub(crate) fn site(proxy: u64, key: &str, generation: u64) -> Option<LocalSite> {
    MEMO.with_borrow(|m| {
        let (site, at_generation, at) = m.get(&proxy)?.sites.get(key)?;
        fresh(*at_generation, *at, generation).then(|| site.clone())
    })
}

/// Keeps `site`, looked up at `generation`, and gives this thread's handle on it.
pub(crate) fn keep_site(
    proxy: u64,
    key: &str,
    generation: u64,
    site: Arc<ServedSite>,
) -> LocalSite {
    let local = Arc::new(site);
    MEMO.with_borrow_mut(|m| {
        let m = m.entry(proxy).or_default();
        if m.sites.len() >= MAX_SITES {
            m.sites.clear();
        }
        m.sites.insert(
            key.to_string(),
            (local.clone(), generation, cdeploy_conn::coarse_ms()),
        );
    });
    local
}

/// Contents this thread keeps for proxy `proxy` under storage key `key`.
pub(crate) fn blob(proxy: u64, key: &str) -> Option<Bytes> {
    MEMO.with_borrow(|m| m.get(&proxy)?.blobs.get(key).cloned())
}

/// Keeps `data` under `key`: the thread's own copy, which later responses carry.
pub(crate) fn keep_blob(proxy: u64, key: &str, data: &Bytes) -> Option<Bytes> {
    if data.len() > MAX_BLOB {
        return None;
    }
    let weight = key.len() + data.len() + ENTRY_COST;
    MEMO.with_borrow_mut(|m| {
        let m = m.entry(proxy).or_default();
        if m.blob_bytes + weight > MAX_BLOB_BYTES || m.blobs.len() >= MAX_BLOBS {
            m.blobs.clear();
            m.blob_bytes = 0;
            // What is sent from files was these copies.
            cdeploy_conn::forget_files();
        }
        // A copy of its own: the count of a shared buffer, cloned for every response,
        // would be written by every core.
        let own = Bytes::copy_from_slice(data);
        if m.blobs.insert(key.to_string(), own.clone()).is_none() {
            m.blob_bytes += weight;
        }
        Some(own)
    })
}

/// Forgets what this thread keeps for a proxy that is gone.
pub(crate) fn forget(proxy: u64) {
    let _ = MEMO.try_with(|m| m.borrow_mut().remove(&proxy));
    cdeploy_conn::forget_files();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proxy ids no real proxy of this test thread has.
    const P: u64 = u64::MAX - 7;

    #[test]
    fn contents_are_kept_within_their_bounds() {
        let small = Bytes::from_static(b"page");
        keep_blob(P, "blobs/a", &small);
        assert_eq!(blob(P, "blobs/a").as_deref(), Some(&b"page"[..]));
        // Another proxy's key is another entry.
        assert!(blob(P - 1, "blobs/a").is_none());
        // Too large to keep.
        let big = Bytes::from(vec![0u8; MAX_BLOB + 1]);
        keep_blob(P, "blobs/big", &big);
        assert!(blob(P, "blobs/big").is_none());
        // Full: it starts over, and never holds more than its bound.
        let chunk = Bytes::from(vec![1u8; MAX_BLOB]);
        for i in 0..(MAX_BLOB_BYTES / MAX_BLOB + 2) {
            keep_blob(P, &format!("blobs/{i}"), &chunk);
            MEMO.with_borrow(|m| assert!(m[&P].blob_bytes <= MAX_BLOB_BYTES));
        }
        assert!(blob(P, "blobs/a").is_none());
        // Many small entries (a "not worth compressing" mark is empty): bounded too.
        for i in 0..(2 * MAX_BLOBS) {
            keep_blob(P, &format!("blobs/mark-{i}"), &Bytes::new());
            MEMO.with_borrow(|m| assert!(m[&P].blobs.len() <= MAX_BLOBS));
        }
    }
}
