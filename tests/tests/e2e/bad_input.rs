//! Bad input: each case gets a clear error, the right status or exit code, and changes
//! nothing.

use cdeploy_tests::*;
use serde_json::json;

fn assert_nothing_created(server: &Server) {
    let projects = server.client().get("/v1/projects").json();
    assert_eq!(projects, json!([]), "bad input created a project");
}

#[test]
fn invalid_slugs_are_refused() {
    let server = Server::start();
    let api = server.client();
    let long = "a".repeat(64);
    for slug in [
        "MyApp",
        "a/b",
        "..",
        "--",
        "a--b",
        long.as_str(),
        "api",
        "-x",
        "",
    ] {
        let r = api.post("/v1/projects", &json!({ "slug": slug }));
        assert_eq!(r.status, 400, "{slug:?}: {}", r.text);
        assert_eq!(r.error_code(), "invalid_slug", "{slug:?}");
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("slug"),
            "{}",
            r.text
        );
    }
    for slug in ["MyApp", "..", "a--b", long.as_str(), "api"] {
        let r = api.post(
            &format!("/v1/projects/{}/deployments", urlencode(slug)),
            &json!({"git": {"url": "https://example.com/a.git"}}),
        );
        // `..` is resolved by the client: the path becomes `/v1/deployments`, which takes
        // GET only.
        assert!(
            r.status == 400 || r.status == 404 || (slug == ".." && r.status == 405),
            "{slug:?}: {} {}",
            r.status,
            r.text
        );
        assert!(
            r.json()["error"]["code"].is_string(),
            "{slug:?}: {}",
            r.text
        );
    }
    let r = api.post(
        "/project",
        &json!({"gitURL": "https://example.com/a.git", "slug": "Bad Slug"}),
    );
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_slug"));
    // The CLI refuses before sending anything: exit 2.
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[("index.html", "x")]);
    for slug in ["UPPER", "a/b", "..", "--", long.as_str(), "admin"] {
        let out = server.cli(tmp.path(), &["deploy", &format!("--slug={slug}")]);
        out.assert_code(2);
        assert!(out.stderr.contains("invalid slug"), "{}", out.stderr);
    }
    assert_nothing_created(&server);
}

fn urlencode(s: &str) -> String {
    s.replace('/', "%2F")
}

#[test]
fn hostile_git_urls_are_refused() {
    let server = Server::start();
    let api = server.client();
    for url in [
        "-uhelp",
        "--upload-pack=touch /tmp/pwned",
        "ext::sh -c touch% /tmp/pwned",
        "ext::sh",
        "file:///etc",
        "/etc",
        "./repo",
        "../x",
    ] {
        let r = api.post(
            "/v1/projects/hostile/deployments",
            &json!({"git": {"url": url}}),
        );
        assert_eq!(r.status, 400, "{url:?}: {}", r.text);
        assert_eq!(r.error_code(), "invalid_git_url", "{url:?}");
        let r = api.post("/project", &json!({"gitURL": url, "slug": "hostile"}));
        assert_eq!(r.status, 400, "{url:?}: {}", r.text);
        let tmp = tempfile::tempdir().unwrap();
        let out = server.cli(
            tmp.path(),
            &["deploy", "--slug", "hostile", &format!("--git={url}")],
        );
        out.assert_code(2);
        assert!(out.stderr.contains("git URL"), "{}", out.stderr);
    }
    let r = api.post(
        "/v1/projects/hostile/deployments",
        &json!({"git": {"url": "https://example.com/a.git", "ref": "--upload-pack=x"}}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert_nothing_created(&server);
    assert!(!std::path::Path::new("/tmp/pwned").exists());
}

#[test]
fn malformed_config_names_file_line_and_key() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    write_files(
        tmp.path(),
        &[
            ("cdeploy.toml", "slug = \"cfg\"\n[site]\nspa = \"yes\"\n"),
            ("index.html", "x"),
        ],
    );
    let out = server.cli(tmp.path(), &["deploy"]);
    out.assert_code(2);
    assert!(out.stderr.contains("cdeploy.toml:3"), "{}", out.stderr);
    assert!(out.stderr.contains("site.spa"), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    let json_out = server.cli(tmp.path(), &["deploy", "--json"]);
    json_out.assert_code(2);
    assert_eq!(json_out.json()["error"]["code"], "config");

    write_files(tmp.path(), &[("cdeploy.toml", "slug = \"cfg\"\n[build\n")]);
    let out = server.cli(tmp.path(), &["deploy"]);
    out.assert_code(2);
    assert!(out.stderr.contains("cdeploy.toml:2"), "{}", out.stderr);
    assert_nothing_created(&server);

    // Unknown keys only warn.
    write_files(
        tmp.path(),
        &[("cdeploy.toml", "slug = \"cfg\"\nbuidl = 1\n")],
    );
    let out = server.cli(tmp.path(), &["deploy", "--json"]);
    out.assert_code(0);
    assert!(out.stderr.contains("unknown key `buidl`"), "{}", out.stderr);
}

#[test]
fn missing_or_wrong_token_is_401() {
    let server = Server::start();
    for api in [
        server.client().without_token(),
        server.client().with_token("cdp_wrong"),
    ] {
        let r = api.get("/v1/projects");
        assert_eq!(r.status, 401, "{}", r.text);
        assert_eq!(r.error_code(), "unauthorized");
        let r = api.post("/project", &json!({"gitURL": "https://example.com/a.git"}));
        assert_eq!(r.status, 401);
    }
    assert_eq!(server.client().without_token().get("/healthz").status, 200);
    // Guessing tokens is throttled per address; a valid token still works.
    let guesser = server.client().with_token("cdp_guess");
    let statuses: Vec<u16> = (0..30)
        .map(|_| guesser.get("/v1/projects").status)
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    let limited = guesser.get("/v1/projects");
    assert_eq!(
        (limited.status, limited.error_code().as_str()),
        (429, "rate_limited"),
        "{statuses:?}"
    );
    assert!(limited.headers.get("retry-after").is_some());
    assert_eq!(server.client().get("/v1/projects").status, 200);
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[("index.html", "x")]);
    let out = server.cli_env(
        tmp.path(),
        &["deploy", "--slug", "tok"],
        &[("CDEPLOY_TOKEN", "cdp_wrong")],
    );
    out.assert_code(3);
    assert!(out.stderr.contains("token"), "{}", out.stderr);
    assert_nothing_created(&server);
}

#[test]
fn the_cli_finds_the_token_the_server_saved() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[("index.html", "x")]);
    // No CDEPLOY_TOKEN: the credentials written on the server's first start are used.
    let out = server.cli_env(tmp.path(), &["deploy", "--slug", "creds", "--json"], &[]);
    out.assert_code(0);
    let mode = std::fs::metadata(server.data_dir().join("admin-token")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
}

