//! Custom domains over plain HTTP: what a domain serves (production, a branch's
//! preview, a redirect to its other name), who may add one (409 for another project, an
//! admin's move, a narrow token's refusal), and removing it.

use cdeploy_tests::*;
use reqwest::blocking::{Client, Response};
use reqwest::redirect::Policy;

fn fetch(server: &Server, host: &str, path: &str) -> Response {
    Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}{path}", server.proxy_port))
        .header("host", host)
        .send()
        .unwrap()
}

#[test]
fn a_domain_serves_its_project_and_belongs_to_one() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(dir, &[("index.html", "shop production")]);
    server
        .cli(dir, &["deploy", "--prebuilt", ".", "--slug", "shop"])
        .assert_code(0);
    write_files(dir, &[("index.html", "shop staging")]);
    server
        .cli(
            dir,
            &[
                "deploy",
                "--prebuilt",
                ".",
                "--slug",
                "shop",
                "--preview",
                "--branch",
                "staging",
            ],
        )
        .assert_code(0);
    write_files(dir, &[("index.html", "blog")]);
    server
        .cli(dir, &["deploy", "--prebuilt", ".", "--slug", "blog"])
        .assert_code(0);

    // The record to create is printed: a CNAME for a subdomain, A for an apex.
    let out = server.cli(
        dir,
        &["domains", "add", "www.shop.test", "--project", "shop"],
    );
    out.assert_code(0);
    assert!(
        out.stdout.contains("CNAME") && out.stdout.contains("shop.localhost"),
        "{}",
        out.stdout
    );
    let out = server.cli(
        dir,
        &[
            "domains",
            "add",
            "shop.test",
            "--project",
            "shop",
            "--redirect-to",
            "www.shop.test",
            "--json",
        ],
    );
    out.assert_code(0);
    assert_eq!(out.json()["dns"][0]["type"], "A");
    server
        .cli(
            dir,
            &[
                "domains",
                "add",
                "staging.shop.test",
                "--project",
                "shop",
                "--branch",
                "staging",
            ],
        )
        .assert_code(0);

    let r = fetch(&server, "www.shop.test", "/");
    assert_eq!(r.text().unwrap(), "shop production");
    let r = fetch(&server, "WWW.Shop.Test.", "/");
    assert_eq!(
        r.text().unwrap(),
        "shop production",
        "case and a trailing dot"
    );
    let r = fetch(&server, "shop.test", "/a/b?c=d");
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "http://www.shop.test/a/b?c=d");
    // The other name on the port the visitor reached.
    let r = fetch(&server, &format!("shop.test:{}", server.proxy_port), "/a");
    assert_eq!(
        r.headers()["location"],
        format!("http://www.shop.test:{}/a", server.proxy_port).as_str()
    );
    assert_eq!(
        fetch(&server, "staging.shop.test", "/").text().unwrap(),
        "shop staging"
    );
    assert_eq!(fetch(&server, "unknown.test", "/").status(), 404);

    // Another project: 409, without naming the holder to a narrow token.
    let blog = server.create_token(&["--name", "blog-ci", "--project", "blog", "--role", "deploy"]);
    let as_blog = |args: &[&str]| server.cli_env(dir, args, &[("CDEPLOY_TOKEN", &blog)]);
    let out = as_blog(&["domains", "add", "www.shop.test", "--project", "blog"]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("another project"), "{}", out.stderr);
    assert!(!out.stderr.contains("project shop"), "{}", out.stderr);
    // Nor may it add to, inspect or remove the other project's domains.
    let out = as_blog(&["domains", "add", "new.shop.test", "--project", "shop"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("403") || out.stderr.contains("not on project"),
        "{}",
        out.stderr
    );
    assert_ne!(as_blog(&["domains", "rm", "www.shop.test"]).code, 0);
    assert_ne!(as_blog(&["domains", "inspect", "www.shop.test"]).code, 0);
    // Its own domain is fine; a platform name and a non-name are refused.
    as_blog(&["domains", "add", "blog.test", "--project", "blog"]).assert_code(0);
    let out = as_blog(&["domains", "add", "x.localhost", "--project", "blog"]);
    assert!(
        out.stderr.contains("platform's own domain"),
        "{}",
        out.stderr
    );
    let out = as_blog(&["domains", "add", "not a name", "--project", "blog"]);
    assert!(out.stderr.contains("not a domain name"), "{}", out.stderr);

    // An admin moves a domain; the proxy follows at once.
    let out = server.cli(
        dir,
        &["domains", "add", "www.shop.test", "--project", "blog"],
    );
    assert!(out.stderr.contains("--move"), "{}", out.stderr);
    server
        .cli(
            dir,
            &[
                "domains",
                "add",
                "www.shop.test",
                "--project",
                "blog",
                "--move",
            ],
        )
        .assert_code(0);
    assert_eq!(fetch(&server, "www.shop.test", "/").text().unwrap(), "blog");

    let out = server.cli(dir, &["domains", "ls", "--project", "shop", "--json"]);
    let names: Vec<String> = out
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["shop.test", "staging.shop.test"]);
    server
        .cli(dir, &["domains", "rm", "staging.shop.test"])
        .assert_code(0);
    assert_eq!(fetch(&server, "staging.shop.test", "/").status(), 404);
}
