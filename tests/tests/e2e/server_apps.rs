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

/// A host TCP listener on every address, accepting and dropping connections: what a
/// runtime must not reach on the host's own addresses.
fn host_listener() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// The host's own non-loopback IPv4 addresses.
fn host_addresses() -> Vec<String> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|a| a.contains('.'))
        .map(String::from)
        .collect()
}

#[test]
fn a_hostile_server_reaches_nothing_of_the_host_and_dies_at_its_limits() {
    let server = Server::start_with(
        &["--runtime-idle-secs", "3", "--runtime-memory-mb", "256"],
        &[("AWS_SECRET_ACCESS_KEY", "sentinel-of-the-host")],
    );
    // A neighbour whose files must stay out of reach, and a site that must keep answering.
    let neighbour = fixture("node-server-app");
    let out = server.cli(
        &neighbour.path().join("node-server-app"),
        &["deploy", "--slug", "neighbour", "--json"],
    );
    out.assert_code(0);
    let neighbour_id = out.json()["id"].as_str().unwrap().to_string();
    assert_eq!(server.site("neighbour", "/").status, 200);

    let app = fixture("node-server-app");
    let dir = app.path().join("node-server-app");
    std::fs::write(
        dir.join("server.js"),
        include_str!("../../fixtures/hostile-server.js"),
    )
    .unwrap();
    let (_listener, host_port) = host_listener();
    let data = server.data_dir();
    let mut connect: Vec<(String, u16)> = vec![
        ("127.0.0.1".into(), server.api_port),
        ("127.0.0.1".into(), server.proxy_port),
        ("127.0.0.1".into(), host_port),
        ("169.254.169.254".into(), 80),
    ];
    connect.extend(host_addresses().into_iter().map(|a| (a, host_port)));
    let marker = format!(
        "{}.{}",
        4000 + std::process::id() % 1000,
        std::process::id()
    );
    let targets = serde_json::json!({
        "paths": [
            data.display().to_string(),
            data.join("storage/blobs").display().to_string(),
            data.join(format!("runtimes/bundles/{neighbour_id}")).display().to_string(),
            repo_root().display().to_string(),
            "/root".to_string(),
        ],
        "connect": connect,
        "server_pid": server.pid(),
        "env_allowed": ["PWD", "PORT", "HOSTNAME", "HOST", "NODE_ENV", "CDEPLOY_DEPLOYMENT_ID", "CDEPLOY_URL", "PATH", "HOME", "TMPDIR"],
        "sleep_marker": marker,
    });
    std::fs::write(dir.join("targets.json"), targets.to_string()).unwrap();
    server
        .cli(&dir, &["deploy", "--slug", "hostile", "--json"])
        .assert_code(0);

    let probe = server.site("hostile", "/probe");
    assert_eq!(probe.status, 200, "{}", probe.body);
    let results: Vec<serde_json::Value> = serde_json::from_str(&probe.body).unwrap();
    assert!(results.len() >= 12, "{results:?}");
    let holes: Vec<&serde_json::Value> = results.iter().filter(|r| r["ok"] == true).collect();
    assert!(holes.is_empty(), "the runtime reached: {holes:#?}");

    // A process that tries to outlive the server goes with it when it sleeps.
    assert_eq!(server.site("hostile", "/daemon").status, 200);
    let daemons = || {
        let out = std::process::Command::new("pgrep")
            .args(["-f", &format!("sleep {marker}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    assert_eq!(daemons(), 1, "the daemon runs while the server does");
    wait_until(
        "the idle server and its daemon to go",
        std::time::Duration::from_secs(20),
        || daemons() == 0,
    );

    // Past its memory limit it is killed, said so, and restarted; others keep answering.
    assert_eq!(server.site("hostile", "/alloc").status, 200);
    wait_until(
        "the memory kill",
        std::time::Duration::from_secs(30),
        || {
            let log = server.cli(&dir, &["logs", "hostile", "--runtime"]);
            log.stdout.contains("reached its memory limit of 256 MiB")
        },
    );
    assert_eq!(server.site("neighbour", "/").status, 200);
    wait_until("the restart", std::time::Duration::from_secs(15), || {
        server.site("hostile", "/").status == 200
    });
}

#[test]
fn fifty_sleeping_previews_cost_no_process_and_no_memory() {
    let server = Server::start_with(&["--runtime-idle-secs", "2"], &[]);
    let app = fixture("node-server-app");
    let dir = app.path().join("node-server-app");
    // Production first: what one deployment sets up once (the toolchain, the install
    // cache, the project) is not counted against the previews.
    server
        .cli(&dir, &["deploy", "--slug", "idle"])
        .assert_code(0);
    let (start, _) = proc_memory(server.pid());
    let ids: Vec<String> = (0..50)
        .map(|_| {
            let out = server.cli(
                &dir,
                &[
                    "deploy",
                    "--slug",
                    "idle",
                    "--preview",
                    "--no-wait",
                    "--json",
                ],
            );
            out.assert_code(0);
            out.json()["id"].as_str().unwrap().to_string()
        })
        .collect();
    for id in &ids {
        let d = server.wait_status(id, std::time::Duration::from_secs(600), |s| {
            matches!(s, "ready" | "failed" | "canceled")
        });
        assert_eq!(d["status"], "ready", "{d}");
    }
    // 50 ready servers, none asked for: none runs.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(runtime_processes(&server), 0);
    let (built, _) = proc_memory(server.pid());

    // Each wakes on its own first request (16 at most at once: the least recently used
    // makes room), then all sleep: no process, and the server keeps nothing of them.
    for id in &ids {
        let page = server.site(&format!("idle--{id}"), "/api/time");
        assert_eq!(page.status, 200, "{}", page.body);
    }
    assert!(
        runtime_processes(&server) <= 16 * 3,
        "pasta, bwrap and node per server"
    );
    wait_until(
        "every server to sleep",
        std::time::Duration::from_secs(30),
        || runtime_processes(&server) == 0,
    );
    let (after, _) = proc_memory(server.pid());
    eprintln!(
        "server RSS: {} MiB before the previews, {} MiB after their builds, {} MiB after \
         their servers ran and slept",
        start >> 20,
        built >> 20,
        after >> 20
    );
    // Measured from before the previews were deployed: their builds' logs (kept a while
    // for readers) and their servers' visits must not stay in the server's memory.
    assert!(
        built.max(after) < start + (50 << 20),
        "the server grew from {} MiB to {} MiB after 50 preview builds and {} MiB after \
         their servers ran and slept",
        start >> 20,
        built >> 20,
        after >> 20
    );
}

#[test]
fn stored_variables_marked_runtime_reach_the_server_and_are_masked_in_its_log() {
    let server = Server::start();
    let app = fixture("node-server-app");
    let dir = app.path().join("node-server-app");
    std::fs::write(
        dir.join("server.js"),
        r#"const http = require('node:http');
http.createServer((req, res) => {
  console.log(`the secret is ${process.env.RUNTIME_SECRET}`);
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ runtime: process.env.RUNTIME_SECRET || null, build: process.env.BUILD_ONLY || null }));
}).listen(Number(process.env.PORT), process.env.HOST);
"#,
    )
    .unwrap();
    server
        .cli_input(
            &dir,
            &[
                "env",
                "add",
                "RUNTIME_SECRET",
                "--runtime",
                "--project",
                "vars",
            ],
            "runtime-value-8f3a2c",
        )
        .assert_code(0);
    server
        .cli_input(
            &dir,
            &["env", "add", "BUILD_ONLY", "--project", "vars"],
            "build-only-value-77e1",
        )
        .assert_code(0);
    let ls = server.cli(&dir, &["env", "ls", "--project", "vars"]);
    assert!(ls.stdout.contains("runtime"), "{}", ls.stdout);
    server
        .cli(&dir, &["deploy", "--slug", "vars", "--json"])
        .assert_code(0);
    let page = server.site("vars", "/");
    assert_eq!(page.status, 200, "{}", page.body);
    let got: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(got["runtime"], "runtime-value-8f3a2c");
    assert_eq!(
        got["build"],
        serde_json::Value::Null,
        "build-only stays build-only"
    );
    let log = server.cli(&dir, &["logs", "vars", "--runtime"]);
    assert!(log.stdout.contains("the secret is ***"), "{}", log.stdout);
    assert!(
        !log.stdout.contains("runtime-value-8f3a2c"),
        "{}",
        log.stdout
    );
}

#[test]
fn one_project_holding_every_server_cannot_lock_another_out() {
    let server = Server::start_with(&["--runtime-max", "3"], &[]);
    let app = fixture("node-server-app");
    let dir = app.path().join("node-server-app");
    std::fs::write(
        dir.join("server.js"),
        r#"const http = require('node:http');
http.createServer((req, res) => {
  if (req.url === '/slow') { setTimeout(() => res.end('late'), 90000); return; }
  res.end('quick');
}).listen(Number(process.env.PORT), process.env.HOST);
"#,
    )
    .unwrap();
    // The hog: three previews of one project, each held busy by a slow request.
    let ids: Vec<String> = (0..3)
        .map(|_| {
            let out = server.cli(&dir, &["deploy", "--slug", "hog", "--preview", "--json"]);
            out.assert_code(0);
            out.json()["id"].as_str().unwrap().to_string()
        })
        .collect();
    server
        .cli(&dir, &["deploy", "--slug", "other", "--json"])
        .assert_code(0);
    let port = server.proxy_port;
    // Held until the test ends (their servers answer late or are stopped).
    let _held: Vec<_> = ids
        .iter()
        .map(|id| {
            let host = format!("hog--{id}.localhost:{port}");
            std::thread::spawn(move || {
                let _ = reqwest::blocking::Client::builder()
                    .timeout(std::time::Duration::from_secs(120))
                    .build()
                    .unwrap()
                    .get(format!("http://127.0.0.1:{port}/slow"))
                    .header("host", host)
                    .send();
            })
        })
        .collect();
    // Every hog server runs, its slow request in flight (the request line is logged
    // when the answer comes; the start line when it began).
    let logs = || -> Vec<serde_json::Value> {
        ids.iter()
            .map(|id| {
                server
                    .client()
                    .get(&format!("/v1/deployments/{id}/runtime-log"))
                    .json()
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !logs().iter().all(|l| l["running"] == true) {
        assert!(
            std::time::Instant::now() < deadline,
            "three busy servers: {:#?}",
            logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Another project still gets a server: one of the hog's is stopped for it.
    let page = server.site("other", "/");
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.body, "quick");
    let log = server.cli(&dir, &["logs", "hog", "--runtime", "--deployment", &ids[0]]);
    let stopped: usize = ids
        .iter()
        .map(|id| {
            let log = server.cli(&dir, &["logs", "hog", "--runtime", "--deployment", id]);
            count_text(&log.stdout, "its project runs the most servers")
        })
        .sum();
    assert_eq!(stopped, 1, "{}", log.stdout);
}

fn count_text(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[test]
fn a_deleted_deployment_s_server_and_files_leave_the_host() {
    let server = Server::start();
    let app = fixture("node-server-app");
    let dir = app.path().join("node-server-app");
    let deploy = || {
        let out = server.cli(&dir, &["deploy", "--slug", "tidy", "--json"]);
        out.assert_code(0);
        out.json()["id"].as_str().unwrap().to_string()
    };
    let (old, _new) = (deploy(), deploy());
    assert_eq!(
        server.site(&format!("tidy--{old}"), "/api/time").status,
        200
    );
    let folder = server.data_dir().join(format!("runtimes/bundles/{old}"));
    assert!(folder.is_dir());
    assert_eq!(runtime_processes(&server), 3, "pasta, bwrap and node");
    server
        .cli(&dir, &["rm", "tidy", "--deployment", &old, "--yes"])
        .assert_code(0);
    // Stopped and removed by the time the deletion answers.
    assert!(!folder.exists());
    assert_eq!(runtime_processes(&server), 0);
    assert_eq!(server.site("tidy", "/api/time").status, 200);
}
