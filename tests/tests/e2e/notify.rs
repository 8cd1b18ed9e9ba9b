//! Deploy events out (`cdeploy notify`): an endpoint gets each event signed as Standard
//! Webhooks says, retried until it answers 2xx and then never again; a build killed
//! with the server still yields its `failed` event once the server is back; endpoints
//! the operator did not allow are refused; a narrow token cannot add one.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use cdeploy_tests::*;
use hmac::Mac;

/// Whether `r` carries a valid Standard Webhooks signature under `secret`.
fn signed(r: &Recorded, secret: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .unwrap();
    let (Some(id), Some(ts), Some(sig)) = (
        r.header("webhook-id"),
        r.header("webhook-timestamp"),
        r.header("webhook-signature"),
    ) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{}", r.body).as_bytes());
    let expected = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    let fresh = ts
        .parse::<u64>()
        .is_ok_and(|t| t.abs_diff(unix_now()) < 300);
    fresh && sig.split(' ').any(|s| s == expected)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The `data` of each event the recorder got answered 2xx, by message id (its n-th
/// request got `statuses[n]`, the last one from there on).
fn delivered(rec: &HttpRecorder, statuses: &[u16]) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut out: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for (n, r) in rec.requests().iter().enumerate() {
        let status = statuses[n.min(statuses.len() - 1)];
        if (200..300).contains(&status) {
            out.entry(r.header("webhook-id").unwrap_or("").to_string())
                .or_default()
                .push(r.json());
        }
    }
    out
}

fn events_of(got: &BTreeMap<String, Vec<serde_json::Value>>, deployment: &str) -> Vec<String> {
    let mut events: Vec<String> = got
        .values()
        .flatten()
        .filter(|b| b["data"]["deployment"] == deployment)
        .map(|b| b["data"]["event"].as_str().unwrap_or("").to_string())
        .collect();
    events.sort();
    events
}

#[test]
fn events_are_signed_retried_until_taken_and_survive_a_killed_build() {
    let mut server = Server::start_with(
        &[
            "--notify-allow",
            "127.0.0.1",
            "--notify-retry",
            "300ms,300ms,300ms,300ms",
        ],
        &[],
    );
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    write_files(&site, &[("index.html", "<h1>one</h1>")]);
    let first = server.deploy_id(&site, "notified");

    // 500 twice, then 200 for everything.
    let statuses = [500, 500, 200];
    let rec = HttpRecorder::answering(&statuses);
    let added = server.cli(
        &site,
        &[
            "notify",
            "add",
            "--project",
            "notified",
            "--url",
            &rec.url("/deploys"),
            "--json",
        ],
    );
    added.assert_code(0);
    let hook: serde_json::Value = serde_json::from_str(&added.stdout).unwrap();
    let (hook_id, secret) = (
        hook["id"].as_str().unwrap().to_string(),
        hook["secret"].as_str().unwrap().to_string(),
    );
    assert_eq!(hook["events"].as_array().unwrap().len(), 6, "{hook}");

    write_files(&site, &[("index.html", "<h1>two</h1>")]);
    let second = server.deploy_id(&site, "notified");
    wait_until(
        "created and ready delivered",
        Duration::from_secs(20),
        || events_of(&delivered(&rec, &statuses), &second) == ["created", "ready"],
    );
    // Production back to the first: `rolled_back`; then forward again: `promoted`.
    server
        .cli(&site, &["promote", "notified", &first])
        .assert_code(0);
    server
        .cli(&site, &["promote", "notified", &second])
        .assert_code(0);
    wait_until(
        "rollback and promote delivered",
        Duration::from_secs(20),
        || {
            events_of(&delivered(&rec, &statuses), &first) == ["rolled_back"]
                && events_of(&delivered(&rec, &statuses), &second)
                    == ["created", "promoted", "ready"]
        },
    );

    // Every request signed; each message taken once (its retries carry the same id).
    let requests = rec.requests();
    assert!(requests.iter().all(|r| signed(r, &secret)), "{requests:?}");
    let got = delivered(&rec, &statuses);
    assert!(got.values().all(|bodies| bodies.len() == 1), "{got:?}");
    let ready = got
        .values()
        .flatten()
        .find(|b| b["type"] == "deployment.ready")
        .unwrap();
    assert_eq!(ready["data"]["project"], "notified");
    assert_eq!(ready["data"]["status"], "ready");
    assert_eq!(
        ready["data"]["url"],
        server
            .site_url(&format!("notified--{second}"), "")
            .trim_end_matches('/'),
        "{ready}"
    );
    // The two refused attempts are in the deliveries, with the answer that came.
    let out = server.cli(
        &site,
        &[
            "notify",
            "deliveries",
            &hook_id,
            "--project",
            "notified",
            "--json",
        ],
    );
    out.assert_code(0);
    let attempts: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    let retried: Vec<_> = attempts
        .iter()
        .filter(|a| a["outcome"] == "retrying")
        .collect();
    assert_eq!(retried.len(), 2, "{attempts:?}");
    assert!(retried.iter().all(|a| a["status"] == 500), "{attempts:?}");
    assert_eq!(
        attempts
            .iter()
            .filter(|a| a["outcome"] == "delivered")
            .count(),
        got.len(),
        "{attempts:?}"
    );

    // A build the server dies in: `failed` arrives after the restart.
    let slow = tmp.path().join("slow");
    write_files(
        &slow,
        &[
            (
                "cdeploy.toml",
                "[build]\ncommand = \"echo started; sleep 30\"\n",
            ),
            ("index.html", "slow"),
        ],
    );
    let killed = server.deploy_no_wait(&slow, "notified");
    server.wait_status(&killed, Duration::from_secs(30), |s| s == "building");
    server.kill9();
    assert!(events_of(&delivered(&rec, &statuses), &killed).len() <= 1);
    server.start_again();
    wait_until(
        "the killed build's failed event",
        Duration::from_secs(20),
        || events_of(&delivered(&rec, &statuses), &killed) == ["created", "failed"],
    );
    let got = delivered(&rec, &statuses);
    let failed = got
        .values()
        .flatten()
        .find(|b| b["data"]["deployment"] == killed.as_str() && b["data"]["event"] == "failed")
        .unwrap();
    assert!(
        failed["data"]["error"]
            .as_str()
            .unwrap()
            .contains("server stopped"),
        "{failed}"
    );
}

#[test]
fn endpoints_are_checked_and_need_an_admin() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    write_files(&site, &[("index.html", "x")]);
    server.deploy_id(&site, "guarded");
    let add = |url: &str, extra: &[&str]| {
        let mut args = vec!["notify", "add", "--project", "guarded", "--url", url];
        args.extend_from_slice(extra);
        server.cli(&site, &args)
    };
    // Not public and not allowed by the operator, not HTTP, credentials in it.
    for (url, why) in [
        ("http://127.0.0.1:9/x", "not a public address"),
        ("http://169.254.169.254/latest", "not a public address"),
        ("http://[::1]/x", "not a public address"),
        ("ftp://example.com/x", "http:// or https://"),
        ("https://user:pw@example.com/x", "no user or password"),
    ] {
        let out = add(url, &[]);
        assert_ne!(out.code, 0, "{url}: {}", out.stdout);
        assert!(out.stderr.contains(why), "{url}: {}", out.stderr);
    }
    let out = add("https://example.com/x", &["--events", "ready,sometimes"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("sometimes"), "{}", out.stderr);

    // A webhook URL is often its secret: listed without its path, whatever the format;
    // `--url -` reads it from stdin (not the command line).
    let slack = "https://hooks.slack.com/services/T0001/B0001/s3cr3tpath";
    server
        .cli_input(
            &site,
            &[
                "notify",
                "add",
                "--project",
                "guarded",
                "--format",
                "slack",
                "--url",
                "-",
            ],
            slack,
        )
        .assert_code(0);
    add("https://chat.example.com/hooks/s3cr3tkey", &[]).assert_code(0);
    let ls = server.cli(&site, &["notify", "ls", "--project", "guarded"]);
    ls.assert_code(0);
    assert!(
        ls.stdout.contains("https://hooks.slack.com/…"),
        "{}",
        ls.stdout
    );
    assert!(!ls.stdout.contains("s3cr3t"), "{}", ls.stdout);

    // A deploy token of the project reads the list but adds and removes nothing.
    let token = server.deploy_token("guarded");
    let env = [("CDEPLOY_TOKEN", token.as_str())];
    let ls = server.cli_env(
        &site,
        &["notify", "ls", "--project", "guarded", "--json"],
        &env,
    );
    ls.assert_code(0);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&ls.stdout).unwrap();
    assert!(
        listed.iter().all(|n| n.get("secret").is_none()),
        "{listed:?}"
    );
    let out = server.cli_env(
        &site,
        &[
            "notify",
            "add",
            "--project",
            "guarded",
            "--url",
            "https://example.com/x",
        ],
        &env,
    );
    assert_ne!(out.code, 0, "{}", out.stdout);
    let id = listed[0]["id"].as_str().unwrap();
    let out = server.cli_env(&site, &["notify", "rm", id, "--project", "guarded"], &env);
    assert_ne!(out.code, 0, "{}", out.stdout);
    server
        .cli(&site, &["notify", "rm", id, "--project", "guarded"])
        .assert_code(0);
}
