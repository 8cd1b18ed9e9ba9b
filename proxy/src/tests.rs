use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use cdeploy_core::config::SiteConfig;
use cdeploy_core::manifest::Encoding;
use cdeploy_storage::publish::{self, OutputFiles};
use cdeploy_storage::{LocalStorage, Storage};
use http_body_util::BodyExt;

use super::*;

const ID: &str = "aaaaaaaaaaaaaaaa";
const ID2: &str = "bbbbbbbbbbbbbbbb";

async fn deploy(s: &dyn Storage, slug: &str, id: &str, files: &[(&str, &[u8])], site: SiteConfig) {
    let mut out = OutputFiles::new();
    for (path, data) in files {
        let hash = cdeploy_core::sha256_hex(data);
        s.put(&layout::blob(&hash), Bytes::copy_from_slice(data))
            .await
            .unwrap();
        out.insert(path.to_string(), (hash, data.len() as u64));
    }
    publish::write_manifest(s, slug, id, &out, &site)
        .await
        .unwrap();
}

async fn setup() -> (tempfile::TempDir, Arc<TestStorage>, Arc<Proxy>) {
    let dir = tempfile::tempdir().unwrap();
    let storage = test_storage(&dir);
    let js = "export const x = 1;\n".repeat(200);
    deploy(
        storage.as_ref(),
        "app",
        ID,
        &[
            ("/index.html", b"<html>app v1</html>"),
            ("/about.html", b"about"),
            ("/docs/index.html", b"docs"),
            ("/assets/index-DiwrgTda.js", js.as_bytes()),
            ("/assets/style.css", b"body{}"),
        ],
        SiteConfig::default(),
    )
    .await;
    publish::set_route(storage.as_ref(), "app", ID)
        .await
        .unwrap();
    let proxy = Proxy::new(storage.clone(), ProxyConfig::new("localhost:8000"));
    (dir, storage, proxy)
}

fn get(host: &str, path: &str) -> Request<()> {
    Request::builder()
        .uri(path)
        .header("host", host)
        .body(())
        .unwrap()
}

