//! What the proxy reads from storage (once per miss, ranges only, nothing for HEAD) and
//! what it serves while storage is down.

use super::*;

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
