//! Scoped tokens: roles per project, revocation, expiry, and the audit log.

use std::time::Duration;

use cdeploy_tests::*;

fn site(dir: &std::path::Path, text: &str) {
    write_files(dir, &[("index.html", &format!("<h1>{text}</h1>"))]);
}

#[test]
fn a_deploy_token_deploys_its_project_and_nothing_else() {
    let server = Server::start();
    let (alpha, beta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    site(alpha.path(), "alpha v1");
    site(beta.path(), "beta v1");
    server
        .cli(alpha.path(), &["deploy", "--slug", "alpha"])
        .assert_code(0);
    server
        .cli(beta.path(), &["deploy", "--slug", "beta"])
        .assert_code(0);

    let ci = server.create_token(&[
        "--name",
        "ci",
        "--project",
        "alpha",
        "--role",
        "deploy",
        "--expires",
        "30d",
    ]);
    let as_ci =
        |dir: &std::path::Path, args: &[&str]| server.cli_env(dir, args, &[("CDEPLOY_TOKEN", &ci)]);

    // Its own project: deploys and reads the log.
    site(alpha.path(), "alpha v2");
    let out = as_ci(alpha.path(), &["deploy", "--slug", "alpha", "--json"]);
    out.assert_code(0);
    let id = out.json()["id"].as_str().unwrap().to_string();
    assert!(server.site("alpha", "/").body.contains("alpha v2"));
    as_ci(alpha.path(), &["logs", "alpha"]).assert_code(0);
    let whoami = as_ci(alpha.path(), &["whoami", "--json"]);
    whoami.assert_code(0);
    assert_eq!(whoami.json()["name"], "ci");
    assert_eq!(whoami.json()["role"], "deploy");

    // Anything else: 403, naming the token and why.
    let out = as_ci(beta.path(), &["deploy", "--slug", "beta", "--json"]);
    out.assert_code(3);
    let msg = out.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("\"ci\"") && msg.contains("not on project beta"),
        "{msg}"
    );
    assert!(server.site("beta", "/").body.contains("beta v1"));
    let api = server.client().with_token(&ci);
    let beta_deploys = api.get("/v1/projects/beta/deployments");
    assert_eq!(beta_deploys.status, 403, "{}", beta_deploys.text);
    for (what, r) in [
        ("project beta", api.get("/v1/projects/beta")),
        ("tokens", api.get("/v1/tokens")),
        ("audit", api.get("/v1/audit")),
        ("metrics", api.get("/metrics")),
        (
            "a new token",
            api.post(
                "/v1/tokens",
                &serde_json::json!({"name": "x", "role": "admin"}),
            ),
        ),
        ("deleting its own project", api.delete("/v1/projects/alpha")),
        // Stored secrets are for admins, even of its own project.
        ("its project's env", api.get("/v1/projects/alpha/env")),
        (
            "its project's env values",
            api.get("/v1/projects/alpha/env/values?target=production"),
        ),
        (
            "another project's env",
            api.put(
                "/v1/projects/beta/env/KEY",
                &serde_json::json!({"value": "x"}),
            ),
        ),
        ("its project's git link", api.get("/v1/projects/alpha/git")),
        (
            "its project's preview protection",
            api.get("/v1/projects/alpha/protection"),
        ),
        (
            "creating another project",
            api.post("/v1/projects", &serde_json::json!({"slug": "gamma"})),
        ),
    ] {
        assert_eq!(r.status, 403, "{what}: {}", r.text);
        assert!(r.text.contains("\"forbidden\""), "{what}: {}", r.text);
    }
    // Another project's deployment, by id.
    let beta_id = server.client().get("/v1/projects/beta/deployments").json()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(api.get(&format!("/v1/deployments/{beta_id}")).status, 403);
    assert_eq!(api.get(&format!("/v1/deployments/{id}")).status, 200);
    // The project list shows only its own.
    let listed = api.get("/v1/projects").json();
    let slugs: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["alpha"]);

    // A read token reads, and does not deploy.
    let viewer = server.create_token(&["--name", "viewer", "--project", "alpha", "--role", "read"]);
    let out = server.cli_env(
        alpha.path(),
        &["deploy", "--slug", "alpha", "--json"],
        &[("CDEPLOY_TOKEN", &viewer)],
    );
    out.assert_code(3);
    assert!(
        out.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deploy"),
        "{}",
        out.stdout
    );
    assert_eq!(
        server
            .client()
            .with_token(&viewer)
            .get("/v1/projects/alpha")
            .status,
        200
    );

    // Revoked: 401 at once.
    let tmp = tempfile::tempdir().unwrap();
    server
        .cli(tmp.path(), &["tokens", "revoke", "ci"])
        .assert_code(0);
    let r = api.get("/v1/projects/alpha");
    assert_eq!(r.status, 401, "{}", r.text);

    // The audit log: each action under the token's name, refusals too.
    let audit = server.client().get("/v1/audit?limit=200").json();
    let entries = audit.as_array().unwrap();
    let by = |token: &str, action: &str, status: u64| {
        entries
            .iter()
            .any(|e| e["token"] == token && e["action"] == action && e["status"] == status)
    };
    assert!(
        by("ci", "POST /v1/projects/{slug}/deployments", 202),
        "{audit:#}"
    );
    assert!(
        by("ci", "POST /v1/projects/{slug}/deployments", 403),
        "{audit:#}"
    );
    assert!(by("ci", "DELETE /v1/projects/{slug}", 403), "{audit:#}");
    assert!(by("admin", "POST /v1/tokens", 201), "{audit:#}");
    assert!(by("admin", "DELETE /v1/tokens/{id}", 204), "{audit:#}");
    let out = server.cli(tmp.path(), &["audit", "--limit", "5"]);
    out.assert_code(0);
    assert!(
        out.stdout.contains("DELETE /v1/tokens/{id}"),
        "{}",
        out.stdout
    );
}

