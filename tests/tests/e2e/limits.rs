//! Enforced limits and HTTP correctness: each limit answers with a clear 4xx (or fails
//! the build naming its setting), and the smaller protocol points hold.

use std::time::Duration;

use cdeploy_tests::*;

#[test]
fn a_deployment_over_its_summed_size_gets_a_4xx_or_fails_naming_the_limit() {
    let server = Server::start_with(&["--max-deployment-mb", "1"], &[]);
    let api = server.client();
    let blob = vec![b'x'; 600 * 1024];
    let hash = sha256_hex(&blob);
    assert_eq!(
        api.put_bytes(&format!("/v1/files/{hash}"), blob).status,
        201
    );
    // One blob under two paths counts twice: 1.2 MB > 1 MiB.
    for kind in ["files", "source"] {
        let path = |p: &str| {
            if kind == "files" {
                format!("/{p}")
            } else {
                p.to_string()
            }
        };
        let r = api.post(
            "/v1/projects/big/deployments",
            &serde_json::json!({ kind: { path("a.bin"): hash, path("b.bin"): hash } }),
        );
        assert_eq!(r.status, 413, "{kind}: {}", r.text);
        assert_eq!(r.error_code(), "payload_too_large");
        assert!(r.text.contains("max_deployment_mb"), "{}", r.text);
    }
    // Under the limit: fine.
    let ok = api.post(
        "/v1/projects/big/deployments",
        &serde_json::json!({ "files": { "/a.bin": hash } }),
    );
    assert_eq!(ok.status, 202, "{}", ok.text);

    // A build whose output is over the limit fails, saying which setting.
    let app = tempfile::tempdir().unwrap();
    write_build_command(
        app.path(),
        "mkdir -p out; head -c 2000000 /dev/zero > out/big.bin; echo hi > out/index.html",
        "output = \"out\"\n",
    );
    let out = server.cli(app.path(), &["deploy", "--slug", "bigout", "--json"]);
    assert_ne!(out.code, 0);
    let id = out.json()["id"].as_str().unwrap().to_string();
    let d = server.deployment(&id);
    assert_eq!(d["status"], "failed", "{d}");
    assert!(
        d["error"]
            .as_str()
            .unwrap_or("")
            .contains("max_deployment_mb"),
        "{d}"
    );
}

#[test]
fn a_token_flooding_the_api_gets_429_with_retry_after() {
    let server = Server::start_with(&["--token-rate", "1", "--token-burst", "5"], &[]);
    let api = server.client();
    let statuses: Vec<ApiResponse> = (0..12).map(|_| api.get("/v1/projects")).collect();
    assert!(statuses[..5].iter().all(|r| r.status == 200));
    let limited = statuses
        .iter()
        .find(|r| r.status == 429)
        .expect("a 429 within 12 quick requests");
    assert_eq!(limited.error_code(), "rate_limited");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry), "Retry-After: {retry}");
    // After waiting as told, the token works again.
    std::thread::sleep(Duration::from_secs(retry));
    assert_eq!(api.get("/v1/projects").status, 200);
}

#[test]
fn metrics_readiness_and_protocol_details() {
    let server = Server::start();
    let api = server.client();

    // A token that can read /metrics and nothing else.
    let out = server
        .admin_command()
        .arg("metrics-token")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics_token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let scoped = server.client().with_token(&metrics_token);
    let m = scoped.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(m.text.contains("cdeploy_"), "{}", m.text);
    let denied = scoped.get("/v1/projects");
    assert_eq!(denied.status, 403);
    assert_eq!(denied.error_code(), "forbidden");
    assert_eq!(
        scoped
            .post("/v1/projects", &serde_json::json!({"slug": "nope"}))
            .status,
        403
    );

    // Readiness checks the store, the bus and storage.
    let ready = server.client().without_token().get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text);
    let r = ready.json();
    assert_eq!(
        (
            r["store"].as_str(),
            r["bus"].as_str(),
            r["storage"].as_str()
        ),
        (Some("ok"), Some("ok"), Some("ok"))
    );

    // Query errors use the JSON error envelope.
    let bad = server.client().get("/v1/projects/x/deployments?limit=lots");
    assert_eq!(bad.status, 400);
    assert_eq!(bad.error_code(), "bad_request");

    // Two Host headers: 400 (RFC 9112).
    let site = tempfile::tempdir().unwrap();
    write_files(site.path(), &[("index.html", "hi")]);
    server
        .cli(site.path(), &["deploy", "--slug", "twohost", "--json"])
        .assert_code(0);
    let host = format!("twohost.localhost:{}", server.proxy_port);
    let answer = raw_http(
        server.proxy_port,
        &format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nHost: other.localhost\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let answer = raw_http(
        server.proxy_port,
        &format!("HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // An Idempotency-Key reused with another body: 422, not the first deployment.
    let hash = sha256_hex(b"hi");
    let send = |path: &str| {
        api.http
            .post(format!("{}/v1/projects/idem/deployments", server.api()))
            .bearer_auth(server.token())
            .header("idempotency-key", "k1")
            .json(&serde_json::json!({ "files": { path: hash } }))
            .send()
            .unwrap()
    };
    assert_eq!(send("/index.html").status(), 202);
    assert_eq!(
        send("/index.html").status(),
        202,
        "the same request is replayed"
    );
    let other = send("/other.html");
    assert_eq!(other.status(), 422);
    assert!(other.text().unwrap().contains("Idempotency-Key"));
}