async fn call(p: &Proxy, req: Request<()>) -> (StatusCode, hyper::HeaderMap, Bytes) {
    let resp = p.handle(req).await;
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn serves_files_with_types_and_caching() {
    let (_d, _s, p) = setup().await;
    let (st, h, body) = call(&p, get("app.localhost:8000", "/")).await;
    assert_eq!(st, 200);
    assert_eq!(body, "<html>app v1</html>");
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    let (st, h, _) = call(&p, get("app.localhost:8000", "/assets/index-DiwrgTda.js")).await;
    assert_eq!(st, 200);
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    let (_, h, _) = call(&p, get("app.localhost:8000", "/assets/style.css")).await;
    assert_eq!(h["content-type"], "text/css; charset=utf-8");
}

#[tokio::test]
async fn path_rules() {
    let (_d, _s, p) = setup().await;
    let body = |r: (StatusCode, hyper::HeaderMap, Bytes)| (r.0, r.2);
    assert_eq!(
        body(call(&p, get("app.localhost:8000", "/about")).await),
        (StatusCode::OK, Bytes::from("about"))
    );
    assert_eq!(
        body(call(&p, get("app.localhost:8000", "/docs")).await),
        (StatusCode::OK, Bytes::from("docs"))
    );
    assert_eq!(
        body(call(&p, get("app.localhost:8000", "/docs/")).await),
        (StatusCode::OK, Bytes::from("docs"))
    );
    // SPA fallback for page-like paths, 404 for assets.
    let (st, _, b) = call(&p, get("app.localhost:8000", "/users/42/settings")).await;
    assert_eq!(
        (st, b),
        (StatusCode::OK, Bytes::from("<html>app v1</html>"))
    );
    let (st, _, _) = call(&p, get("app.localhost:8000", "/assets/missing.js")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn custom_404_turns_spa_off() {
    let (_d, s, p) = setup().await;
    deploy(
        s.as_ref(),
        "blog",
        ID2,
        &[("/index.html", b"home"), ("/404.html", b"custom 404")],
        SiteConfig::default(),
    )
    .await;
    publish::set_route(s.as_ref(), "blog", ID2).await.unwrap();
    let (st, _, b) = call(&p, get("blog.localhost:8000", "/nope")).await;
    assert_eq!((st, b), (StatusCode::NOT_FOUND, Bytes::from("custom 404")));
}

#[tokio::test]
async fn hostile_requests_get_4xx() {
    let (_d, _s, p) = setup().await;
    for path in [
        "/../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/a%00b",
        "/%2E%2E%5C",
    ] {
        let (st, _, _) = call(&p, get("app.localhost:8000", path)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path}");
    }
    for host in [
        "nope.localhost:8000",
        "localhost:8000",
        "a.b.localhost:8000",
        "APP--x.localhost:8000",
        "app.other:8000",
        "",
    ] {
        let (st, _, _) = call(&p, get(host, "/")).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{host}");
    }
    let req = Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "app.localhost:8000")
        .body(())
        .unwrap();
    let (st, h, _) = call(&p, req).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(h["allow"], "GET, HEAD");
}

#[tokio::test]
async fn previews_and_route_changes() {
    let (_d, s, p) = setup().await;
    deploy(
        s.as_ref(),
        "app",
        ID2,
        &[("/index.html", b"app v2")],
        SiteConfig::default(),
    )
    .await;
    let (_, _, b) = call(&p, get(&format!("app--{ID2}.localhost:8000"), "/")).await;
    assert_eq!(b, "app v2");
    // A preview of another project's deployment is not served under this slug.
    let (st, _, _) = call(&p, get(&format!("other--{ID2}.localhost:8000"), "/")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    publish::set_route(s.as_ref(), "app", ID2).await.unwrap();
    p.invalidate_route("app").await;
    let (_, _, b) = call(&p, get("app.localhost:8000", "/")).await;
    assert_eq!(b, "app v2");
}

#[tokio::test]
async fn conditional_range_and_encoding() {
    let (_d, _s, p) = setup().await;
    let (_, h, _) = call(&p, get("app.localhost:8000", "/about.html")).await;
    let etag = h["etag"].to_str().unwrap().to_string();
    let req = Request::builder()
        .uri("/about.html")
        .header("host", "app.localhost:8000")
        .header("if-none-match", &etag)
        .body(())
        .unwrap();
    let (st, _, b) = call(&p, req).await;
    assert_eq!((st, b.len()), (StatusCode::NOT_MODIFIED, 0));

    let req = Request::builder()
        .uri("/about.html")
        .header("host", "app.localhost:8000")
        .header("range", "bytes=1-3")
        .body(())
        .unwrap();
    let (st, h, b) = call(&p, req).await;
    assert_eq!((st, b), (StatusCode::PARTIAL_CONTENT, Bytes::from("bou")));
    assert_eq!(h["content-range"], "bytes 1-3/5");
    let req = Request::builder()
        .uri("/about.html")
        .header("host", "app.localhost:8000")
        .header("range", "bytes=9-")
        .body(())
        .unwrap();
    assert_eq!(call(&p, req).await.0, StatusCode::RANGE_NOT_SATISFIABLE);

    let js = "/assets/index-DiwrgTda.js";
    let req = Request::builder()
        .uri(js)
        .header("host", "app.localhost:8000")
        .header("accept-encoding", "gzip, br")
        .body(())
        .unwrap();
    let (_, h, b) = call(&p, req).await;
    assert_eq!(h["content-encoding"], "br");
    assert_eq!(h["vary"], "Accept-Encoding");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut brotli::Decompressor::new(&b[..], 4096), &mut plain).unwrap();
    assert_eq!(plain, "export const x = 1;\n".repeat(200).as_bytes());
    let req = Request::builder()
        .uri(js)
        .header("host", "app.localhost:8000")
        .header("accept-encoding", "gzip, br;q=0")
        .body(())
        .unwrap();
    assert_eq!(call(&p, req).await.1["content-encoding"], "gzip");
    let (_, h, _) = call(&p, get("app.localhost:8000", js)).await;
    assert!(h.get("content-encoding").is_none());
}

/// Small pages are compressed when served (nothing stored), bundles from stored variants;
/// either way the bytes decode to the file, lengths agree, and revalidation and ranges
/// behave as for the identity.
#[tokio::test]
async fn small_files_are_compressed_on_demand_bundles_from_storage() {
    let (dir, storage, p) = setup().await;
    let page = "<p>a page of a big site</p>\n".repeat(100);
    let bundle = (0..6000)
        .map(|i| format!("export const v{i} = {i};\n"))
        .collect::<String>();
    // An icon (a compressible type) whose bytes are noise.
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            // xorshift64: bytes no compressor can shrink.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    deploy(
        storage.as_ref(),
        "big",
        ID2,
        &[
            ("/page.html", page.as_bytes()),
            ("/assets/app-Dx1d9fQa.js", bundle.as_bytes()),
            ("/favicon.ico", &noise),
        ],
        SiteConfig::default(),
    )
    .await;
    publish::set_route(storage.as_ref(), "big", ID2)
        .await
        .unwrap();
    let stored = |data: &str| {
        let hash = cdeploy_core::sha256_hex(data.as_bytes());
        let path = dir.path().join(layout::blob_variant(&hash, Encoding::Br));
        path.exists()
    };
    assert!(!stored(&page), "a page gets no stored variant");
    assert!(stored(&bundle), "a bundle's variant is made at activation");

    let with = |path: &str, method: &str, enc: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", "big.localhost:8000")
            .header("accept-encoding", enc)
            .body(())
            .unwrap()
    };
    for (path, plain) in [("/page.html", &page), ("/assets/app-Dx1d9fQa.js", &bundle)] {
        let (st, h, b) = call(&p, with(path, "GET", "gzip, deflate, br")).await;
        assert_eq!(
            (st, &h["content-encoding"]),
            (StatusCode::OK, &"br".parse().unwrap())
        );
        assert_eq!(h["vary"], "Accept-Encoding");
        assert_eq!(h["content-length"], b.len().to_string().as_str());
        assert!(b.len() < plain.len() / 2, "{path}: {} bytes", b.len());
        let mut decoded = Vec::new();
        std::io::Read::read_to_end(&mut brotli::Decompressor::new(&b[..], 4096), &mut decoded)
            .unwrap();
        assert_eq!(decoded, plain.as_bytes(), "{path} decodes to the file");
        let etag = h["etag"].to_str().unwrap().to_string();
        assert!(etag.ends_with("-br\""), "{etag}");

        let (st, h, b) = call(&p, with(path, "HEAD", "br")).await;
        assert_eq!((st, b.len()), (StatusCode::OK, 0));
        assert_eq!(h["etag"], etag.as_str());

        let (st, h, b) = call(&p, with(path, "GET", "gzip")).await;
        assert_eq!(
            (st, &h["content-encoding"]),
            (StatusCode::OK, &"gzip".parse().unwrap())
        );
        let mut decoded = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&b[..]), &mut decoded)
            .unwrap();
        assert_eq!(&decoded, plain);

        let mut req = with(path, "GET", "br");
        req.headers_mut()
            .insert("if-none-match", etag.parse().unwrap());
        assert_eq!(call(&p, req).await.0, StatusCode::NOT_MODIFIED);

        let mut req = with(path, "GET", "br");
        req.headers_mut()
            .insert("range", "bytes=0-2".parse().unwrap());
        let (st, h, b) = call(&p, req).await;
        assert_eq!(
            (st, &b[..]),
            (StatusCode::PARTIAL_CONTENT, &plain.as_bytes()[..3])
        );
        assert!(
            h.get("content-encoding").is_none(),
            "a range is of the identity"
        );

        let (_, h, b) = call(&p, with(path, "GET", "identity")).await;
        assert!(h.get("content-encoding").is_none());
        assert_eq!(&b[..], plain.as_bytes());
    }
    // A file that compression would not shrink by 10% is served as it is, with its own
    // ETag.
    let (st, h, b) = call(&p, with("/favicon.ico", "GET", "br, gzip")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(h.get("content-encoding").is_none(), "{h:?}");
    assert_eq!(&b[..], &noise[..]);
    assert!(!h["etag"].to_str().unwrap().contains('-'));
    assert!(!stored(&page), "serving compressed stores nothing");
}

