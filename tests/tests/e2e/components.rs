//! The other binaries on their own: `cdeploy-builder` driven by its environment contract
//! (as an ECS task would be), and `cdeploy-proxy` serving a storage directory.

use std::process::{Command, Stdio};
use std::time::Duration;

use cdeploy_tests::*;

fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn assert_contiguous(events: &[serde_json::Value]) {
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[test]
fn builder_binary_follows_the_environment_contract() {
    let daemon = GitDaemon::start();
    let work = tempfile::tempdir().unwrap();
    write_files(
        work.path(),
        &[("web/index.html", "<h1>from the builder</h1>")],
    );
    write_build_command(
        work.path(),
        "env; mkdir -p out && cp web/index.html out/ && echo built >&2",
        "[build.x]\n",
    );
    git_commit_all(work.path());
    let url = daemon.publish(work.path(), "direct");
    let storage = tempfile::tempdir().unwrap();
    let run = |vars: &[(&str, &str)]| {
        let out = Command::new(bin("cdeploy-builder"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("STORAGE_DIR", storage.path())
            .env("S3_SECRET_ACCESS_KEY", "must-not-leak")
            // The sandboxed clone may reach the tests' git daemon on the host's loopback.
            .env("BUILD_HOST_PORTS", git_daemon_port().to_string())
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    // The seed's two variables are enough.
    let (code, stdout) = run(&[
        ("GIT_REPOSITORY__URL", &url),
        ("PROJECT_ID", "direct"),
        ("OUTPUT_DIR", "out"),
    ]);
    let evs = events(&stdout);
    assert_eq!(code, 0, "{stdout}");
    assert_contiguous(&evs);
    let last = evs.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["status"].as_str()),
        (Some("status"), Some("ready"))
    );
    assert_eq!(last["url"], "http://direct.localhost:8000");
    assert!(
        evs.iter()
            .any(|e| e["stream"] == "stderr" && e["line"] == "built"),
        "{stdout}"
    );
    assert!(evs.iter().any(|e| e["step"] == "clone"));
    assert!(evs
        .iter()
        .any(|e| e["type"] == "progress" && e["step"] == "upload"));
    assert!(stdout.contains("unknown key `build.x`"), "{stdout}");
    assert!(
        stdout.contains("PATH="),
        "the build printed its environment"
    );
    assert!(
        !stdout.contains("must-not-leak"),
        "storage credentials reached the build"
    );
    let route: serde_json::Value =
        serde_json::from_slice(&std::fs::read(storage.path().join("routes/direct.json")).unwrap())
            .unwrap();
    let id = route["production"].as_str().unwrap();
    let manifest = std::fs::read_to_string(
        storage
            .path()
            .join(format!("deployments/{id}/manifest.json")),
    )
    .unwrap();
    assert!(manifest.contains("\"/index.html\""), "{manifest}");

    // A failing build exits non-zero and still ends with a terminal status.
    let (code, stdout) = run(&[
        ("GIT_REPOSITORY__URL", &url),
        ("PROJECT_ID", "direct"),
        ("BUILD_COMMAND", "echo nope >&2; exit 7"),
        ("DEPLOYMENT_ID", "aaaaaaaaaaaaaaab"),
    ]);
    assert_eq!(code, 1);
    let evs = events(&stdout);
    assert_contiguous(&evs);
    assert_eq!(evs.last().unwrap()["status"], "failed");
    assert!(evs.last().unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("exited with code 7"));
    assert!(!storage
        .path()
        .join("deployments/aaaaaaaaaaaaaaab/manifest.json")
        .exists());

    // Bad configuration: exit 2, and still a terminal status.
    for vars in [
        vec![("PROJECT_ID", "direct")],
        vec![
            ("GIT_REPOSITORY__URL", "ext::sh -c id"),
            ("PROJECT_ID", "direct"),
        ],
    ] {
        let (code, stdout) = run(&vars);
        assert_eq!(code, 2, "{vars:?}");
        let evs = events(&stdout);
        assert_eq!(evs.len(), 1, "{stdout}");
        assert_eq!(evs[0]["status"], "failed");
    }
}

#[test]
fn standalone_proxy_serves_the_same_storage() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[("index.html", "<h1>replica</h1>")]);
    server
        .cli(tmp.path(), &["deploy", "--slug", "replica", "--json"])
        .assert_code(0);

    let storage = server.data_dir().join("storage");
    for (flag, via_env) in [(true, false), (false, true)] {
        let port = free_port();
        let mut cmd = Command::new(bin("cdeploy-proxy"));
        cmd.args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--domain",
            &format!("sites.test:{port}"),
        ]);
        if flag {
            cmd.arg("--storage").arg(&storage);
        }
        if via_env {
            cmd.env("BASE_PATH", &storage); // the seed's name
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, Duration::from_secs(10));
        let resp = reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{port}/"))
            .header("host", format!("replica.sites.test:{port}"))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().unwrap(), "<h1>replica</h1>");
        let health = reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .header("host", format!("sites.test:{port}"))
            .send()
            .unwrap();
        assert_eq!(health.status(), 200);
        let _ = child.kill();
        let _ = child.wait();
    }
    let no_storage = Command::new(bin("cdeploy-proxy"))
        .env_remove("BASE_PATH")
        .env_remove("CDEPLOY_STORAGE")
        .output()
        .unwrap();
    assert_ne!(no_storage.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&no_storage.stderr).contains("--storage"));
}

#[test]
fn idempotency_key_returns_the_same_deployment() {
    let server = Server::start();
    let api = server.client();
    let hash = sha256_hex(b"<h1>once</h1>");
    assert_eq!(
        api.put_bytes(&format!("/v1/files/{hash}"), b"<h1>once</h1>".to_vec())
            .status,
        201
    );
    let body = serde_json::json!({"files": {"/index.html": hash}});
    let send = || {
        api.http
            .post(format!("{}/v1/projects/once/deployments", api.base))
            .bearer_auth(api.token.as_ref().unwrap())
            .header("Idempotency-Key", "retry-me-1")
            .json(&body)
            .send()
            .unwrap()
            .json::<serde_json::Value>()
            .unwrap()
    };
    let (a, b) = (send(), send());
    assert_eq!(a["id"], b["id"]);
    let list = api.get("/v1/projects/once/deployments").json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    server.wait_status(a["id"].as_str().unwrap(), Duration::from_secs(10), |s| {
        s == "ready"
    });
    assert_eq!(server.site("once", "/").body, "<h1>once</h1>");
}
