//! A database an older server made (its schema kept in code, a version marker in the
//! database) upgrades in place when today's server starts on it: Postgres, loaded from
//! the store's fixture (server/tests/fixtures), then used as a user would.

use std::process::Command;

use cdeploy_tests::services::Postgres;
use cdeploy_tests::*;
use sha2::{Digest, Sha256};

/// The store's Postgres fixture: marker 10, a few rows of every table.
fn fixture() -> std::path::PathBuf {
    repo_root().join("server/tests/fixtures/store-v10.postgres.sql")
}

/// Runs SQL with psql (the fixture is a dump: psql is what loads it).
fn psql(url: &str, args: &[&str]) {
    let out = Command::new("psql")
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-d", url])
        .args(args)
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn postgres_of_an_older_server_upgrades_in_place() {
    let pg = Postgres::start();
    let url = pg.url();
    psql(&url, &["-f", &fixture().display().to_string()]);
    // An admin token this test holds, stored as the old server stored tokens.
    let token = format!("cdp_{}", "u".repeat(40));
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    psql(
        &url,
        &[
            "-c",
            &format!(
                "INSERT INTO tokens (hash, name, created_at, scope, id, projects) \
                 VALUES ('{hash}', 'upgrade', '2026-03-01T10:00:00.000Z', 'admin', 'tok_upgrade000000000', '')"
            ),
        ],
    );

    let mut server = Server::start_with(&["--database", &url], &[]);
    // No admin token was made (the database has tokens): the CLI and client use ours.
    std::fs::write(server.data_dir().join("admin-token"), format!("{token}\n")).unwrap();
    let api = server.client();
    check_old_rows(&api);

    // New writes: a deployment through the CLI becomes production (of a project without
    // stored secrets: their fixture values open with no key), a token is made, a deploy
    // hook removed; the audit log records them beside the old entries.
    let site = tempfile::tempdir().unwrap();
    write_files(site.path(), &[("index.html", "<h1>after the upgrade</h1>")]);
    server
        .cli(site.path(), &["deploy", "--slug", "docs"])
        .assert_code(0);
    assert!(server.site("docs", "/").body.contains("after the upgrade"));
    let created = api.post(
        "/v1/tokens",
        &serde_json::json!({"name": "ci2", "role": "read", "projects": ["web"]}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let hooks = api.get("/v1/projects/web/deploy-hooks").json();
    let hook = hooks.as_array().unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        api.delete(&format!("/v1/projects/web/deploy-hooks/{hook}"))
            .status,
        204
    );
    let audit = api.get("/v1/audit?limit=50").text;
    assert!(
        audit.contains("POST /v1/tokens") && audit.contains("deployment webready00000001"),
        "{audit}"
    );

    // Starting again changes nothing: no step runs twice, every row still reads.
    server.restart();
    check_old_rows(&server.client());
    let tokens = server.client().get("/v1/tokens").json();
    assert_eq!(tokens.as_array().unwrap().len(), 4, "{tokens}");
    // The server stops before its database does.
    drop(server);
    drop(pg);
}

/// The fixture's rows, as the API shows them.
fn check_old_rows(api: &Api) {
    let projects = api.get("/v1/projects").json();
    let slugs: Vec<&str> = projects
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["slug"].as_str().unwrap())
        .collect();
    assert!(
        slugs.contains(&"web") && slugs.contains(&"docs"),
        "{projects}"
    );

    let first = api.get("/v1/deployments/webready00000001").json();
    assert_eq!(first["status"], "ready", "{first}");
    assert_eq!(first["git"]["ref"], "main", "{first}");
    let preview = api.get("/v1/deployments/webpreview000002").json();
    assert_eq!(
        (preview["preview"].as_bool(), preview["branch"].as_str()),
        (Some(true), Some("feat/login")),
        "{preview}"
    );
    let failed = api.get("/v1/deployments/webfailed0000003").json();
    assert_eq!(failed["error"], "build failed: exit status 1", "{failed}");
    let listed = api.get("/v1/projects/web/deployments").text;
    assert!(
        listed.contains("webready00000001") && listed.contains("webfailed0000003"),
        "{listed}"
    );

    let tokens = api.get("/v1/tokens").text;
    assert!(
        tokens.contains("tok_ci00000000000000") && tokens.contains("\"docs\""),
        "{tokens}"
    );
    let refusals = api.get("/v1/audit?status=403").json();
    assert_eq!(refusals[0]["count"], 3, "{refusals}");
    let deliveries = api.get("/v1/projects/web/deliveries").text;
    assert!(deliveries.contains("gh-delivery-1"), "{deliveries}");
}
