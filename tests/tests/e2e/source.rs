//! Deploying from a directory: source upload, prebuilt folders, failing builds,
//! promote and rollback.

use std::time::Duration;

use cdeploy_tests::*;

#[test]
fn prebuilt_folder_is_served_without_a_build() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    // A build command that would fail proves no build ran.
    write_files(
        tmp.path(),
        &[
            (
                "cdeploy.toml",
                "slug = \"pre\"\n[build]\ncommand = \"exit 42\"\n",
            ),
            ("dist/index.html", "<h1>prebuilt</h1>"),
            ("dist/docs/index.html", "docs"),
            ("dist/.well-known/security.txt", "contact"),
        ],
    );
    let out = server.cli(tmp.path(), &["deploy", "--prebuilt", "dist", "--json"]);
    out.assert_code(0);
    assert_eq!(out.json()["status"], "ready");
    assert_eq!(server.site("pre", "/").body, "<h1>prebuilt</h1>");
    assert_eq!(server.site("pre", "/docs/").body, "docs");
    assert_eq!(
        server.site("pre", "/.well-known/security.txt").body,
        "contact"
    );
    let logs = server.cli(tmp.path(), &["logs", "pre"]);
    assert!(
        !logs.stdout.contains("exit 42"),
        "a build ran: {}",
        logs.stdout
    );
}

#[test]
fn failing_build_keeps_the_previous_deployment() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("site");
    write_files(
        &dir,
        &[
            ("cdeploy.toml", "slug = \"flaky\"\n"),
            ("index.html", "<h1>good version</h1>"),
        ],
    );
    server.cli(&dir, &["deploy", "--json"]).assert_code(0);

    write_files(
        &dir,
        &[(
            "cdeploy.toml",
            "slug = \"flaky\"\n[build]\ncommand = \"echo compiling; echo 'error TS2322: boom on stderr' >&2; exit 3\"\n",
        )],
    );
    let out = server.cli(&dir, &["deploy", "--json"]);
    out.assert_code(1);
    let d = out.json();
    assert_eq!(d["status"], "failed");
    let msg = d["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("exited with code 3"), "{d}");
    // The tool's own first error line says why, in the deployment's error.
    assert!(
        msg.ends_with("exited with code 3: error TS2322: boom on stderr"),
        "{d}"
    );
    let inspect = server.cli(&dir, &["inspect", d["id"].as_str().unwrap(), "--json"]);
    assert!(
        inspect.stdout.contains("error TS2322: boom on stderr"),
        "{}",
        inspect.stdout
    );
    // stderr lines reach the log, and the site still serves the good version.
    let logs = server.cli(&dir, &["logs", "flaky"]);
    logs.assert_code(1);
    assert!(
        logs.stdout.contains("error TS2322: boom on stderr"),
        "{}",
        logs.stdout
    );
    assert!(logs.stdout.contains("compiling"), "{}", logs.stdout);
    assert_eq!(server.site("flaky", "/").body, "<h1>good version</h1>");
    // Human output (no --json) says what failed on stderr and exits 1 too.
    let human = server.cli(&dir, &["deploy"]);
    human.assert_code(1);
    assert!(
        human.stderr.contains("deployment failed"),
        "{}",
        human.stderr
    );
    assert!(
        human.stdout.is_empty(),
        "stdout must carry only a result: {}",
        human.stdout
    );
}

#[test]
fn promote_and_rollback_move_production_without_rebuilding() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(dir, &[("index.html", "v1")]);
    let first = server.cli(dir, &["deploy", "--slug", "flip", "--json"]);
    first.assert_code(0);
    write_files(dir, &[("index.html", "v2")]);
    let second = server.cli(dir, &["deploy", "--slug", "flip", "--json"]);
    second.assert_code(0);
    assert_eq!(server.site("flip", "/").body, "v2");

    let out = server.cli(dir, &["rollback", "flip"]);
    out.assert_code(0);
    assert_eq!(out.stdout.trim(), server.site_url("flip", ""));
    assert_eq!(server.site("flip", "/").body, "v1");
    let id2 = second.json()["id"].as_str().unwrap().to_string();
    server.cli(dir, &["promote", "flip", &id2]).assert_code(0);
    assert_eq!(server.site("flip", "/").body, "v2");

    let ls = server.cli(dir, &["ls", "flip", "--json"]);
    let list = ls.json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["production"], true);
    let inspect = server.cli(dir, &["inspect", &id2, "--json"]);
    assert_eq!(inspect.json()["status"], "ready");

    // rm takes the site offline.
    server.cli(dir, &["rm", "flip", "--yes"]).assert_code(0);
    assert_eq!(server.site("flip", "/").status, 404);
    assert_eq!(server.client().get("/v1/projects/flip").status, 404);
}

