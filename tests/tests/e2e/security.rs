//! What a hostile build or request must not achieve.

use cdeploy_tests::*;

#[test]
fn symlink_out_of_the_output_is_never_served() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cmd = "mkdir -p dist && echo '<h1>ok</h1>' > dist/index.html && ln -s /etc/passwd dist/x && ln -s /etc dist/etc && ln -s index.html dist/alias.html";
    // No SPA fallback, so a path that is not a file is a plain 404.
    write_files(
        tmp.path(),
        &[(
            "cdeploy.toml",
            &format!("[build]\ncommand = \"{cmd}\"\n[site]\nspa = false\n"),
        )],
    );
    let out = server.cli(tmp.path(), &["deploy", "--slug", "links", "--json"]);
    out.assert_code(0);
    for path in ["/x", "/etc/passwd", "/etc/hostname"] {
        let page = server.site("links", path);
        assert!(!page.body.contains("root:"), "{path} leaked /etc/passwd");
        assert_ne!(page.status, 200, "{path}");
    }
    assert_eq!(
        server.site("links", "/alias.html").body,
        "<h1>ok</h1>\n",
        "a symlink inside the output is fine"
    );
    let passwd = std::fs::read(
        server
            .data_dir()
            .join("storage/blobs")
            .join(sha256_hex(&std::fs::read("/etc/passwd").unwrap())),
    );
    assert!(passwd.is_err(), "/etc/passwd was uploaded to storage");
    let logs = server.cli(tmp.path(), &["logs", "links"]);
    assert!(
        logs.stdout.contains("points outside the output folder"),
        "{}",
        logs.stdout
    );
}

#[test]
fn build_commands_see_no_credentials() {
    let secrets = [
        ("CDEPLOY_TOKEN", "cdp_secret_token_value_1"),
        ("AWS_SECRET_ACCESS_KEY", "aws-secret-value-2"),
        ("AWS_ACCESS_KEY_ID", "AKIASECRETVALUE3"),
        ("S3_SECRET_ACCESS_KEY", "s3-secret-value-4"),
        ("REDIS_PASSWORD", "redis-secret-value-5"),
        ("GITHUB_TOKEN", "ghp_secret_value_6"),
    ];
    let server = Server::start_with(&[], &secrets);
    let tmp = tempfile::tempdir().unwrap();
    write_build_command(
        tmp.path(),
        "env; cat $HOME/.config/cdeploy/credentials.json 2>&1; mkdir -p dist; echo x > dist/index.html",
        "[env]\nPUBLIC_FLAG = \"visible-value\"\n",
    );
    let out = server.cli(tmp.path(), &["deploy", "--slug", "envy", "--json"]);
    out.assert_code(0);
    let logs = server.cli(tmp.path(), &["logs", "envy"]).stdout;
    assert!(
        logs.contains("PUBLIC_FLAG=visible-value"),
        "the project's [env] reaches the build: {logs}"
    );
    assert!(logs.contains("PATH="), "{logs}");
    for (name, value) in secrets {
        assert!(
            !logs.contains(value),
            "{name} leaked into the build: {logs}"
        );
    }
    assert!(
        !logs.contains(&server.token()),
        "the admin token leaked into the build"
    );
    assert!(!logs.contains("XDG_CONFIG_HOME"), "{logs}");
}

#[test]
fn hostile_proxy_requests_get_4xx_and_the_server_survives() {
    let mut server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[("index.html", "home")]);
    server
        .cli(tmp.path(), &["deploy", "--slug", "safe", "--json"])
        .assert_code(0);
    let host = format!("safe.localhost:{}", server.proxy_port);
    for path in [
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2fetc%2fpasswd",
        "/a%00b",
        "/%ff%fe",
    ] {
        let resp = raw_http(
            server.proxy_port,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        let status = resp.split_whitespace().nth(1).unwrap_or("");
        assert!(
            status.starts_with('4'),
            "{path}: {}",
            resp.lines().next().unwrap_or("")
        );
        assert!(!resp.contains("root:"), "{path}");
    }
    let garbage = raw_http(server.proxy_port, "\x00\x01 nonsense\r\n\r\n");
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 4"),
        "{garbage}"
    );
    assert_eq!(server.site("unknown-site", "/").status, 404);
    assert_eq!(server.site("safe", "/").body, "home");
    assert!(server.is_running());
}
