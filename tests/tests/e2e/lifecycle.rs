//! Build limits: timeouts, cancellation, and the bounded queue.

use std::time::Duration;

use cdeploy_tests::*;

#[test]
fn build_timeout_fails_the_deployment_and_kills_the_build() {
    let server = Server::start_with(&["--build-timeout", "2"], &[]);
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("timeout-marker");
    let cmd = format!("echo waiting; sleep 20; touch {}", marker.display());
    write_files(
        tmp.path(),
        &[("cdeploy.toml", &format!("[build]\ncommand = \"{cmd}\"\n"))],
    );
    let out = server.cli(tmp.path(), &["deploy", "--slug", "slowpoke", "--json"]);
    out.assert_code(1);
    let d = out.json();
    assert_eq!(d["status"], "failed");
    assert!(
        d["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out after 2 seconds"),
        "{d}"
    );
    let pgrep = std::process::Command::new("pgrep")
        .args(["-f", &marker.display().to_string()])
        .output()
        .unwrap();
    assert!(pgrep.stdout.is_empty(), "the timed-out build still runs");
}

#[test]
fn cancel_stops_a_running_build() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    write_build_command(tmp.path(), "echo started; sleep 30", "");
    let id = server.deploy_no_wait(tmp.path(), "cancelme");
    server.wait_status(&id, Duration::from_secs(20), |s| s == "building");
    let r = server.client().post(
        &format!("/v1/deployments/{id}/cancel"),
        &serde_json::json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let d = server.wait_status(&id, Duration::from_secs(10), |s| s == "canceled");
    assert_eq!(d["status"], "canceled");
    // Canceling again is a conflict; the log ends with the terminal event.
    let again = server.client().post(
        &format!("/v1/deployments/{id}/cancel"),
        &serde_json::json!({}),
    );
    assert_eq!(again.status, 409);
    let logs = server.cli(tmp.path(), &["logs", "cancelme"]);
    logs.assert_code(1);
    assert!(
        logs.stdout.trim_end().ends_with("status   · canceled"),
        "{}",
        logs.stdout
    );
}

#[test]
fn a_full_queue_answers_429_and_loses_nothing() {
    let server = Server::start_with(&["--concurrency", "1", "--queue-size", "1"], &[]);
    let tmp = tempfile::tempdir().unwrap();
    write_build_command(
        tmp.path(),
        "sleep 3; mkdir -p dist; echo ok > dist/index.html",
        "",
    );
    let running = server
        .cli(
            tmp.path(),
            &["deploy", "--slug", "busy", "--no-wait", "--json"],
        )
        .json();
    server.wait_status(
        running["id"].as_str().unwrap(),
        Duration::from_secs(20),
        |s| s == "building",
    );
    let queued = server.cli(
        tmp.path(),
        &["deploy", "--slug", "busy", "--no-wait", "--json"],
    );
    queued.assert_code(0);
    // The CLI would wait out the 429 (Retry-After 30 s); --max-wait 0 fails at once.
    let full = server.cli(
        tmp.path(),
        &[
            "deploy",
            "--slug",
            "busy",
            "--no-wait",
            "--json",
            "--max-wait",
            "0",
        ],
    );
    full.assert_code(3);
    assert_eq!(full.json()["error"]["code"], "queue_full");
    assert!(
        full.json()["error"]["hint"]
            .as_str()
            .unwrap_or("")
            .contains("--max-wait"),
        "{}",
        full.stdout
    );
    // Both accepted deployments still finish.
    for d in [running, queued.json()] {
        server.wait_status(d["id"].as_str().unwrap(), Duration::from_secs(30), |s| {
            s == "ready"
        });
    }
    let list = server.client().get("/v1/projects/busy/deployments").json();
    let statuses: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "ready").count(),
        2,
        "{statuses:?}"
    );
}

#[test]
fn deploy_timeout_is_exit_3_and_the_build_goes_on() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    write_build_command(
        tmp.path(),
        "sleep 3; mkdir -p dist; echo ok > dist/index.html",
        "",
    );
    let out = server.cli(
        tmp.path(),
        &["deploy", "--slug", "patience", "--timeout", "1", "--json"],
    );
    out.assert_code(3);
    assert_eq!(out.json()["error"]["code"], "timeout");
    let list = server
        .client()
        .get("/v1/projects/patience/deployments")
        .json();
    let id = list[0]["id"].as_str().unwrap().to_string();
    server.wait_status(&id, Duration::from_secs(30), |s| s == "ready");
}

