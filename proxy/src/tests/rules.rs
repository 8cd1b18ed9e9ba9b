//! `_redirects` and `_headers` as the proxy applies them: a conformance table
//! transcribed from Netlify's and Cloudflare Pages' documented examples, and rules that
//! proxy to an upstream the operator allowed (or did not).

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;

use super::*;
use crate::upstream::ProxyAllow;

/// Netlify's documentation examples ("Redirects and rewrites", "Redirect options",
/// "Rewrites and proxies") and Cloudflare Pages' ("Redirects"), as one `_redirects`.
const REDIRECTS: &str = "\
# Netlify: redirects from what the browser requests to what we serve
/home              /
/blog/my-post.php  /blog/my-post
/news              /blog
/cuties            https://www.petsofnetlify.com
/my-redirect       /                 302
/pass-through      /index.html       200
/ecommerce         /store-closed     404
/gone              /store-closed     410
/news/:year/:month/:date/:slug  /blog/:year/:month/:date/:slug
/posts/*           /blog/:splat
/store  id=:id     /blog/:id  301
/articles id=:id tag=:tag /posts/:tag/:id 301
/app/*             /app/index.html   200
/about             /elsewhere        301
/about-forced      /elsewhere        301
/shadowed.html     /elsewhere        301!
# Cloudflare Pages
/home301 / 301
/home302 / 302
/querystrings /?query=string 301
/twitch https://twitch.tv
/trailing /trailing/ 301
/blog-cf/* https://blog.my.domain/:splat
/products/:code/:name /products?code=:code&name=:name
/page/ /page2/#fragment 301
";

const HEADERS: &str = "\
# Netlify
/*
  X-Frame-Options: DENY
  X-XSS-Protection: 1; mode=block
/templates/index.html
  X-Template: yes
# Cloudflare Pages
/secure/page
  X-Frame-Options: SAMEORIGIN
  Referrer-Policy: no-referrer
/static/*
  Access-Control-Allow-Origin: *
  X-Robots-Tag: nosnippet
  ! X-Frame-Options
";

async fn site_with_rules(
    redirects: &str,
    headers: &str,
    config: ProxyConfig,
) -> (tempfile::TempDir, Arc<Proxy>) {
    let dir = tempfile::tempdir().unwrap();
    let storage = test_storage(&dir);
    deploy(
        storage.as_ref(),
        "site",
        ID,
        &[
            ("/index.html", b"home"),
            ("/store-closed.html", b"closed"),
            ("/app/index.html", b"app shell"),
            ("/shadowed.html", b"shadowed"),
            ("/about.html", b"about page"),
            ("/templates/index.html", b"template"),
            ("/static/logo.svg", b"<svg/>"),
            ("/secure/page.html", b"secure"),
            ("/_redirects", redirects.as_bytes()),
            ("/_headers", headers.as_bytes()),
        ],
        SiteConfig::default(),
    )
    .await;
    publish::set_route(storage.as_ref(), "site", ID)
        .await
        .unwrap();
    (dir, Proxy::new(storage, config))
}

/// One row: request path → status, then `Location` or the body.
async fn row(p: &Proxy, path: &str) -> (u16, String) {
    let (status, headers, body) = call(p, get("site.localhost:8000", path)).await;
    let shown = match headers.get("location") {
        Some(l) => l.to_str().unwrap().to_string(),
        None => String::from_utf8_lossy(&body).into_owned(),
    };
    (status.as_u16(), shown)
}

#[tokio::test]
async fn the_documented_examples_behave_as_documented() {
    let (_dir, p) = site_with_rules(REDIRECTS, HEADERS, ProxyConfig::new("localhost:8000")).await;
    let table: &[(&str, u16, &str)] = &[
        ("/home", 301, "/"),
        ("/blog/my-post.php", 301, "/blog/my-post"),
        ("/news", 301, "/blog"),
        ("/cuties", 301, "https://www.petsofnetlify.com"),
        ("/my-redirect", 302, "/"),
        ("/pass-through", 200, "home"),
        ("/ecommerce", 404, "closed"),
        ("/gone", 410, "closed"),
        (
            "/news/2004/02/12/my-story",
            301,
            "/blog/2004/02/12/my-story",
        ),
        ("/posts/a/b", 301, "/blog/a/b"),
        ("/store?id=42", 301, "/blog/42"),
        ("/articles?id=7&tag=rust", 301, "/posts/rust/7"),
        ("/app/settings/profile", 200, "app shell"),
        // A file shadows a rule without `!`; `!` forces it.
        ("/about", 200, "about page"),
        ("/about-forced", 301, "/elsewhere"),
        ("/shadowed.html", 301, "/elsewhere"),
        ("/home301", 301, "/"),
        ("/home302", 302, "/"),
        ("/querystrings", 301, "/?query=string"),
        ("/twitch", 301, "https://twitch.tv"),
        ("/trailing", 301, "/trailing/"),
        (
            "/blog-cf/2024/hello",
            301,
            "https://blog.my.domain/2024/hello",
        ),
        ("/products/42/a%20b", 301, "/products?code=42&name=a%20b"),
        ("/page", 301, "/page2/#fragment"),
        // Query strings go on with a redirect whose target has none.
        ("/news?utm=x", 301, "/blog?utm=x"),
    ];
    let mut failed = Vec::new();
    for (path, status, expected) in table {
        let got = row(&p, path).await;
        if got != (*status, expected.to_string()) {
            failed.push(format!(
                "{path}: expected {status} {expected:?}, got {got:?}"
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));

    let (_, h, _) = call(&p, get("site.localhost:8000", "/")).await;
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-xss-protection"], "1; mode=block");
    let (_, h, _) = call(&p, get("site.localhost:8000", "/secure/page")).await;
    assert_eq!(h["x-frame-options"], "DENY, SAMEORIGIN");
    assert_eq!(h["referrer-policy"], "no-referrer");
    let (_, h, _) = call(&p, get("site.localhost:8000", "/static/logo.svg")).await;
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(h.get("x-frame-options").is_none(), "{h:?}");
    let (_, h, _) = call(&p, get("site.localhost:8000", "/templates/index.html")).await;
    assert_eq!(h["x-template"], "yes");
    // Headers apply to redirects too, and the rules files are not served.
    let (_, h, _) = call(&p, get("site.localhost:8000", "/home")).await;
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(
        row(&p, "/_redirects").await.0,
        200,
        "SPA fallback, not the file"
    );
    assert_ne!(row(&p, "/_redirects").await.1, REDIRECTS);
}

/// A loopback server that answers with what it was sent.
async fn echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let mut lines = vec![format!("{} {}", req.method(), req.uri())];
                    for (name, value) in req.headers() {
                        lines.push(format!("{name}: {}", value.to_str().unwrap_or("?")));
                    }
                    let body = req.into_body().collect().await?.to_bytes();
                    lines.push(format!("body: {}", String::from_utf8_lossy(&body)));
                    let resp = hyper::Response::builder()
                        .header("x-upstream", "yes")
                        .header("connection", "x-secret")
                        .header("x-secret", "hop")
                        .body(Full::new(Bytes::from(lines.join("\n"))))
                        .unwrap();
                    Ok::<_, hyper::Error>(resp)
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn proxy_rules_reach_only_allowed_networks() {
    let upstream = echo().await;
    let rules = format!("/api/*  http://{upstream}/v1/:splat  200\n");
    let mut allowed = ProxyConfig::new("localhost:8000");
    allowed.proxy_allow = ProxyAllow::parse(&["127.0.0.1"]).unwrap();
    let (_dir, p) = site_with_rules(&rules, "/*\n  X-Frame-Options: DENY\n", allowed).await;
    let req = Request::builder()
        .method("POST")
        .uri("/api/items/7?x=1")
        .header("host", "site.localhost:8000")
        .header("cookie", "theme=dark; cdeploy_preview=123.abc")
        .header("x-cdeploy-bypass", "secret")
        .header("connection", "keep-alive")
        .body(())
        .unwrap();
    let (status, headers, body) = call(&p, req).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("POST /v1/items/7?x=1"), "{body}");
    assert!(body.contains(&format!("host: {upstream}")), "{body}");
    assert!(
        body.contains("x-forwarded-host: site.localhost:8000"),
        "{body}"
    );
    assert!(body.contains("x-forwarded-proto: http"), "{body}");
    assert!(body.contains("cookie: theme=dark"), "{body}");
    assert!(!body.contains("cdeploy_preview"), "{body}");
    assert!(!body.contains("secret"), "{body}");
    assert_eq!(headers["x-upstream"], "yes");
    assert!(headers.get("x-secret").is_none(), "hop-by-hop: {headers:?}");
    // An upstream's answer is its own: the site's header rules are not added.
    assert!(headers.get("x-frame-options").is_none(), "{headers:?}");
    // HEAD is relayed with the length the upstream said (its GET's), and no body.
    let head = Request::builder()
        .method("HEAD")
        .uri("/api/items")
        .header("host", "site.localhost:8000")
        .body(())
        .unwrap();
    let (status, headers, body) = call(&p, head).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    let said: usize = headers["content-length"].to_str().unwrap().parse().unwrap();
    assert!(said > "HEAD /v1/items".len(), "{headers:?}");

    // Without the operator's list, loopback is refused, by address or by name.
    for target in [
        format!("http://{upstream}"),
        format!("http://localhost:{}", upstream.port()),
    ] {
        let rules = format!("/api/*  {target}/v1/:splat  200\n");
        let (_dir, p) = site_with_rules(&rules, "", ProxyConfig::new("localhost:8000")).await;
        let (status, _, body) = call(&p, get("site.localhost:8000", "/api/items")).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{target}");
        assert!(
            String::from_utf8_lossy(&body).contains("does not let sites reach"),
            "{target}"
        );
    }
}

#[tokio::test]
async fn only_proxies_take_other_methods() {
    let (_dir, p) = site_with_rules("/old /new\n", "", ProxyConfig::new("localhost:8000")).await;
    let req = Request::builder()
        .method("POST")
        .uri("/index.html")
        .header("host", "site.localhost:8000")
        .body(())
        .unwrap();
    assert_eq!(call(&p, req).await.0, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_request_that_went_round_too_many_cdeploy_proxies_is_a_loop() {
    let upstream = echo().await;
    let rules = format!("/api/*  http://{upstream}/:splat  200\n");
    let mut allowed = ProxyConfig::new("localhost:8000");
    allowed.proxy_allow = ProxyAllow::parse(&["127.0.0.1"]).unwrap();
    let (_dir, p) = site_with_rules(&rules, "", allowed).await;
    let req = Request::builder()
        .uri("/api/x")
        .header("host", "site.localhost:8000")
        .header(
            "via",
            "1.1 cdeploy-aaaa, 1.1 cdeploy-bbbb, 1.1 cdeploy-cccc",
        )
        .body(())
        .unwrap();
    assert_eq!(call(&p, req).await.0, StatusCode::LOOP_DETECTED);
    // One hop is fine, and this proxy adds its own mark.
    let req = Request::builder()
        .uri("/api/x")
        .header("host", "site.localhost:8000")
        .header("via", "1.1 cdeploy-aaaa")
        .body(())
        .unwrap();
    let (status, _, body) = call(&p, req).await;
    assert_eq!(status, StatusCode::OK);
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("via: 1.1 cdeploy-aaaa, 1.1 cdeploy-"),
        "{body}"
    );
}

#[tokio::test]
async fn a_domain_that_redirects_sends_hsts_over_https_only() {
    use cdeploy_core::domains::DomainRoute;
    let (_dir, p) = site_with_rules("", "", ProxyConfig::new("localhost:8000")).await;
    let route = DomainRoute {
        slug: "site".into(),
        branch: None,
        redirect: Some("www.site.test".into()),
        https_redirect: false,
        hsts: Some("max-age=300".into()),
    };
    cdeploy_storage::put_json(p.storage.as_ref(), &layout::domain("site.test"), &route)
        .await
        .unwrap();
    let req = |tls: bool| {
        let mut r = get("site.test", "/a?b=c");
        if tls {
            r.headers_mut().insert(
                "x-forwarded-proto",
                hyper::header::HeaderValue::from_static("https"),
            );
        }
        r
    };
    let (status, headers, _) = call(&p, req(true)).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers["location"], "https://www.site.test/a?b=c");
    assert_eq!(headers["strict-transport-security"], "max-age=300");
    let (_, headers, _) = call(&p, req(false)).await;
    assert_eq!(headers["location"], "http://www.site.test/a?b=c");
    assert!(headers.get("strict-transport-security").is_none());
}

/// What a domain serves is kept by each serving thread (`crate::hot`), and forgotten at
/// once when the server says it changed: moved to a redirect, then removed.
#[tokio::test]
async fn a_domain_changed_is_served_as_changed_at_once() {
    use cdeploy_core::domains::DomainRoute;
    let (_dir, p) = site_with_rules("", "", ProxyConfig::new("localhost:8000")).await;
    let mut route = DomainRoute {
        slug: "site".into(),
        branch: None,
        redirect: None,
        https_redirect: false,
        hsts: None,
    };
    let key = layout::domain("site.test");
    cdeploy_storage::put_json(p.storage.as_ref(), &key, &route)
        .await
        .unwrap();
    let (status, _, _) = call(&p, get("site.test", "/")).await;
    assert_eq!(status, StatusCode::OK);
    route.redirect = Some("www.site.test".into());
    cdeploy_storage::put_json(p.storage.as_ref(), &key, &route)
        .await
        .unwrap();
    p.invalidate_domain("site.test").await;
    let (status, headers, _) = call(&p, get("site.test", "/")).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers["location"], "http://www.site.test/");
    p.storage.delete(&key).await.unwrap();
    p.invalidate_domain("site.test").await;
    let (status, _, _) = call(&p, get("site.test", "/")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
