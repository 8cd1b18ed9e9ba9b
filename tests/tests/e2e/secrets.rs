//! Stored secrets: given to the builds of their target only, sealed at rest, masked in
//! every log (CLI, WebSocket, archive), write-only when sensitive, and keys that rotate.

use std::path::Path;
use std::time::Duration;

use cdeploy_tests::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A build that prints its secrets (whole, inside other text, on stderr, and a
/// multi-line one) and writes a page with a digest of each, so the test can tell
/// which values it was given without the page holding them.
const PRINTING_BUILD: &str = r#"echo "plain: $API_KEY"; echo "stderr: $API_KEY" >&2; echo "inside: x${API_KEY}y"; echo "$CERT"; mkdir -p dist; { printf 'env=%s\n' "$CDEPLOY_ENV"; printf 'api=%s\n' "$(printf %s "${API_KEY:-none}" | sha256sum | cut -c1-64)"; printf 'preview=%s\n' "$(printf %s "${PREVIEW_TOKEN:-none}" | sha256sum | cut -c1-64)"; } > dist/index.html"#;

fn digest(value: &str) -> String {
    sha256_hex(value.as_bytes())
}

/// Every file under `dir`, as bytes, that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

/// Every event of a deployment, as the WebSocket sends them.
fn websocket_log(server: &Server, id: &str) -> String {
    let url = format!(
        "{}/v1/deployments/{id}/events?after=0",
        server.api().replace("http://", "ws://")
    );
    let token = server.token();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let mut ws = tokio_tungstenite::connect_async(req).await.unwrap().0;
        let mut all = String::new();
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(t) = msg else { continue };
            all.push_str(t.as_str());
            all.push('\n');
            let e: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            if e["type"] == "status"
                && ["ready", "failed", "canceled"].contains(&e["status"].as_str().unwrap())
            {
                break;
            }
        }
        all
    })
}

fn add(server: &Server, dir: &Path, args: &[&str], value: &str) {
    let mut all = vec!["env", "add"];
    all.extend_from_slice(args);
    server.cli_input(dir, &all, value).assert_code(0);
}

fn page_line(server: &Server, host: &str, key: &str) -> String {
    let page = server.site(host, "/");
    assert_eq!(page.status, 200, "{}\n{}", page.body, server.log());
    page.body
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {}", page.body))
        .to_string()
}