#[test]
fn expired_and_unknown_tokens_get_401_and_the_last_admin_stays() {
    let server = Server::start();
    let short = server.create_token(&["--name", "short", "--role", "admin", "--expires", "1s"]);
    let api = server.client().with_token(&short);
    // Accepted until its second is up, then refused: polled, not slept through.
    let mut r = api.get("/v1/projects");
    wait_until(
        "the 1-second token to expire",
        Duration::from_secs(10),
        || {
            r = api.get("/v1/projects");
            r.status != 200
        },
    );
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.text.contains("expired"), "{}", r.text);

    // Bad input: a clear 400 each.
    let admin = server.client();
    for (body, says) in [
        (serde_json::json!({"name": "", "role": "admin"}), "name"),
        (
            serde_json::json!({"name": "d", "role": "deploy"}),
            "at least one",
        ),
        (
            serde_json::json!({"name": "d", "role": "admin", "projects": ["a"]}),
            "leave out projects",
        ),
        (
            serde_json::json!({"name": "d", "role": "deploy", "projects": ["Not A Slug"]}),
            "invalid slug",
        ),
        (serde_json::json!({"name": "d", "role": "root"}), "role"),
        (
            serde_json::json!({"name": "d", "role": "admin", "expires_in_secs": 0}),
            "expires_in_secs",
        ),
    ] {
        let r = admin.post("/v1/tokens", &body);
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains(says), "{body}: {}", r.text);
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = server.cli(
        tmp.path(),
        &["tokens", "create", "--name", "x", "--expires", "soon"],
    );
    out.assert_code(2);

    // The last admin token cannot be revoked (an expired one does not count).
    let tokens = admin.get("/v1/tokens").json();
    let id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = admin.delete(&format!("/v1/tokens/{id}"));
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("last admin token"), "{}", r.text);
    let ls = server.cli(tmp.path(), &["tokens", "ls"]);
    ls.assert_code(0);
    assert!(
        ls.stdout.contains("short") && ls.stdout.contains("admin"),
        "{}",
        ls.stdout
    );
    assert!(!ls.stdout.contains(&short), "a secret is never listed");

    // logout forgets the saved token.
    server.cli(tmp.path(), &["login"]).assert_code(0);
    let out = server.cli_env(tmp.path(), &["logout"], &[]);
    out.assert_code(0);
    let out = server.cli_env(tmp.path(), &["whoami"], &[]);
    out.assert_code(3);
}