#[test]
fn oversized_bodies_are_413() {
    let server = Server::start_with(&["--max-file-mb", "1"], &[]);
    let api = server.client();
    // The server answers from the declared length, before reading the body.
    let token = server.token();
    let hash = sha256_hex(b"big");
    for (method, path, len) in [
        ("PUT", format!("/v1/files/{hash}"), 2 * 1024 * 1024),
        ("POST", "/v1/files/missing".to_string(), 40 * 1024 * 1024),
    ] {
        let resp = raw_http(
            server.api_port,
            &format!("{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{{\"hashes\":["),
        );
        assert!(resp.starts_with("HTTP/1.1 413"), "{method} {path}: {resp}");
        assert!(resp.contains("\"code\":\"payload_too_large\""), "{resp}");
    }
    // A streamed (chunked) body over the limit is cut off as it arrives.
    let chunk = "a".repeat(2 * 1024 * 1024);
    let resp = raw_http(
        server.api_port,
        &format!(
            "PUT /v1/files/{hash} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        ),
    );
    assert!(
        resp.starts_with("HTTP/1.1 413"),
        "{}",
        resp.lines().next().unwrap_or("")
    );
    // A body that does not match its hash is refused and not stored.
    let r = api.put_bytes(
        &format!("/v1/files/{}", sha256_hex(b"right")),
        b"wrong".to_vec(),
    );
    assert_eq!((r.status, r.error_code().as_str()), (422, "hash_mismatch"));
    assert_eq!(server.blob_count(), 0);
    // Malformed JSON is a 400 with our error format.
    let r = api.post_bytes("/v1/projects", b"{not json".to_vec());
    assert_eq!(r.status, 400);
    assert!(!r.error_code().is_empty());
    // A deployment naming blobs the server lacks gets 409 with the list.
    let missing = sha256_hex(b"never uploaded");
    let r = api.post(
        "/v1/projects/m/deployments",
        &json!({"files": {"/index.html": missing}}),
    );
    assert_eq!((r.status, r.error_code().as_str()), (409, "missing_files"));
    assert_eq!(r.json()["error"]["missing"], json!([missing]));
    let r = api.post(
        "/v1/projects/m/deployments",
        &json!({"files": {"/../x": missing}}),
    );
    assert_eq!(r.status, 400);
    assert_nothing_created(&server);
}

#[test]
fn unreachable_server_is_exit_3_with_advice() {
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[("index.html", "x")]);
    let port = free_port();
    let out = std::process::Command::new(bin("cdeploy"))
        .args([
            "--api",
            &format!("http://127.0.0.1:{port}"),
            "--token",
            "cdp_x",
            "deploy",
            "--slug",
            "nope",
        ])
        .current_dir(tmp.path())
        .env("XDG_CONFIG_HOME", tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach") && stderr.contains("cdeploy-server"),
        "{stderr}"
    );
}

#[test]
fn generated_slugs_are_always_valid() {
    let server = Server::start();
    let name = format!("My_Very-Long.Repository-{}", "x".repeat(60));
    let url = format!("https://git.example.invalid/team/{name}.git");
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = server.client().post("/project", &json!({ "gitURL": url }));
        assert_eq!(r.status, 200, "{}", r.text);
        let slug = r.json()["data"]["projectSlug"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            slug.len() <= 45 && slug.starts_with("my-very-long-repository-"),
            "{slug}"
        );
        assert!(
            slug.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{slug}"
        );
        assert!(!slug.contains("--") && !slug.ends_with('-'), "{slug}");
        assert!(!seen.contains(&slug), "{slug} was handed out twice");
        seen.push(slug);
    }
}