#[test]
fn secrets_reach_their_target_only_sealed_and_masked_everywhere() {
    let server = Server::start();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    write_build_command(dir, PRINTING_BUILD, "");
    let slug = "vault";
    let api_key = format!("sk_live_{}", &digest("api")[..24]);
    let cert = "-----BEGIN TEST-----\nMIIBOgIBAAJBAKj34GkxFhD9\n-----END TEST-----";
    let preview_token = format!("pv_{}", &digest("preview")[..20]);

    // Stored before the project's first deploy (env add creates it), from stdin.
    add(
        &server,
        dir,
        &["API_KEY", "--project", slug, "--target", "production"],
        &format!("{api_key}\n"),
    );
    add(
        &server,
        dir,
        &["CERT", "--project", slug, "--target", "production"],
        cert,
    );
    add(
        &server,
        dir,
        &[
            "PREVIEW_TOKEN",
            "--project",
            slug,
            "--target",
            "preview",
            "--sensitive",
        ],
        &preview_token,
    );
    let listed = server.cli(dir, &["env", "ls", "--project", slug, "--json"]);
    listed.assert_code(0);
    assert!(!listed.stdout.contains(&api_key) && !listed.stdout.contains(&preview_token));
    let rows: Vec<(String, String, bool)> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["target"].as_str().unwrap().to_string(),
                v["sensitive"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("API_KEY".into(), "production".into(), false),
            ("CERT".into(), "production".into(), false),
            ("PREVIEW_TOKEN".into(), "preview".into(), true),
        ]
    );

    // Production: its build gets the production values, not the preview one.
    let out = server.cli(dir, &["deploy", "--slug", slug]);
    out.assert_code(0);
    let shown = format!("{}{}", out.stdout, out.stderr);
    for masked in [
        "plain: ***",
        "stderr: ***",
        "inside: x***y",
        "-----BEGIN TEST-----",
    ] {
        // The first line of the certificate is masked on its own too.
        if masked.starts_with("-----") {
            assert!(!shown.contains(masked), "{shown}");
        } else {
            assert!(shown.contains(masked), "{masked} in {shown}");
        }
    }
    assert!(
        !shown.contains(&api_key) && !shown.contains("MIIBOgIBAAJBAKj34GkxFhD9"),
        "{shown}"
    );
    assert_eq!(page_line(&server, slug, "env"), "production");
    assert_eq!(page_line(&server, slug, "api"), digest(&api_key));
    assert_eq!(page_line(&server, slug, "preview"), digest("none"));

    let id = server
        .client()
        .get(&format!("/v1/projects/{slug}/deployments"))
        .json()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The WebSocket and the archived log hold the mask, never the value.
    let ws = websocket_log(&server, &id);
    assert!(ws.contains("plain: ***") && !ws.contains(&api_key), "{ws}");
    let archive = server
        .data_dir()
        .join(format!("storage/deployments/{id}/log.jsonl"));
    wait_until("the log to be archived", Duration::from_secs(20), || {
        archive.is_file()
    });
    let archived = std::fs::read_to_string(&archive).unwrap();
    assert!(
        archived.contains("plain: ***") && !archived.contains(&api_key),
        "{archived}"
    );
    let logs = server.cli(dir, &["logs", slug]);
    assert!(logs.stdout.contains("plain: ***") && !logs.stdout.contains(&api_key));

    // Another project's build of the same code gets none of them.
    server
        .cli(dir, &["deploy", "--slug", "vault-neighbor"])
        .assert_code(0);
    assert_eq!(page_line(&server, "vault-neighbor", "api"), digest("none"));
    assert_eq!(
        page_line(&server, "vault-neighbor", "preview"),
        digest("none")
    );

    // A preview gets the preview value, and none of production's.
    let out = server.cli(
        dir,
        &[
            "deploy",
            "--slug",
            slug,
            "--preview",
            "--branch",
            "feat",
            "--json",
        ],
    );
    out.assert_code(0);
    let preview_host = format!("{slug}--{}", out.json()["id"].as_str().unwrap());
    assert_eq!(page_line(&server, &preview_host, "env"), "preview");
    assert_eq!(page_line(&server, &preview_host, "api"), digest("none"));
    assert_eq!(
        page_line(&server, &preview_host, "preview"),
        digest(&preview_token)
    );

    // At rest: nothing the server wrote holds a value (the names are there, in the clear).
    let db: Vec<u8> = std::fs::read_dir(server.data_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("cdeploy.db"))
        .flat_map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    assert!(
        db.windows(7).any(|w| w == b"API_KEY"),
        "the rows are in the database files"
    );
    for value in [
        api_key.as_str(),
        preview_token.as_str(),
        "MIIBOgIBAAJBAKj34GkxFhD9",
    ] {
        let holding = files_holding(&server.data_dir(), value.as_bytes());
        assert!(holding.is_empty(), "{value} in {holding:?}");
    }
    let log = server.log();
    assert!(!log.contains(&api_key) && !log.contains(&preview_token));

    // pull: readable values in a dotenv file; the sensitive one is named, not blank.
    // (Beside the app, not in it: the next deploys would upload it with the source.)
    let elsewhere = tempfile::tempdir().unwrap();
    let pulled = elsewhere.path().join("prod.env");
    let out = server.cli(
        elsewhere.path(),
        &["env", "pull", "prod.env", "--project", slug],
    );
    out.assert_code(0);
    let text = std::fs::read_to_string(&pulled).unwrap();
    assert!(text.contains(&format!("API_KEY=\"{api_key}\"\n")), "{text}");
    assert!(text.contains(&format!("CERT=\"{cert}\"\n")), "{text}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&pulled).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Not over an existing file without --yes.
    server
        .cli(
            elsewhere.path(),
            &["env", "pull", "prod.env", "--project", slug],
        )
        .assert_code(2);
    let out = server.cli(
        elsewhere.path(),
        &[
            "env",
            "pull",
            "preview.env",
            "--project",
            slug,
            "--target",
            "preview",
        ],
    );
    out.assert_code(0);
    assert!(
        out.stderr.contains("PREVIEW_TOKEN is sensitive"),
        "{}",
        out.stderr
    );
    let text = std::fs::read_to_string(elsewhere.path().join("preview.env")).unwrap();
    assert!(
        !text.contains("PREVIEW_TOKEN=") && !text.contains(&preview_token),
        "{text}"
    );
    assert!(text.contains("PREVIEW_TOKEN"), "named in a comment: {text}");
    let values = server
        .client()
        .get(&format!("/v1/projects/{slug}/env/values?target=preview"))
        .json();
    assert_eq!(values["values"], serde_json::json!({}));
    assert_eq!(values["sensitive"], serde_json::json!(["PREVIEW_TOKEN"]));

    // Replaced, then removed: the next build sees the change.
    add(
        &server,
        dir,
        &["API_KEY", "--project", slug, "--target", "production"],
        "sk_rotated_value",
    );
    server.cli(dir, &["deploy", "--slug", slug]).assert_code(0);
    assert_eq!(page_line(&server, slug, "api"), digest("sk_rotated_value"));
    server
        .cli(dir, &["env", "rm", "API_KEY", "--project", slug])
        .assert_code(0);
    server.cli(dir, &["deploy", "--slug", slug]).assert_code(0);
    assert_eq!(page_line(&server, slug, "api"), digest("none"));

    // A deploy token for the project deploys it, and may not touch its secrets.
    let ci = server.client().with_token(&server.deploy_token(slug));
    let body = serde_json::json!({"value": "from-ci"});
    for (what, r) in [
        ("list", ci.get(&format!("/v1/projects/{slug}/env"))),
        ("values", ci.get(&format!("/v1/projects/{slug}/env/values"))),
        (
            "put",
            ci.put(&format!("/v1/projects/{slug}/env/CERT"), &body),
        ),
        (
            "delete",
            ci.delete(&format!("/v1/projects/{slug}/env/CERT")),
        ),
    ] {
        assert_eq!(r.status, 403, "{what}: {}", r.text);
    }

    // Deleting the project deletes its secrets.
    server.cli(dir, &["rm", slug, "--yes"]).assert_code(0);
    let listed = server.client().get(&format!("/v1/projects/{slug}/env"));
    assert_eq!(listed.status, 404, "{}", listed.text);
    add(&server, dir, &["OTHER", "--project", slug], "again-1234");
    let rows = server
        .client()
        .get(&format!("/v1/projects/{slug}/env"))
        .json();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    assert!(rows.to_string().contains("OTHER") && !rows.to_string().contains("PREVIEW_TOKEN"));
}

