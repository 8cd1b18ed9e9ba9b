//! A real Vite app (fixture with its lockfile): built by the server, served by the proxy,
//! rendered by Chromium.

use std::time::Duration;

use cdeploy_tests::*;

#[test]
fn vite_app_deploys_renders_and_redeploys_without_uploads() {
    let server = Server::start();
    let tmp = fixture("vite-app");
    let app = tmp.path().join("vite-app");
    write_files(
        &app,
        &[(
            "cdeploy.toml",
            "slug = \"vite-app\"\n[env]\nVITE_GREETING = \"hello from cdeploy.toml\"\n",
        )],
    );
    git_commit_all(&app); // a local repository with no remote

    let out = server.cli(&app, &["deploy", "--json"]);
    out.assert_code(0);
    let d = out.json();
    assert_eq!(d["status"], "ready", "{d}");
    assert_eq!(d["slug"], "vite-app");
    assert_eq!(d["url"], server.site_url("vite-app", ""));
    assert!(d.get("error").is_none());
    // The logs streamed to stderr, the result alone to stdout.
    assert!(out.stderr.contains("vite"), "{}", out.stderr);

    let index = server.site("vite-app", "/");
    assert_eq!(index.status, 200);
    assert_eq!(index.header("content-type"), "text/html; charset=utf-8");
    assert!(
        index.body.contains("<div id=\"app\"></div>"),
        "{}",
        index.body
    );
    let js = asset(&index.body, ".js");
    let css = asset(&index.body, ".css");
    let js_page = server.site("vite-app", &js);
    assert_eq!(js_page.status, 200);
    assert_eq!(
        js_page.header("content-type"),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        js_page.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert!(
        js_page.body.contains("hello from cdeploy.toml"),
        "[env] reached the build"
    );
    let css_page = server.site("vite-app", &css);
    assert_eq!(
        (css_page.status, css_page.header("content-type")),
        (200, "text/css; charset=utf-8")
    );
    assert_eq!(
        server.site("vite-app", "/assets/missing-abc123.js").status,
        404
    );

    // A history-mode deep link gets index.html, and the app's JavaScript renders it.
    let deep = server.site("vite-app", "/about");
    assert_eq!(deep.status, 200);
    assert_eq!(deep.body, index.body);
    let home = chromium_dom(&server.site_url("vite-app", "/"));
    assert!(
        home.contains("Home page rendered by JavaScript"),
        "Chromium DOM: {home}"
    );
    assert!(
        home.contains("hello from cdeploy.toml"),
        "Chromium DOM: {home}"
    );
    let about = chromium_dom(&server.site_url("vite-app", "/about"));
    assert!(
        about.contains("About page rendered by JavaScript"),
        "Chromium DOM: {about}"
    );

    // The same source again: nothing new is uploaded or stored.
    let blobs = server.blob_count();
    let uploaded = metric(&server, "cdeploy_blobs_uploaded_total");
    let again = server.cli(&app, &["deploy", "--json"]);
    again.assert_code(0);
    let d2 = again.json();
    assert_eq!(d2["status"], "ready");
    assert_ne!(d2["id"], d["id"]);
    assert_eq!(
        server.blob_count(),
        blobs,
        "a redeploy of unchanged source stored new blobs"
    );
    // Nothing the build reads changed: it is not built, it takes the first one's output
    // (docs/skipping.md).
    assert_eq!(
        server.deployment(d2["id"].as_str().unwrap())["reused_from"],
        d["id"]
    );
    let logs = server.cli(&app, &["logs", "vite-app"]).stdout;
    assert!(logs.contains("Unchanged since"), "{logs}");
    assert!(!logs.contains("$ npm ci"), "{logs}");
    assert_eq!(
        metric(&server, "cdeploy_blobs_uploaded_total"),
        uploaded,
        "a redeploy uploaded blobs"
    );
    // The preview URL of the first deployment still serves it.
    let preview = server.site(&format!("vite-app--{}", d["id"].as_str().unwrap()), "/");
    assert_eq!(preview.status, 200);

    // A change the install does not read: built, and the lockfile did not change, so
    // the dependency cache skips the install.
    write_files(
        &app,
        &[("NOTES.md", "a change the install does not read\n")],
    );
    server.cli(&app, &["deploy", "--json"]).assert_code(0);
    let logs = server.cli(&app, &["logs", "vite-app"]).stdout;
    assert!(
        logs.contains("Restored node_modules from the build cache"),
        "{logs}"
    );
    assert!(!logs.contains("$ npm ci"), "{logs}");
}

/// The `src="/assets/…"` of the first asset with this extension in an HTML page.
fn asset(html: &str, ext: &str) -> String {
    html.split('"')
        .find(|s| s.starts_with("/assets/") && s.ends_with(ext))
        .unwrap_or_else(|| panic!("no {ext} asset in {html}"))
        .to_string()
}

fn metric(server: &Server, name: &str) -> u64 {
    let text = server.client().get("/metrics").text;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

#[test]
fn seed_request_clones_with_git_and_goes_live() {
    let server = Server::start();
    let daemon = GitDaemon::start();
    let work = tempfile::tempdir().unwrap();
    write_files(
        work.path(),
        &[
            ("index.html", "<h1>seeded site</h1>"),
            ("about.html", "about us"),
        ],
    );
    git_commit_all(work.path());
    let url = daemon.publish(work.path(), "seeded");

    let r = server.client().post(
        "/project",
        &serde_json::json!({"gitURL": url, "slug": "seeded"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(body["status"], "queued");
    assert_eq!(body["data"]["projectSlug"], "seeded");
    assert_eq!(body["data"]["url"], server.site_url("seeded", ""));
    let id = body["data"]["deploymentId"].as_str().unwrap().to_string();
    server.wait_status(&id, Duration::from_secs(60), |s| s == "ready");
    let page = server.site("seeded", "/");
    assert_eq!(
        (page.status, page.body.as_str()),
        (200, "<h1>seeded site</h1>")
    );
    assert_eq!(
        server.site("seeded", "/about").body,
        "about us",
        "clean URLs"
    );

    // Without a slug, one is made from the repository name.
    let r = server
        .client()
        .post("/project", &serde_json::json!({"gitURL": url}));
    assert_eq!(r.status, 200, "{}", r.text);
    let generated = r.json()["data"]["projectSlug"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        generated.starts_with("seeded-") && generated.len() == "seeded-".len() + 6,
        "{generated}"
    );

    // `cdeploy deploy --git URL --ref BRANCH` builds that branch.
    git(work.path(), &["checkout", "-q", "-b", "feature"]);
    write_files(work.path(), &[("index.html", "<h1>feature branch</h1>")]);
    git_commit_all(work.path());
    let url = daemon.publish(work.path(), "seeded");
    let out = server.cli(
        work.path(),
        &[
            "deploy", "--slug", "branchy", "--git", &url, "--ref", "feature", "--json",
        ],
    );
    out.assert_code(0);
    assert_eq!(server.site("branchy", "/").body, "<h1>feature branch</h1>");
}