/// A read token that floods refused requests cannot bury the admin's changes: refusals
/// are counted per minute, not a row each, and filters and pages find the changes.
#[test]
fn refusals_cannot_bury_the_audit_log() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[("index.html", "hi")]);
    server
        .cli(tmp.path(), &["deploy", "--prebuilt", ".", "--slug", "site"])
        .assert_code(0);
    // The admin's changes, each named in its entry.
    server.create_token(&["--name", "ci", "--project", "site", "--role", "deploy"]);
    server
        .cli_input(
            tmp.path(),
            &[
                "env",
                "add",
                "API_KEY",
                "--project",
                "site",
                "--target",
                "production",
            ],
            "s3cret-value",
        )
        .assert_code(0);
    let reader = server.create_token(&["--name", "snoop", "--project", "site", "--role", "read"]);
    let snoop = server.client().with_token(&reader);
    // 1,100 refusals inside the default burst, each naming another project (a path
    // the caller is free to vary).
    for i in 0..1100 {
        let r = snoop.delete(&format!("/v1/projects/p{i}/env/NAME"));
        assert_eq!(r.status, 403, "{}", r.text);
    }
    let admin = server.client();
    // Compact: the flood is a few entries with counts, not 1,100 rows.
    let refused = admin
        .get("/v1/audit?token=snoop&status=4xx&limit=1000")
        .json();
    let refused = refused.as_array().unwrap();
    let total: u64 = refused.iter().map(|e| e["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 1100, "{refused:#?}");
    assert!(refused.len() <= 2, "{} entries", refused.len());
    // The admin's entries, found by filter, each saying what changed.
    let tokens = admin.get("/v1/audit?token=admin&action=tokens").json();
    let details: Vec<&str> = tokens
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("\"ci\"") && d.contains("deploy") && d.contains("site")),
        "{details:?}"
    );
    let env = admin
        .get("/v1/audit?project=site&action=env&status=2xx")
        .json();
    let env = env.as_array().unwrap();
    assert!(
        env.iter().any(|e| e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("API_KEY") && d.contains("production"))),
        "{env:#?}"
    );
    assert!(!format!("{env:?}").contains("s3cret-value"));
    let deployed = admin.get("/v1/audit?action=deployments&status=202").json();
    assert!(
        deployed.as_array().unwrap()[0]["detail"]
            .as_str()
            .unwrap()
            .contains("production"),
        "{deployed:#}"
    );
    // Pages: a limit of 1, then the page before its cursor.
    let first = admin.get("/v1/audit?limit=1").json();
    let cursor = first[0]["cursor"].as_str().unwrap().to_string();
    let second = admin
        .get(&format!("/v1/audit?limit=1&before={cursor}"))
        .json();
    assert_ne!(first[0], second[0]);
    // Bad filters are clear errors.
    for bad in ["status=9xx", "since=yesterday", "before=abc", "limit=0"] {
        let r = admin.get(&format!("/v1/audit?{bad}"));
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
    }
    // The CLI: filters and the count.
    let out = server.cli(
        tmp.path(),
        &["audit", "--by", "snoop", "--status", "403", "--since", "1h"],
    );
    out.assert_code(0);
    assert!(out.stdout.contains('×'), "{}", out.stdout);
    let out = server.cli(tmp.path(), &["audit", "--since", "soon"]);
    out.assert_code(2);
}