#[tokio::test]
async fn storage_outage_serves_cache_then_502() {
    let (_d, s, p) = setup().await;
    let (st, _, _) = call(&p, get("app.localhost:8000", "/")).await;
    assert_eq!(st, 200);
    s.down.store(true, Ordering::SeqCst);
    p.invalidate_route("app").await;
    let (st, _, b) = call(&p, get("app.localhost:8000", "/")).await;
    assert_eq!(
        (st, b),
        (StatusCode::OK, Bytes::from("<html>app v1</html>")),
        "cached file still served"
    );
    let (st, _, _) = call(&p, get("app.localhost:8000", "/about.html")).await;
    assert_eq!(
        st,
        StatusCode::BAD_GATEWAY,
        "uncached file while storage is down"
    );
    s.down.store(false, Ordering::SeqCst);
    let (st, _, _) = call(&p, get("app.localhost:8000", "/about.html")).await;
    assert_eq!(st, StatusCode::OK, "recovers when storage returns");
}

/// Local storage that counts what it is asked to read, whole or streamed, and can be
/// switched off (to test the proxy when storage is down).
struct TestStorage {
    inner: LocalStorage,
    down: AtomicBool,
    /// GETs of anything (routes, manifests, blobs).
    gets: std::sync::atomic::AtomicUsize,
    whole_reads: std::sync::atomic::AtomicUsize,
    streamed: std::sync::Mutex<Vec<Option<(u64, u64)>>>,
}

