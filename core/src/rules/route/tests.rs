use super::*;
use crate::rules::{compile, Sources};

fn files(paths: &[&str]) -> BTreeMap<String, ()> {
    paths.iter().map(|p| (p.to_string(), ())).collect()
}

fn router(redirects: &str) -> Router {
    Router::new(
        compile(Sources {
            redirects_file: Some(redirects),
            ..Sources::default()
        })
        .unwrap(),
    )
}

const SITE: Site = Site {
    spa: false,
    clean_urls: true,
};

/// The answer to `path_and_query` as a short string: `file /x 200`, `redirect 301 /y`,
/// `proxy https://…`, `status 404`.
fn answer(r: &Router, files: &BTreeMap<String, ()>, host: &str, target: &str) -> String {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let path = decode_path(path).unwrap();
    let req = Request {
        host,
        path: &path,
        query,
    };
    match r.answer(files, SITE, &req) {
        Answer::File { path, status, .. } => format!("file {path} {status}"),
        Answer::Redirect {
            status, location, ..
        } => format!("redirect {status} {location}"),
        Answer::Proxy { url, .. } => format!("proxy {url}"),
        Answer::Status { status, .. } => format!("status {status}"),
    }
}

#[test]
fn rules_files_and_fallbacks_in_order() {
    let f = files(&["/index.html", "/about.html", "/404.html", "/app/index.html"]);
    let r = router(
        "/old  /new\n/about /elsewhere\n/forced /about 200!\n/about.html /x 302!\n/app/* /app/index.html 200\n",
    );
    let a = |t: &str| answer(&r, &f, "site.test", t);
    // A file shadows a rule without `!`; a forced rule wins over the file.
    assert_eq!(a("/old"), "redirect 301 /new");
    assert_eq!(a("/about"), "file /about.html 200");
    assert_eq!(a("/about.html"), "redirect 302 /x");
    assert_eq!(a("/forced"), "file /about.html 200");
    assert_eq!(a("/app/deep/link"), "file /app/index.html 200");
    assert_eq!(a("/nothing"), "file /404.html 404");
    // The query goes on with a redirect.
    assert_eq!(a("/old?a=1&b=2"), "redirect 301 /new?a=1&b=2");
}

#[test]
fn captures_are_escaped_where_they_go_into_urls() {
    let f = files(&["/index.html"]);
    let r = router("/p/:id /q/:id\n/s/* https://api.test/v1/:splat 200\n/déjà /voilà\n");
    let a = |t: &str| answer(&r, &f, "site.test", t);
    assert_eq!(a("/p/a%3Fb"), "redirect 301 /q/a%3Fb");
    assert_eq!(a("/p/caf%C3%A9"), "redirect 301 /q/caf%C3%A9");
    assert_eq!(a("/s/a/b%20c?x=1"), "proxy https://api.test/v1/a/b%20c?x=1");
    assert_eq!(a("/d%C3%A9j%C3%A0"), "redirect 301 /voil%C3%A0");
}

#[test]
fn query_conditions_hosts_and_statuses() {
    let f = files(&["/index.html", "/gone.html"]);
    let r = router(
        "https://old.test/* https://new.test/:splat 301!\n/store id=:id /blog/:id 301\n/store kind=book /books 302\n/bye /gone.html 410\n/missing /nope.html 404\n",
    );
    let a = |host: &str, t: &str| answer(&r, &f, host, t);
    assert_eq!(
        a("old.test", "/x/y?z=1"),
        "redirect 301 https://new.test/x/y?z=1"
    );
    assert_eq!(a("old.test", "/"), "redirect 301 https://new.test/");
    assert_eq!(a("site.test", "/store?id=42&x=1"), "redirect 301 /blog/42");
    assert_eq!(a("site.test", "/store?kind=book"), "redirect 302 /books");
    assert_eq!(a("site.test", "/store?kind=dvd"), "status 404");
    assert_eq!(a("site.test", "/bye"), "file /gone.html 410");
    assert_eq!(a("site.test", "/missing"), "status 404");
}

#[test]
fn headers_join_and_remove_in_order() {
    let rules = compile(Sources {
        headers_file: Some(
            "/*\n  X-Frame-Options: DENY\n  X-Test: a\n/assets/*\n  X-Test: b\n  ! X-Frame-Options\n",
        ),
        ..Sources::default()
    })
    .unwrap();
    let r = Router::new(rules);
    let plan = r.headers_for("/assets/app.js");
    assert_eq!(plan.remove, vec!["x-frame-options"]);
    assert_eq!(plan.set.len(), 1);
    assert_eq!(plan.set[0].0, "x-test");
    assert_eq!(plan.set[0].1, "a, b");
    assert_eq!(plan.set[0].2, vec!["_headers:1", "_headers:4"]);
    let plan = r.headers_for("/");
    assert!(plan.remove.is_empty());
    assert_eq!(plan.set.len(), 2);
}

#[test]
fn a_thousand_rules_are_tried_only_where_they_can_match() {
    let text: String = (0..1000)
        .map(|i| format!("/old-{i}/* /new-{i}/:splat\n"))
        .collect();
    let r = router(&text);
    assert_eq!(r.redirects.candidates("/old-999/x").count(), 1);
    assert_eq!(r.redirects.candidates("/assets/app.js").count(), 0);
    let f = files(&["/index.html"]);
    assert_eq!(answer(&r, &f, "h", "/old-999/x"), "redirect 301 /new-999/x");
}