#[test]
fn bad_secrets_are_refused_with_a_reason() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let api = server.client();
    for (what, name, body, status, says) in [
        (
            "a bad name",
            "1BAD",
            serde_json::json!({"value": "x"}),
            400,
            "not a valid variable name",
        ),
        (
            "a platform name",
            "CDEPLOY_ENV",
            serde_json::json!({"value": "x"}),
            400,
            "platform",
        ),
        (
            "a NUL",
            "NUL",
            serde_json::json!({"value": "a\u{0}b"}),
            400,
            "NUL",
        ),
        (
            "a huge value",
            "HUGE",
            serde_json::json!({"value": "x".repeat(64 * 1024 + 1)}),
            413,
            "64 KiB",
        ),
        (
            "a bad target",
            "T",
            serde_json::json!({"value": "x", "targets": ["staging"]}),
            400,
            "staging",
        ),
    ] {
        let r = api.put(&format!("/v1/projects/bad-env/env/{name}"), &body);
        assert_eq!(r.status, status, "{what}: {}", r.text);
        assert!(r.text.contains(says), "{what}: {}", r.text);
    }
    // Nothing was stored by the refusals (the project may exist).
    let r = api.get("/v1/projects/bad-env/env");
    assert!(r.status == 404 || r.text == "[]", "{}", r.text);

    // The CLI: an empty stdin, a bad target, an unknown project or variable.
    let out = server.cli_input(dir, &["env", "add", "EMPTY", "--project", "bad-env"], "");
    out.assert_code(2);
    assert!(out.stderr.contains("stdin was empty"), "{}", out.stderr);
    let out = server.cli_input(
        dir,
        &[
            "env",
            "add",
            "X",
            "--project",
            "bad-env",
            "--target",
            "staging",
        ],
        "v",
    );
    out.assert_code(2);
    let out = server.cli(dir, &["env", "ls", "--project", "no-such-project"]);
    out.assert_code(3);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    server
        .cli_input(
            dir,
            &["env", "add", "KEEP", "--project", "bad-env"],
            "kept-value",
        )
        .assert_code(0);
    let out = server.cli(dir, &["env", "rm", "MISSING", "--project", "bad-env"]);
    out.assert_code(3);
    assert!(out.stderr.contains("MISSING"), "{}", out.stderr);

    // The per-project count is enforced.
    for i in 0..99 {
        let r = api.put(
            &format!("/v1/projects/bad-env/env/V{i}"),
            &serde_json::json!({"value": "v"}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // KEEP (2 targets) + 99 × 2 = 200: the next is refused, and nothing was lost.
    let r = api.put(
        "/v1/projects/bad-env/env/ONE_MORE",
        &serde_json::json!({"value": "v"}),
    );
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("200"), "{}", r.text);
    let rows = api.get("/v1/projects/bad-env/env").json();
    assert_eq!(rows.as_array().unwrap().len(), 200);
    // Replacing one that exists still works at the limit.
    let r = api.put(
        "/v1/projects/bad-env/env/KEEP",
        &serde_json::json!({"value": "new"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
}

#[test]
fn a_rotated_key_reseals_stored_secrets() {
    let key = |b: u8| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([b; 32])
    };
    let mut server = Server::start_with(&[], &[("CDEPLOY_SECRETS_KEY", &key(1))]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_build_command(
        dir,
        r#"mkdir -p dist; printf 'api=%s\n' "$(printf %s "${API_KEY:-none}" | sha256sum | cut -c1-64)" > dist/index.html"#,
        "",
    );
    add(
        &server,
        dir,
        &["API_KEY", "--project", "rotating"],
        "value-sealed-with-key-1",
    );
    let deploy_and_check = |server: &Server| {
        server
            .cli(dir, &["deploy", "--slug", "rotating"])
            .assert_code(0);
        assert_eq!(
            page_line(server, "rotating", "api"),
            digest("value-sealed-with-key-1")
        );
    };
    deploy_and_check(&server);

    // The new key first, the old one after: values are resealed at start.
    server.stop();
    server.extra_env = vec![(
        "CDEPLOY_SECRETS_KEY".into(),
        format!("{},{}", key(2), key(1)),
    )];
    server.start_again();
    assert!(server.log().contains("resealed"), "{}", server.log());
    deploy_and_check(&server);

    // The old key gone: everything opens with the new one alone (from a file now).
    server.stop();
    let key_file = tmp.path().join("keys");
    std::fs::write(&key_file, format!("# current\n{}\n", key(2))).unwrap();
    server.extra_env.clear();
    server.extra_args = vec!["--secrets-key-file".into(), key_file.display().to_string()];
    server.start_again();
    deploy_and_check(&server);

    // A key that sealed nothing here: the server says so, and a deploy is refused with
    // the reason, leaving nothing behind.
    server.stop();
    std::fs::write(&key_file, format!("{}\n", key(3))).unwrap();
    server.start_again();
    assert!(
        server.log().contains("no key of this server opens"),
        "{}",
        server.log()
    );
    let before = server
        .client()
        .get("/v1/projects/rotating/deployments")
        .json();
    let out = server.cli(dir, &["deploy", "--slug", "rotating"]);
    out.assert_code(3);
    assert!(out.stderr.contains("does not open"), "{}", out.stderr);
    let after = server
        .client()
        .get("/v1/projects/rotating/deployments")
        .json();
    assert_eq!(before, after);
    assert_eq!(
        page_line(&server, "rotating", "api"),
        digest("value-sealed-with-key-1"),
        "production stays"
    );
    server.stop();

    // A malformed key stops the server at start, saying how to make one.
    let bad = std::process::Command::new(bin("cdeploy-server"))
        .args(["--data-dir"])
        .arg(tmp.path().join("bad-data"))
        .args(["--listen", "127.0.0.1:0", "--proxy-listen", "none"])
        .env("CDEPLOY_SECRETS_KEY", "c2hvcnQ=")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("CDEPLOY_SECRETS_KEY") && stderr.contains("openssl rand -base64 32"),
        "{stderr}"
    );
}

/// A build that prints a secret the ways tools do — base64, inside `Authorization:
/// Basic`, URL-escaped, JSON-escaped — shows none of them in the log.
#[test]
fn encoded_forms_of_a_secret_are_masked() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let server = Server::start();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let build = r#"printf 'whole: %s\n' "$(printf %s "$DB_PASSWORD" | base64 -w0)"
for user in a ab abc ci-bot; do printf 'Authorization: Basic %s\n' "$(printf '%s:%s' "$user" "$DB_PASSWORD" | base64 -w0)"; done
node -e 'console.log("url: /login?p=" + encodeURIComponent(process.env.DB_PASSWORD) + "&next=/")'
node -e 'console.log("json: " + JSON.stringify({password: process.env.DB_PASSWORD}))'
mkdir -p dist && echo ok > dist/index.html
"#;
    std::fs::write(dir.join("build.sh"), build).unwrap();
    write_build_command(dir, "sh build.sh", "");
    let secret = "p@ss/w+rd: é\"x&y=1";
    add(
        &server,
        dir,
        &["DB_PASSWORD", "--project", "enc", "--target", "production"],
        secret,
    );
    let out = server.cli(dir, &["deploy", "--slug", "enc"]);
    out.assert_code(0);
    let shown = format!("{}{}", out.stdout, out.stderr);
    let mut forms = vec![
        b64.encode(secret),
        serde_json::to_string(secret).unwrap(),
        percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
            .replace("%2D", "-")
            .replace("%2E", ".")
            .replace("%5F", "_"),
    ];
    for user in ["a", "ab", "abc", "ci-bot"] {
        forms.push(b64.encode(format!("{user}:{secret}")));
    }
    for line in [
        "whole: ",
        "Authorization: Basic ",
        "url: /login?p=",
        "json: ",
    ] {
        assert!(
            shown.lines().any(|l| l.contains(line) && l.contains("***")),
            "{line} in {shown}"
        );
    }
    for form in &forms {
        let form = form.trim_matches('"');
        assert!(!shown.contains(form), "{form} in {shown}");
    }
    assert!(!shown.contains(secret));
}