#[async_trait]
impl Storage for TestStorage {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StorageError::Backend("down".into()));
        }
        self.gets.fetch_add(1, Ordering::SeqCst);
        if key.starts_with("blobs/") {
            self.whole_reads.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get(key).await
    }
    async fn get_stream(
        &self,
        key: &str,
        range: Option<cdeploy_storage::ByteRange>,
    ) -> Result<Option<cdeploy_storage::ByteStream>, StorageError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StorageError::Backend("down".into()));
        }
        self.streamed.lock().unwrap().push(range);
        self.inner.get_stream(key, range).await
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.inner.put(key, data).await
    }
    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        self.inner.exists(key).await
    }
    async fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.inner.size(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.inner.delete(key).await
    }
    fn describe(&self) -> String {
        "test".into()
    }
}

#[tokio::test]
async fn large_files_stream_ranges_and_heads_read_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = test_storage(&dir);
    let big: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    deploy(
        storage.as_ref(),
        "big",
        ID,
        &[("/big.bin", &big[..])],
        SiteConfig::default(),
    )
    .await;
    publish::set_route(storage.as_ref(), "big", ID)
        .await
        .unwrap();
    let p = Proxy::new(storage.clone(), ProxyConfig::new("localhost:8000"));

    let head = Request::builder()
        .method("HEAD")
        .uri("/big.bin")
        .header("host", "big.localhost:8000")
        .body(())
        .unwrap();
    let (st, h, body) = call(&p, head).await;
    assert_eq!(st, 200);
    assert_eq!(h["content-length"], big.len().to_string());
    assert!(body.is_empty());
    assert!(
        storage.streamed.lock().unwrap().is_empty(),
        "HEAD reads nothing"
    );

    let ranged = Request::builder()
        .uri("/big.bin")
        .header("host", "big.localhost:8000")
        .header("range", "bytes=5000000-5000003")
        .body(())
        .unwrap();
    let (st, h, body) = call(&p, ranged).await;
    assert_eq!(st, 206);
    assert_eq!(
        h["content-range"],
        format!("bytes 5000000-5000003/{}", big.len())
    );
    assert_eq!(&body[..], &big[5_000_000..5_000_004]);
    assert_eq!(
        storage.streamed.lock().unwrap().last().copied(),
        Some(Some((5_000_000, 5_000_003))),
        "only the range is read"
    );

    let (st, _, body) = call(&p, get("big.localhost:8000", "/big.bin")).await;
    assert_eq!(st, 200);
    assert_eq!(body.len(), big.len());
    assert!(body[..] == big[..]);
    assert_eq!(
        storage.whole_reads.load(Ordering::SeqCst),
        0,
        "a large file is never read whole into memory"
    );
}

