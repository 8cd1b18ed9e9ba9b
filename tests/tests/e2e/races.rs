//! Races a team (or an attacker) hits: a late finisher, `rm` during a build with a new
//! deploy on its heels, previews after `rm`, and deleting one deployment.

use std::process::{Command, Stdio};
use std::time::Duration;

use cdeploy_tests::*;

fn slow_app(page: &str, pause: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_build_command(
        dir.path(),
        &format!("sleep {pause}; mkdir -p out; echo '{page}' > out/index.html"),
        "output = \"out\"\n",
    );
    dir
}

fn production(server: &Server, slug: &str) -> Option<String> {
    let r = server.client().get(&format!("/v1/projects/{slug}"));
    (r.status == 200)
        .then(|| r.json()["production"].as_str().map(str::to_string))
        .flatten()
}

/// A build that started first but finished last does not replace the newer production
/// deployment: it ends `ready` as a preview, and says so in its log.
#[test]
fn a_late_finisher_never_replaces_a_newer_production() {
    let server = Server::start_with(&["--concurrency", "2"], &[]);
    let early = slow_app("early", 6);
    let late = slow_app("late", 0);
    let early_id = server.deploy_no_wait(early.path(), "order");
    std::thread::sleep(Duration::from_millis(300));
    let out = server.cli(late.path(), &["deploy", "--slug", "order", "--json"]);
    out.assert_code(0);
    let late_id = out.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        production(&server, "order").as_deref(),
        Some(late_id.as_str())
    );

    let d = server.wait_status(&early_id, Duration::from_secs(60), |s| s == "ready");
    assert_eq!(d["production"], false, "{d}");
    assert_eq!(
        production(&server, "order").as_deref(),
        Some(late_id.as_str())
    );
    assert!(server.site("order", "/").body.contains("late"));
    // Still reachable as a preview, and promotable on purpose.
    assert!(server
        .site(&format!("order--{early_id}"), "/")
        .body
        .contains("early"));
    let logs = server.cli(early.path(), &["logs", "order", "--deployment", &early_id]);
    assert!(logs.stdout.contains("stays a preview"), "{}", logs.stdout);
    server
        .cli(early.path(), &["promote", "order", &early_id])
        .assert_code(0);
    assert!(server.site("order", "/").body.contains("early"));
}

/// `rm` while a build runs, with a new deploy of the same slug racing it: in the end
/// either the project is gone and nothing is served, or it exists and serves only its
/// new deployment; the old build never goes live.
#[test]
fn rm_racing_a_build_and_a_redeploy_ends_consistent() {
    let server = Server::start_with(&["--concurrency", "2"], &[]);
    let first = slow_app("first", 3);
    let first_id = server.deploy_no_wait(first.path(), "racy");
    server.wait_status(&first_id, Duration::from_secs(30), |s| s == "building");
    let second = slow_app("second", 0);
    let rm = server.cli_spawn(first.path(), &["rm", "racy", "--yes"]);
    std::thread::sleep(Duration::from_millis(50));
    let redeployed = server
        .cli_spawn(second.path(), &["deploy", "--slug", "racy", "--json"])
        .wait_with_output()
        .unwrap();
    let rm = rm.wait_with_output().unwrap();
    assert_eq!(
        rm.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );

    // The first build never serves.
    let d = server.client().get(&format!("/v1/deployments/{first_id}"));
    assert!(
        d.status == 404 || d.json()["status"] != "ready",
        "the deleted project's build went live: {}",
        d.text
    );
    match production(&server, "racy") {
        Some(id) => {
            assert_ne!(id, first_id);
            let page = server.site("racy", "/");
            assert!(page.body.contains("second"), "{}", page.body);
        }
        None => {
            let exists = server.client().get("/v1/projects/racy").status == 200;
            let page = server.site("racy", "/");
            if exists {
                // The redeploy was accepted after the deletion and is still finishing.
                let out = String::from_utf8_lossy(&redeployed.stdout).to_string();
                assert!(!out.is_empty() || page.status == 404);
            } else {
                assert_eq!(page.status, 404, "{}", page.body);
                assert!(!server.data_dir().join("storage/routes/racy.json").exists());
            }
        }
    }
    assert_eq!(
        server.site(&format!("racy--{first_id}"), "/").status,
        404,
        "the deleted build's preview is not served"
    );
}

/// Previews go with their deployment and with their project, on the embedded proxy and
/// on a standalone one; the production deployment cannot be deleted alone.
#[test]
fn previews_go_offline_with_their_deployment_and_project() {
    let server = Server::start();
    let a = tempfile::tempdir().unwrap();
    write_files(a.path(), &[("index.html", "<h1>A</h1>")]);
    let b = tempfile::tempdir().unwrap();
    write_files(b.path(), &[("index.html", "<h1>B</h1>")]);
    let id_a = server
        .cli(a.path(), &["deploy", "--slug", "pv", "--json"])
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let id_b = server
        .cli(b.path(), &["deploy", "--slug", "pv", "--json"])
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let port = free_port();
    let mut proxy = Command::new(bin("cdeploy-proxy"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--domain", &format!("sites.test:{port}")])
        .arg("--storage")
        .arg(server.data_dir().join("storage"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, Duration::from_secs(10));
    let standalone = |label: &str| {
        reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{port}/"))
            .header("host", format!("{label}.sites.test:{port}"))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    // The standalone proxy is ready: its storage answers.
    let ready = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .header("host", format!("sites.test:{port}"))
        .send()
        .unwrap();
    assert_eq!(ready.status(), 200);
    let preview_a = format!("pv--{id_a}");
    let preview_b = format!("pv--{id_b}");
    assert_eq!(server.site(&preview_a, "/").status, 200);
    assert_eq!(standalone(&preview_a), 200);

    // The production deployment cannot go alone.
    let out = server.cli(a.path(), &["rm", "pv", "--deployment", &id_b, "--yes"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("production"), "{}", out.stderr);
    // Another one can: its preview goes, production stays.
    server
        .cli(a.path(), &["rm", "pv", "--deployment", &id_a, "--yes"])
        .assert_code(0);
    assert_eq!(server.site(&preview_a, "/").status, 404);
    assert_eq!(
        server
            .client()
            .get(&format!("/v1/deployments/{id_a}"))
            .status,
        404
    );
    assert!(server.site("pv", "/").body.contains("<h1>B</h1>"));

    server.cli(a.path(), &["rm", "pv", "--yes"]).assert_code(0);
    assert_eq!(server.site(&preview_b, "/").status, 404);
    assert_eq!(server.site("pv", "/").status, 404);
    // A standalone proxy follows within its route TTL (2 s).
    wait_until(
        "the standalone proxy to drop the previews",
        Duration::from_secs(5),
        || standalone(&preview_b) == 404 && standalone("pv") == 404,
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
}
