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
/// Sites (and custom domains) one thread keeps (past it, one is forgotten for each kept).
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
    /// Site key → the site.
    sites: Looked<LocalSite>,
    /// Custom domain → what it serves (this thread's own copy).
    domains: Looked<Arc<DomainRoute>>,
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

/// What a thread looked up, by key: the value, the proxy's generation then, and when
/// (on the coarse clock, `cdeploy_conn::coarse_ms`: its 1 to 4 ms tick is precise
/// enough). Trusted for [`SITE_TTL`] while the generation holds.
type Looked<V> = HashMap<String, (V, u64, u64)>;

/// The value under `key` in one of the memo's [`Looked`] maps (`which`) of proxy
/// `proxy`, if it is still fresh at `generation`.
fn look<V: Clone>(
    proxy: u64,
    key: &str,
    generation: u64,
    which: fn(&Memo) -> &Looked<V>,
) -> Option<V> {
    MEMO.with_borrow(|m| {
        let (value, at_generation, at) = which(m.get(&proxy)?).get(key)?;
        let age = cdeploy_conn::coarse_ms().saturating_sub(*at);
        (*at_generation == generation && age < SITE_TTL.as_millis() as u64).then(|| value.clone())
    })
}

/// Keeps `value`, looked up at `generation`, under `key` in one of the memo's
/// [`Looked`] maps (past [`MAX_SITES`], another entry is forgotten: the first the map
/// holds, which its seeded hash makes an arbitrary one), and gives it back.
fn keep<V: Clone>(
    proxy: u64,
    key: &str,
    generation: u64,
    value: V,
    which: fn(&mut Memo) -> &mut Looked<V>,
) -> V {
    MEMO.with_borrow_mut(|m| {
        let map = which(m.entry(proxy).or_default());
        if map.len() >= MAX_SITES && !map.contains_key(key) {
            if let Some(other) = map.keys().next().cloned() {
                map.remove(&other);
            }
        }
        let kept = (value.clone(), generation, cdeploy_conn::coarse_ms());
        map.insert(key.to_string(), kept);
    });
    value
}

/// What custom domain `name` serves, as this thread looked it up for proxy `proxy` at
/// `generation`, if it is still fresh (only domains that exist are kept).
pub(crate) fn domain(proxy: u64, name: &str, generation: u64) -> Option<Arc<DomainRoute>> {
    look(proxy, name, generation, |m| &m.domains)
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
    keep(proxy, name, generation, local, |m| &mut m.domains)
}

/// The site under `key` this thread looked up for proxy `proxy` at `generation`, if it
/// is still fresh.
pub(crate) fn site(proxy: u64, key: &str, generation: u64) -> Option<LocalSite> {
    look(proxy, key, generation, |m| &m.sites)
}

/// Keeps `site`, looked up at `generation`, and gives this thread's handle on it.
pub(crate) fn keep_site(
    proxy: u64,
    key: &str,
    generation: u64,
    site: Arc<ServedSite>,
) -> LocalSite {
    keep(proxy, key, generation, Arc::new(site), |m| &mut m.sites)
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
    fn past_the_bound_one_is_forgotten_for_each_kept() {
        let route = |i: usize| DomainRoute {
            slug: format!("site-{i}"),
            branch: None,
            redirect: None,
            https_redirect: false,
            hsts: None,
        };
        let name = |i: usize| format!("www.site-{i}.test");
        for i in 0..MAX_SITES + 10 {
            keep_domain(P, &name(i), 1, &route(i));
        }
        MEMO.with_borrow(|m| assert_eq!(m[&P].domains.len(), MAX_SITES));
        // All but ten are still there (the memo did not start over), the newest among them.
        let kept = (0..MAX_SITES + 10)
            .filter(|&i| domain(P, &name(i), 1).is_some())
            .count();
        assert_eq!(kept, MAX_SITES);
        let newest = domain(P, &name(MAX_SITES + 9), 1).expect("the newest is kept");
        assert_eq!(newest.slug, format!("site-{}", MAX_SITES + 9));
        // Keeping one it holds again forgets nothing.
        keep_domain(P, &name(MAX_SITES + 9), 1, &route(0));
        MEMO.with_borrow(|m| assert_eq!(m[&P].domains.len(), MAX_SITES));
    }

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