fn test_storage(dir: &tempfile::TempDir) -> Arc<TestStorage> {
    Arc::new(TestStorage {
        inner: LocalStorage::open(dir.path()).unwrap(),
        down: AtomicBool::new(false),
        gets: Default::default(),
        whole_reads: Default::default(),
        streamed: Default::default(),
    })
}

#[tokio::test]
async fn unknown_sites_and_previews_cost_one_read_each() {
    let dir = tempfile::tempdir().unwrap();
    let storage = test_storage(&dir);
    deploy(
        storage.as_ref(),
        "app",
        ID,
        &[("/index.html", b"hi")],
        SiteConfig::default(),
    )
    .await;
    publish::set_route(storage.as_ref(), "app", ID)
        .await
        .unwrap();
    let p = Proxy::new(storage.clone(), ProxyConfig::new("localhost:8000"));
    // 100 concurrent requests for one unknown site, as `<slug>` and `<slug>--<id>`.
    let mut tasks = Vec::new();
    for i in 0..100 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let label = if i % 2 == 0 {
                "ghost".to_string()
            } else {
                format!("ghost--{ID2}")
            };
            call(&p, get(&format!("{label}.localhost:8000"), "/"))
                .await
                .0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::NOT_FOUND);
    }
    assert_eq!(storage.gets.load(Ordering::SeqCst), 1, "one route read");
    // A missing deployment of a known project: one manifest miss, then cached.
    for _ in 0..20 {
        let (st, _, _) = call(&p, get(&format!("app--{ID2}.localhost:8000"), "/")).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
    assert_eq!(
        storage.gets.load(Ordering::SeqCst),
        4,
        "plus the app's route, its preview protection record and one manifest miss"
    );
}

#[test]
fn the_visitor_address_is_the_peer_or_what_a_trusted_proxy_appended() {
    let peer: std::net::IpAddr = "10.0.0.5".parse().unwrap();
    let with = |xff: &str| {
        let mut h = hyper::HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    };
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    // Not trusted: the header is the visitor's own words.
    assert_eq!(client_address(&with("1.2.3.4"), peer, 0), peer);
    // One balancer: its entry is the last; what the visitor sent before it is ignored.
    assert_eq!(
        client_address(&with("6.6.6.6, 203.0.113.7"), peer, 1),
        ip("203.0.113.7")
    );
    assert_eq!(
        client_address(&with("203.0.113.7:5555"), peer, 1),
        ip("203.0.113.7")
    );
    assert_eq!(
        client_address(&with("6.6.6.6, 198.51.100.1, 192.0.2.9"), peer, 2),
        ip("198.51.100.1")
    );
    // An IPv6 visitor is its /64, whatever interface id it picks.
    let a = client_address(&with("[2001:db8:1:2::1]:443"), peer, 1);
    let b = client_address(&with("2001:db8:1:2:ffff::9"), peer, 1);
    assert_eq!((a, b), (ip("2001:db8:1:2::"), ip("2001:db8:1:2::")));
    assert_ne!(a, client_address(&with("2001:db8:1:3::1"), peer, 1));
    // Too few entries, or nonsense: the peer.
    assert_eq!(client_address(&with("unknown"), peer, 1), peer);
    assert_eq!(client_address(&with("1.2.3.4"), peer, 2), peer);
    assert_eq!(client_address(&hyper::HeaderMap::new(), peer, 1), peer);
}