#[test]
fn no_wait_then_inspect_wait() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    write_build_command(
        tmp.path(),
        "sleep 1 && mkdir -p out && echo hi > out/index.html",
        "",
    );
    let id = server.deploy_no_wait(tmp.path(), "later");
    let waited = server.cli(tmp.path(), &["inspect", &id, "--wait", "--json"]);
    waited.assert_code(0);
    assert_eq!(waited.json()["status"], "ready");
    server.wait_status(&id, Duration::from_secs(5), |s| s == "ready");
    assert_eq!(server.site("later", "/").body, "hi\n");
}

#[test]
fn many_files_round_trip() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<(String, String)> = (0..600)
        .map(|i| {
            (
                format!("d{}/sub{}/page{i}.html", i % 7, i % 3),
                format!("content of file {i}"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    write_files(tmp.path(), &refs);
    write_files(tmp.path(), &[("index.html", "home")]);
    server
        .cli(tmp.path(), &["deploy", "--slug", "many", "--json"])
        .assert_code(0);
    for (path, content) in files.iter().step_by(37) {
        assert_eq!(
            &server.site("many", &format!("/{path}")).body,
            content,
            "{path}"
        );
    }
    let blobs = server.blob_count();
    assert!(blobs >= 601, "{blobs}");
    server
        .cli(tmp.path(), &["deploy", "--slug", "many", "--json"])
        .assert_code(0);
    assert_eq!(server.blob_count(), blobs);
}

#[test]
fn a_preview_leaves_production_alone_and_serves_at_its_urls() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("previewed");
    let page = |text: &str| write_files(&dir, &[("index.html", &format!("<h1>{text}</h1>"))]);
    page("production v1");
    server.cli(&dir, &["deploy"]).assert_code(0);

    // Both URLs are in the answer at once, before the build is done.
    page("preview of feat/Login-Page");
    let out = server.cli(
        &dir,
        &[
            "deploy",
            "--preview",
            "--branch",
            "feat/Login-Page",
            "--no-wait",
            "--json",
        ],
    );
    out.assert_code(0);
    let queued = out.json();
    assert_eq!(queued["preview"], true, "{queued}");
    let id = queued["id"].as_str().unwrap().to_string();
    let preview_url = queued["preview_url"].as_str().unwrap().to_string();
    let branch_url = queued["branch_url"].as_str().unwrap().to_string();
    assert!(preview_url.contains(&id), "{queued}");
    assert!(
        branch_url.starts_with("http://feat-login-page--previewed."),
        "{queued}"
    );
    server.wait_status(&id, Duration::from_secs(60), |s| s == "ready");

    let host = |url: &str| {
        url.trim_start_matches("http://")
            .split('.')
            .next()
            .unwrap()
            .to_string()
    };
    let shows = |host: &str, text: &str| {
        let page = server.site(host, "/");
        assert!(
            page.body.contains(text),
            "{host} should show {text:?}: {}",
            page.body
        );
    };
    shows("previewed", "production v1");
    shows(&host(&preview_url), "feat/Login-Page");
    shows(&host(&branch_url), "feat/Login-Page");
    let d = server.deployment(&id);
    assert_eq!(d["production"], false, "{d}");

    // The next preview of the branch takes the alias; the first keeps its own URL.
    page("second preview");
    let out = server.cli(
        &dir,
        &[
            "deploy",
            "--preview",
            "--branch",
            "feat/Login-Page",
            "--json",
        ],
    );
    out.assert_code(0);
    shows(&host(&branch_url), "second preview");
    shows(&host(&preview_url), "feat/Login-Page");
    shows("previewed", "production v1");

    // A project whose only deployment is a preview: served at its URLs, no production.
    let only = tmp.path().join("only-previews");
    write_files(&only, &[("index.html", "<h1>just a preview</h1>")]);
    let out = server.cli(
        &only,
        &["deploy", "--preview", "--branch", "main", "--json"],
    );
    out.assert_code(0);
    let d = out.json();
    assert!(server
        .site(&host(d["preview_url"].as_str().unwrap()), "/")
        .body
        .contains("just a preview"));
    assert!(server
        .site("main--only-previews", "/")
        .body
        .contains("just a preview"));
    assert_eq!(server.site("only-previews", "/").status, 404);
    // Deleting the project takes its aliases down too.
    server
        .cli(&only, &["rm", "only-previews", "--yes"])
        .assert_code(0);
    assert_eq!(server.site("main--only-previews", "/").status, 404);

    // A branch without --preview is a usage error; a branch of no letters is refused.
    let out = server.cli(&dir, &["deploy", "--branch", "x"]);
    out.assert_code(2);
    let git = serde_json::json!({"url": "https://example.com/team/app.git"});
    for body in [
        serde_json::json!({"git": git, "preview": true, "branch": "///"}),
        serde_json::json!({"git": git, "branch": "main"}),
    ] {
        let r = server
            .client()
            .post("/v1/projects/previewed/deployments", &body);
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains("branch"), "{body}: {}", r.text);
    }
}
