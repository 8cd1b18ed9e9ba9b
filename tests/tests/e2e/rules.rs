//! `_redirects`, `_headers` and cdeploy.toml's rule tables through real deployments: a
//! built site and a prebuilt one, a bad line that fails the deploy naming it, a
//! rollback that brings the old rules back, and `inspect --route`.

use cdeploy_tests::*;
use reqwest::blocking::{Client, Response};
use reqwest::redirect::Policy;

fn fetch(server: &Server, slug: &str, path: &str) -> Response {
    Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}{path}", server.proxy_port))
        .header("host", format!("{slug}.localhost:{}", server.proxy_port))
        .send()
        .unwrap()
}

fn location(resp: &Response) -> String {
    resp.headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn a_built_site_gets_its_rules_and_inspect_explains_them() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(
        dir,
        &[
            ("index.html", "<h1>home</h1>"),
            ("docs/intro.html", "intro"),
            (
                "_redirects",
                "# moved\n/old-docs/*  /docs/:splat  301\n/docs/* /docs/intro.html 200\n",
            ),
            ("_headers", "/*\n  X-Frame-Options: DENY\n  Cache-Control: public, max-age=60\n"),
            (
                "cdeploy.toml",
                "[[redirects]]\nfrom = \"/store\"\nto = \"/docs/:id\"\nquery = { id = \":id\" }\n\n[[headers]]\nfor = \"/docs/*\"\nvalues = { X-Docs = \"yes\" }\n",
            ),
        ],
    );
    let out = server.cli(dir, &["deploy", "--slug", "ruled", "--json"]);
    out.assert_code(0);
    let id = out.json()["id"].as_str().unwrap().to_string();

    let r = fetch(&server, "ruled", "/old-docs/intro?ref=x");
    assert_eq!(
        (r.status().as_u16(), location(&r)),
        (301, "/docs/intro?ref=x".into())
    );
    let r = fetch(&server, "ruled", "/docs/anything/deep");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-docs"], "yes");
    assert_eq!(r.text().unwrap(), "intro");
    let r = fetch(&server, "ruled", "/store?id=42");
    assert_eq!(
        (r.status().as_u16(), location(&r)),
        (301, "/docs/42".into())
    );
    let r = fetch(&server, "ruled", "/");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(r.headers()["cache-control"], "public, max-age=60");
    assert!(r.headers().get("x-docs").is_none());
    // The rules files are compiled, not served.
    let r = fetch(&server, "ruled", "/_redirects");
    assert!(!r.text().unwrap().contains("old-docs"));

    let out = server.cli(dir, &["inspect", &id, "--route", "/old-docs/a?b=1"]);
    out.assert_code(0);
    assert!(
        out.stdout.contains("301 redirect to /docs/a?b=1"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("_redirects:2: /old-docs/* /docs/:splat 301"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("x-frame-options: DENY  (_headers:1)"),
        "{}",
        out.stdout
    );
    let out = server.cli(dir, &["inspect", &id, "--route", "/docs/x", "--json"]);
    let j = out.json();
    assert_eq!(j["kind"], "file");
    assert_eq!(j["file"], "/docs/intro.html");
    assert_eq!(j["source"], "_redirects:3");
    let out = server.cli(dir, &["inspect", &id, "--route", "/nowhere.js", "--json"]);
    assert_eq!(out.json()["status"], 404);
    let out = server.cli(dir, &["inspect", &id, "--route", "/", "--json"]);
    assert_eq!(out.json()["via"], "the folder's index.html");
    assert_eq!(out.json()["methods"], "GET, HEAD");
    assert!(
        out.json().get("protected").is_none(),
        "production is never gated"
    );
    let out = server.cli(dir, &["inspect", &id, "--route", "/docs/x"]);
    assert!(out.stdout.contains("other methods: 405"), "{}", out.stdout);
    let out = server.cli(dir, &["inspect", &id, "--route", "/old-docs/a", "--json"]);
    assert_eq!(out.json()["methods"], "any");
}

#[test]
fn a_bad_line_fails_the_deploy_and_rollback_restores_old_rules() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(
        dir,
        &[
            ("index.html", "v1"),
            ("_redirects", "/promo  /v1-sale  302\n"),
        ],
    );
    server
        .cli(dir, &["deploy", "--prebuilt", ".", "--slug", "shop"])
        .assert_code(0);
    write_files(
        dir,
        &[
            ("index.html", "v2"),
            ("_redirects", "/promo  /v2-sale  302\n"),
        ],
    );
    server
        .cli(dir, &["deploy", "--prebuilt", ".", "--slug", "shop"])
        .assert_code(0);
    assert_eq!(location(&fetch(&server, "shop", "/promo")), "/v2-sale");

    // Every bad line, with its number and why; production keeps serving v2.
    write_files(
        dir,
        &[
            ("index.html", "v3"),
            ("_redirects", "/ok /fine\n/promo /sale 305\n/x/:a /y/:b\n"),
        ],
    );
    let out = server.cli(dir, &["deploy", "--prebuilt", ".", "--slug", "shop"]);
    out.assert_code(1);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("_redirects:2: status 305"), "{said}");
    assert!(said.contains("_redirects:3: /y/:b uses :b"), "{said}");
    assert_eq!(fetch(&server, "shop", "/").text().unwrap(), "v2");

    // A bad table in cdeploy.toml is refused before anything is sent.
    write_files(
        dir,
        &[
            ("_redirects", "/promo /v3-sale 302\n"),
            (
                "cdeploy.toml",
                "[[redirects]]\nfrom = \"/a\"\nto = \"https://x.test/:splat\"\n",
            ),
        ],
    );
    let out = server.cli(dir, &["deploy", "--prebuilt", ".", "--slug", "shop"]);
    out.assert_code(2);
    assert!(out.stderr.contains("cdeploy.toml:1"), "{}", out.stderr);
    assert!(out.stderr.contains("has no `*`"), "{}", out.stderr);

    server.cli(dir, &["rollback", "shop"]).assert_code(0);
    assert_eq!(fetch(&server, "shop", "/").text().unwrap(), "v1");
    assert_eq!(location(&fetch(&server, "shop", "/promo")), "/v1-sale");
}
