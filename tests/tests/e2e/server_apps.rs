//! Server apps: a plain Node.js server named by `[runtime] start`, deployed, woken by its
//! first request (once for concurrent ones), put to sleep when idle, restarted after a
//! crash, and refused at deploy time when it cannot answer; its static files never
//! reach it.

use cdeploy_tests::*;

/// The runtime log of `slug`'s production deployment, as `cdeploy logs --runtime --json`
/// prints it.
fn runtime_log(server: &Server, slug: &str) -> Vec<serde_json::Value> {
    let out = server.cli(&repo_root(), &["logs", slug, "--runtime", "--json"]);
    out.assert_code(0);
    out.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// How many lines of the runtime log contain `text`.
fn count(log: &[serde_json::Value], text: &str) -> usize {
    log.iter()
        .filter(|l| l["text"].as_str().unwrap_or("").contains(text))
        .count()
}

/// Server processes of this server's runtimes (their sandboxes name its data dir).
fn runtime_processes(server: &Server) -> usize {
    let marker = server.data_dir().join("runtimes/run");
    let out = std::process::Command::new("pgrep")
        .args(["-f", &marker.display().to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn a_node_server_wakes_once_sleeps_when_idle_and_restarts_after_a_crash() {
    let server = Server::start_with(&["--runtime-idle-secs", "2"], &[]);
    let app = fixture("node-server-app");
    let dir = app.path().join("node-server-app");
    let out = server.cli(&dir, &["deploy", "--slug", "node", "--json"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("Server app: a Node.js server"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("GET / answered 200"), "{}", out.stderr);

    // Server-rendered: a value per request; JSON from the API route.
    let a = server.site("node", "/");
    let b = server.site("node", "/");
    assert_eq!((a.status, b.status), (200, 200), "{}", a.body);
    assert_ne!(a.body, b.body, "a per-request value");
    assert!(
        a.body.contains("node.localhost"),
        "the visitor's Host: {}",
        a.body
    );
    let api = server.site("node", "/api/time");
    assert_eq!(api.header("content-type"), "application/json");
    assert!(api.body.contains("\"now\""), "{}", api.body);
    // The static file is the proxy's: never in the server's log.
    let css = server.site("node", "/style.css");
    assert_eq!(css.status, 200);
    assert!(css.headers.get("etag").is_some());
    let log = runtime_log(&server, "node");
    assert_eq!(count(&log, "style.css"), 0, "{log:?}");
    assert_eq!(count(&log, "GET /api/time → 200"), 1, "{log:?}");
    assert_eq!(count(&log, "starting the server"), 1, "{log:?}");

    // Idle: stopped, no process left.
    wait_until(
        "the idle server to stop",
        std::time::Duration::from_secs(15),
        || {
            count(&runtime_log(&server, "node"), "the server was stopped") == 1
                && runtime_processes(&server) == 0
        },
    );

    // 20 concurrent first requests: one start, every one answered.
    let port = server.proxy_port;
    let answers: Vec<u16> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                reqwest::blocking::Client::new()
                    .get(format!("http://127.0.0.1:{port}/api/time"))
                    .header("host", format!("node.localhost:{port}"))
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    let log = runtime_log(&server, "node");
    assert_eq!(
        count(&log, "starting the server"),
        2,
        "one more start: {log:?}"
    );

    // A crash answers 502 at once, and the server is back after its backoff.
    let crash = server.site("node", "/crash");
    assert_eq!(crash.status, 200);
    wait_until(
        "the crash to be seen",
        std::time::Duration::from_secs(5),
        || server.site("node", "/").status == 502,
    );
    let log = runtime_log(&server, "node");
    assert_eq!(count(&log, "the server exited with code 3"), 1, "{log:?}");
    wait_until("the restart", std::time::Duration::from_secs(10), || {
        server.site("node", "/").status == 200
    });
}

#[test]
fn a_server_that_cannot_answer_fails_the_deployment_with_its_own_error() {
    let server = Server::start();
    let app = fixture("node-server-app");
    let dir = app.path().join("node-server-app");
    std::fs::write(
        dir.join("server.js"),
        "throw new Error('DATABASE_URL is not set');\n",
    )
    .unwrap();
    let out = server.cli(&dir, &["deploy", "--slug", "broken", "--json"]);
    out.assert_code(1);
    let msg = out.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.starts_with("activate failed: `node server.js`"),
        "{msg}"
    );
    assert!(msg.contains("DATABASE_URL is not set"), "{msg}");
    // Never ready, so nothing is served.
    assert_eq!(server.site("broken", "/").status, 404);

    // Shell syntax in [runtime] start is refused before anything runs.
    std::fs::write(
        dir.join("cdeploy.toml"),
        "[runtime]\nstart = \"node server.js && rm -rf /\"\n",
    )
    .unwrap();
    let out = server.cli(&dir, &["deploy", "--slug", "broken", "--json"]);
    out.assert_code(2);
    assert!(out.stderr.contains("runtime.start"), "{}", out.stderr);
}