#[test]
fn removing_a_project_stops_its_builds_and_stays_offline() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    write_files(&good, &[("index.html", "live")]);
    server
        .cli(&good, &["deploy", "--slug", "doomed", "--json"])
        .assert_code(0);
    let slow = tmp.path().join("slow");
    let marker = tmp.path().join("doomed-marker");
    write_build_command(
        &slow,
        &format!(
            "sleep 1; mkdir -p dist; echo new > dist/index.html; sleep 30; touch {}",
            marker.display()
        ),
        "",
    );
    let id = server.deploy_no_wait(&slow, "doomed");
    server.wait_status(&id, Duration::from_secs(20), |s| s == "building");

    server.cli(&slow, &["rm", "doomed", "--yes"]).assert_code(0);
    assert_eq!(server.site("doomed", "/").status, 404);
    assert_eq!(
        server.client().get(&format!("/v1/deployments/{id}")).status,
        404
    );
    // `rm` answered once the build had ended (a project's builds are waited for until
    // their status is terminal), so no late activation can come after this.
    assert_eq!(
        server.site("doomed", "/").status,
        404,
        "a stopped build brought the site back"
    );
    assert!(!server
        .data_dir()
        .join("storage/routes/doomed.json")
        .exists());
    let pgrep = std::process::Command::new("pgrep")
        .args(["-f", &marker.display().to_string()])
        .output()
        .unwrap();
    assert!(pgrep.stdout.is_empty(), "the build outlived its project");
}

#[test]
fn ctrl_c_leaves_the_build_running_and_cancel_stops_it() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    write_build_command(
        tmp.path(),
        "echo started; sleep 60; mkdir -p out; echo x > out/index.html",
        "output = \"out\"\n",
    );
    // Ctrl-C while following: the CLI says how to follow or cancel, and the build
    // goes on.
    let child = server.cli_spawn(tmp.path(), &["deploy", "--slug", "interrupted"]);
    let pid = child.id();
    let list = || {
        server
            .client()
            .get("/v1/projects/interrupted/deployments")
            .json()
    };
    wait_until("the build started", Duration::from_secs(60), || {
        list()[0]["status"] == "building"
    });
    signal(pid, rustix::process::Signal::INT);
    let out = CliOutput::from(child.wait_with_output().unwrap());
    out.assert_code(130);
    assert!(out.stderr.contains("keeps running"), "{}", out.stderr);
    assert!(out.stderr.contains("cdeploy cancel"), "{}", out.stderr);
    assert!(
        out.stderr.contains("cdeploy logs interrupted"),
        "{}",
        out.stderr
    );
    let id = list()[0]["id"].as_str().unwrap().to_string();
    assert_eq!(server.deployment(&id)["status"], "building");

    // Cancel by slug: its running deployment stops.
    server
        .cli(tmp.path(), &["cancel", "interrupted"])
        .assert_code(0);
    server.wait_status(&id, Duration::from_secs(30), |s| s == "canceled");
    // Nothing left to cancel: a clear error.
    let out = server.cli(tmp.path(), &["cancel", "interrupted", "--json"]);
    out.assert_code(3);
    assert_eq!(out.json()["error"]["code"], "nothing_to_cancel");
    // By id, once it is over: the server says so.
    let out = server.cli(tmp.path(), &["cancel", &id]);
    out.assert_code(3);
    assert!(out.stderr.contains("already canceled"), "{}", out.stderr);
}

#[test]
fn open_hands_the_site_url_to_the_browser() {
    let server = Server::start();
    let site = tempfile::tempdir().unwrap();
    let dir = site.path().join("opened-site");
    write_files(&dir, &[("index.html", "<h1>hi</h1>")]);
    server.cli(&dir, &["deploy"]).assert_code(0);
    // A "browser" that writes down what it was given.
    let bin = tempfile::tempdir().unwrap();
    let seen = bin.path().join("seen");
    let browser = bin.path().join("browser");
    std::fs::write(
        &browser,
        format!("#!/bin/sh\necho \"$1\" > {}\n", seen.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();
    // No slug: the one `cdeploy deploy` here uses (the folder's name).
    let out = server.cli_env(
        &dir,
        &["open"],
        &[
            ("CDEPLOY_TOKEN", &server.token()),
            ("BROWSER", browser.to_str().unwrap()),
        ],
    );
    out.assert_code(0);
    let url = std::fs::read_to_string(&seen).unwrap();
    let project = server.client().get("/v1/projects/opened-site").json();
    assert_eq!(url.trim(), project["url"].as_str().unwrap());
    let out = server.cli(&dir, &["open", "opened-site", "--print"]);
    out.assert_code(0);
    assert_eq!(out.stdout.trim(), project["url"].as_str().unwrap());
    server.cli(&dir, &["open", "no-such-site"]).assert_code(3);
}
