//! Serving files: types and caching headers, path rules, hosts, previews, conditional
//! requests, ranges and encodings (stored and made on demand).

use cdeploy_core::manifest::Encoding;

use super::*;

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

/// `Content-Length` as the proxy says it, before hyper: a HEAD says the GET's length, an
/// empty file says 0 (hyper's HTTP/2 would say nothing of it), a 304 says none, and a
/// small body in memory leaves it to hyper, with its exact size.
#[tokio::test]
async fn lengths_are_said_where_hyper_would_not() {
    use hyper::body::Body as _;
    async fn said(p: &Proxy, req: Request<()>) -> (StatusCode, Option<String>, Option<u64>) {
        let resp = p.handle(req).await;
        let length = resp.headers().get(hyper::header::CONTENT_LENGTH);
        let length = length.map(|v| v.to_str().unwrap().to_string());
        (resp.status(), length, resp.body().size_hint().exact())
    }
    let (_d, s, p) = setup().await;
    let files: &[(&str, &[u8])] = &[("/index.html", b"x"), ("/empty.txt", b"")];
    deploy(s.as_ref(), "lengths", ID2, files, SiteConfig::default()).await;
    publish::set_route(s.as_ref(), "lengths", ID2)
        .await
        .unwrap();
    let host = "lengths.localhost:8000";
    let head = |path: &str| {
        let mut req = get(host, path);
        *req.method_mut() = hyper::Method::HEAD;
        req
    };
    assert_eq!(
        said(&p, get(host, "/index.html")).await,
        (StatusCode::OK, None, Some(1))
    );
    assert_eq!(
        said(&p, head("/index.html")).await,
        (StatusCode::OK, Some("1".into()), Some(0))
    );
    assert_eq!(
        said(&p, get(host, "/empty.txt")).await,
        (StatusCode::OK, Some("0".into()), Some(0))
    );
    let (_, h, _) = call(&p, get(host, "/index.html")).await;
    let mut req = get(host, "/index.html");
    req.headers_mut()
        .insert(hyper::header::IF_NONE_MATCH, h["etag"].clone());
    assert_eq!(
        said(&p, req).await,
        (StatusCode::NOT_MODIFIED, None, Some(0))
    );
    // The proxy's own pages (here an unknown site's) say their GET's length too.
    let nosuch = "nosuch.localhost:8000";
    let (status, _, page) = call(&p, get(nosuch, "/")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let mut req = get(nosuch, "/");
    *req.method_mut() = hyper::Method::HEAD;
    let length = Some(page.len().to_string());
    assert_eq!(said(&p, req).await, (status, length, Some(0)));
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

    for (path, plain) in [("/page.html", &page), ("/assets/app-Dx1d9fQa.js", &bundle)] {
        served_compressed(&p, path, plain).await;
    }
    // A file that compression would not shrink by 10% is served as it is, with its own
    // ETag.
    let (st, h, b) = call(&p, big("/favicon.ico", "GET", "br, gzip")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(h.get("content-encoding").is_none(), "{h:?}");
    assert_eq!(&b[..], &noise[..]);
    assert!(!h["etag"].to_str().unwrap().contains('-'));
    assert!(!stored(&page), "serving compressed stores nothing");
}

/// A request to the `big` site with `Accept-Encoding: enc`.
fn big(path: &str, method: &str, enc: &str) -> Request<()> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "big.localhost:8000")
        .header("accept-encoding", enc)
        .body(())
        .unwrap()
}

/// `path` of the `big` site is served compressed (br or gzip, as asked) and decodes to
/// `plain`; its ETag revalidates, a range is of the identity, and `identity` gets it as
/// it is.
async fn served_compressed(p: &Proxy, path: &str, plain: &str) {
    let (st, h, b) = call(p, big(path, "GET", "gzip, deflate, br")).await;
    assert_eq!(
        (st, &h["content-encoding"]),
        (StatusCode::OK, &"br".parse().unwrap())
    );
    assert_eq!(h["vary"], "Accept-Encoding");
    assert_eq!(h["content-length"], b.len().to_string().as_str());
    assert!(b.len() < plain.len() / 2, "{path}: {} bytes", b.len());
    let mut decoded = Vec::new();
    std::io::Read::read_to_end(&mut brotli::Decompressor::new(&b[..], 4096), &mut decoded).unwrap();
    assert_eq!(decoded, plain.as_bytes(), "{path} decodes to the file");
    let etag = h["etag"].to_str().unwrap().to_string();
    assert!(etag.ends_with("-br\""), "{etag}");

    let (st, h, b) = call(p, big(path, "HEAD", "br")).await;
    assert_eq!((st, b.len()), (StatusCode::OK, 0));
    assert_eq!(h["etag"], etag.as_str());

    let (st, h, b) = call(p, big(path, "GET", "gzip")).await;
    assert_eq!(
        (st, &h["content-encoding"]),
        (StatusCode::OK, &"gzip".parse().unwrap())
    );
    let mut decoded = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&b[..]), &mut decoded).unwrap();
    assert_eq!(&decoded, plain);

    let mut req = big(path, "GET", "br");
    req.headers_mut()
        .insert("if-none-match", etag.parse().unwrap());
    assert_eq!(call(p, req).await.0, StatusCode::NOT_MODIFIED);

    let mut req = big(path, "GET", "br");
    req.headers_mut()
        .insert("range", "bytes=0-2".parse().unwrap());
    let (st, h, b) = call(p, req).await;
    assert_eq!(
        (st, &b[..]),
        (StatusCode::PARTIAL_CONTENT, &plain.as_bytes()[..3])
    );
    assert!(
        h.get("content-encoding").is_none(),
        "a range is of the identity"
    );

    let (_, h, b) = call(p, big(path, "GET", "identity")).await;
    assert!(h.get("content-encoding").is_none());
    assert_eq!(&b[..], plain.as_bytes());
}