#[test]
fn rules_that_begin_with_a_placeholder_are_tried_only_where_a_later_literal_matches() {
    let mut text: String = (0..20)
        .map(|i| format!("/:lang/legacy-{i} /:lang/page-{i} 302\n"))
        .collect();
    text.push_str(
        "/:a/:b/deep/* /deep/:splat 302\n/:a/:b /two 302\n/:a/:b/:c /three 302\n/docs/* /d 302\n",
    );
    let r = router(&text);
    let tried = |path: &str| r.redirects.candidates(path).collect::<Vec<_>>();
    // Rules with no literal segment (`/:a/:b`, `/:a/:b/:c`) are tried for every path.
    assert_eq!(tried("/deep/link"), vec![21, 22]);
    assert_eq!(tried("/en/legacy-7"), vec![7, 21, 22]);
    assert_eq!(tried("/x/y/deep/z"), vec![20, 21, 22]);
    // In rule order across the lists.
    assert_eq!(tried("/docs/legacy-3"), vec![3, 21, 22, 23]);
    assert_eq!(tried("/"), vec![21, 22]);
    let f = files(&["/index.html"]);
    assert_eq!(
        answer(&r, &f, "h", "/fr/legacy-19"),
        "redirect 302 /fr/page-19"
    );
    assert_eq!(
        answer(&r, &f, "h", "/a/b/deep/c/d"),
        "redirect 302 /deep/c/d"
    );
    assert_eq!(answer(&r, &f, "h", "/a/b"), "redirect 302 /two");
}

#[test]
fn paths_decode_safely() {
    assert_eq!(decode_path("/").unwrap(), "/");
    assert_eq!(decode_path("/a//b/").unwrap(), "/a/b/");
    // A path that is its own decoding is not copied; any other is rebuilt.
    for (raw, clean) in [
        ("/", true),
        ("/a/b.html", true),
        ("/a/b/", true),
        ("/.well-known/x", true),
        ("/a..b/c.", true),
        ("//", false),
        ("/a//", false),
        ("//a", false),
        ("/a/%62", false),
    ] {
        let decoded = decode_path(raw).unwrap();
        assert_eq!(
            matches!(decoded, std::borrow::Cow::Borrowed(_)),
            clean,
            "{raw}"
        );
        if clean {
            assert_eq!(decoded, raw);
        }
    }
    assert_eq!(decode_path("//").unwrap(), "/");
    assert_eq!(decode_path("/a/%62").unwrap(), "/a/b");
    for bad in ["/./a", "/a/..", "/a/../", "a", "/a\\b", "/a\0"] {
        assert!(decode_path(bad).is_err(), "{bad}");
    }
    assert_eq!(decode_path("/caf%C3%A9").unwrap(), "/café");
    for bad in [
        "/../etc/passwd",
        "/%2e%2e/x",
        "/a/./b",
        "/a%00b",
        "/a%5cb",
        "/%ff",
    ] {
        assert!(decode_path(bad).is_err(), "{bad}");
    }
}

#[test]
fn filled_in_values_cannot_leave_the_site_add_parameters_or_grow_without_bound() {
    let f = files(&["/index.html"]);
    let r = router(
        "/go id=:id /:id 302\n/amp a=:a /target?x=:a 302\n/big/* /:splat/:splat/:splat/:splat/:splat/:splat/:splat/:splat/:splat 302\n/v6 http://[::1]:8443/x 302\n",
    );
    let a = |t: &str| answer(&r, &f, "site.test", t);
    assert_eq!(a("/go?id=%5Cevil.com"), "redirect 302 /%5Cevil.com");
    assert_eq!(a("/go?id=/evil.com"), "redirect 302 /%2Fevil.com");
    assert_eq!(
        a("/amp?a=1%26admin%3Dtrue"),
        "redirect 302 /target?x=1%26admin%3Dtrue"
    );
    let long = format!("/big/{}", "a".repeat(1000));
    assert_eq!(a(&long), "status 414");
    assert_eq!(a("/v6"), "redirect 302 http://[::1]:8443/x");
    assert!(compile(Sources {
        redirects_file: Some("/q u=:splat /:splat 302\n"),
        ..Sources::default()
    })
    .is_err());
}

#[test]
fn query_conditions_compare_decoded_values() {
    let f = files(&["/index.html"]);
    let r = router("/x q=a%20b /spaced 302\n/y q=a+b /plussed 302\n");
    let a = |t: &str| answer(&r, &f, "site.test", t);
    assert_eq!(a("/x?q=a%20b"), "redirect 302 /spaced");
    assert_eq!(a("/x?q=a+b"), "redirect 302 /spaced");
    assert_eq!(a("/y?q=a+b"), "redirect 302 /plussed");
}

#[test]
fn wildcard_rules_with_query_conditions_pass_over_paths_without_the_keys() {
    // (What this costs is bench/proxy.sh's to measure: no clock here.)
    let text: String = (0..10_000)
        .map(|i| format!("/* zz{i}=:q /x 301\n"))
        .collect();
    let r = router(&text);
    let f = files(&["/index.html"]);
    let path = "/a".repeat(4000);
    assert_eq!(answer(&r, &f, "h", &path), "status 404");
    assert_eq!(answer(&r, &f, "h", "/a?zz9999=1"), "redirect 301 /x");
}
