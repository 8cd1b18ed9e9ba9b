//! Trusted publishing against a test OIDC issuer on loopback (its own keys, OpenID
//! discovery and JWKS, tokens shaped like GitHub's and GitLab's documented claims): a
//! matching token deploys with no stored token (as GitHub Actions hands it out, and as
//! GitLab CI puts it in a variable); every wrong claim, an expired token, a wrong
//! audience, a bad signature and a replayed token are refused with the reason, which the
//! audit log keeps with the claims.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

use cdeploy_tests::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// A loopback OIDC issuer: discovery, its key set, and GitHub's token request endpoint
/// (`/token?audience=…`, bearer `request-token`), which answers the claims in `next`.
struct Issuer {
    url: String,
    key: EncodingKey,
    next: Arc<Mutex<Value>>,
}

fn signing_key() -> (EncodingKey, Value) {
    let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let mut jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap(),
    )
    .unwrap();
    jwk["kid"] = json!("key-1");
    (key, jwk)
}

impl Issuer {
    fn start() -> Issuer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let (key, jwk) = signing_key();
        let next = Arc::new(Mutex::new(Value::Null));
        let issuer = Issuer {
            url: url.clone(),
            key,
            next: next.clone(),
        };
        let signer = issuer.key.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = std::io::BufReader::new(&stream);
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let mut auth = String::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if h.to_ascii_lowercase().starts_with("authorization:") {
                        auth = h.trim().to_string();
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let body = if path == "/.well-known/openid-configuration" {
                    json!({"issuer": url, "jwks_uri": format!("{url}/jwks")})
                } else if path == "/jwks" {
                    json!({"keys": [jwk]})
                } else if path.starts_with("/token?") && auth.ends_with("Bearer request-token") {
                    let audience = path.split("audience=").nth(1).unwrap_or("");
                    let audience = percent_encoding::percent_decode_str(audience)
                        .decode_utf8_lossy()
                        .to_string();
                    let mut claims = next.lock().unwrap().clone();
                    claims["aud"] = json!(audience);
                    json!({"value": sign(&signer, &claims)})
                } else {
                    Value::Null
                };
                let (status, body) = match body {
                    Value::Null => ("404 Not Found", "{}".to_string()),
                    b => ("200 OK", b.to_string()),
                };
                let mut w = &stream;
                let _ = write!(w, "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            }
        });
        issuer
    }
}

fn sign(key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("key-1".into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims as GitHub Actions' tokens carry them (docs.github.com, "About security
/// hardening with OpenID Connect").
fn github_claims(iss: &str, aud: &str, jti: &str) -> Value {
    let t = now();
    json!({
        "jti": jti, "sub": "repo:octo-org/octo-repo:environment:production",
        "environment": "production", "aud": aud, "ref": "refs/heads/main",
        "sha": "example-sha", "repository": "octo-org/octo-repo", "repository_owner": "octo-org",
        "repository_owner_id": "9919", "repository_id": "1296269", "actor_id": "12",
        "actor": "octocat", "workflow": "deploy", "run_id": "7",
        "workflow_ref": "octo-org/octo-repo/.github/workflows/deploy.yml@refs/heads/main",
        "event_name": "push", "ref_type": "branch", "iss": iss,
        "nbf": t - 5, "iat": t - 5, "exp": t + 300
    })
}

/// Claims as GitLab CI's `id_tokens` carry them (docs.gitlab.com, "OpenID Connect
/// (OIDC) Authentication Using ID Tokens").
fn gitlab_claims(iss: &str, aud: &str, jti: &str) -> Value {
    let t = now();
    json!({
        "namespace_id": "72", "namespace_path": "my-group", "project_id": "20",
        "project_path": "my-group/my-project", "user_id": "1", "user_login": "sample-user",
        "pipeline_id": "574", "pipeline_source": "push", "job_id": "302",
        "ref": "main", "ref_type": "branch", "ref_protected": "true", "environment": "production",
        "jti": jti, "iss": iss, "iat": t, "nbf": t - 5, "exp": t + 300,
        "sub": "project_path:my-group/my-project:ref_type:branch:ref:main", "aud": aud
    })
}

#[test]
fn ci_identity_tokens_deploy_and_every_wrong_one_is_refused_with_its_reason() {
    let issuer = Issuer::start();
    let (api_port, proxy_port) = (free_port(), free_port());
    let api = format!("http://127.0.0.1:{api_port}");
    let server = Server::start_at(api_port, proxy_port, &["--api-url", &api], &[]);
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    write_files(&site, &[("index.html", "<h1>first</h1>")]);
    server.deploy_id(&site, "ci-site");
    let trust = |claims: &[&str]| {
        let mut args = vec![
            "trust",
            "add",
            "--project",
            "ci-site",
            "--issuer",
            &issuer.url,
        ];
        for c in claims {
            args.extend(["--claim", c]);
        }
        server.cli(&site, &args)
    };
    trust(&[
        "repository_id=1296269",
        "repository_owner_id=9919",
        "ref=refs/heads/main",
        "workflow_ref=octo-org/octo-repo/.github/workflows/deploy.yml@refs/heads/main",
    ])
    .assert_code(0);
    trust(&[
        "project_id=20",
        "namespace_id=72",
        "ref=main",
        "environment=production",
    ])
    .assert_code(0);
    // GitHub's issuer must bind the numeric ids.
    let out = server.cli(
        &site,
        &[
            "trust",
            "add",
            "--project",
            "ci-site",
            "--github",
            "--claim",
            "repository=octo-org/octo-repo",
        ],
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("repository_id and repository_owner_id"),
        "{}",
        out.stderr
    );

    // No stored token: the CLI trades the job's identity for one (no login, no CDEPLOY_TOKEN).
    let ci = |extra: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(bin("cdeploy"));
        cmd.current_dir(&site)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("HOME", tmp.path())
            .env("XDG_CONFIG_HOME", tmp.path().join("ci-config"))
            .args(["--api", &api, "deploy", "--slug", "ci-site", "--json"]);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        CliOutput::from(cmd.output().unwrap())
    };
    write_files(&site, &[("index.html", "<h1>from GitHub Actions</h1>")]);
    *issuer.next.lock().unwrap() = github_claims(&issuer.url, "", "gh-1");
    let out = ci(&[
        (
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            &format!("{}/token?api-version=2.0", issuer.url),
        ),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "request-token"),
    ]);
    out.assert_code(0);
    assert!(out.stderr.contains("identity"), "{}", out.stderr);
    assert_eq!(
        server.site("ci-site", "/").body,
        "<h1>from GitHub Actions</h1>"
    );
    write_files(&site, &[("index.html", "<h1>from GitLab CI</h1>")]);
    let gitlab = sign(&issuer.key, &gitlab_claims(&issuer.url, &api, "gl-1"));
    ci(&[("CDEPLOY_OIDC_TOKEN", &gitlab)]).assert_code(0);
    assert_eq!(server.site("ci-site", "/").body, "<h1>from GitLab CI</h1>");

    // Each refusal names its reason.
    let exchange = |token: &str| {
        let resp = reqwest::blocking::Client::new()
            .post(format!("{api}/v1/oidc/exchange"))
            .json(&json!({"project": "ci-site", "token": token}))
            .send()
            .unwrap();
        {
            let status = resp.status().as_u16();
            let body: Value = resp.json().unwrap();
            // A refusal's reason, or the whole answer.
            match body["error"]["message"].as_str() {
                Some(m) => (status, m.to_string()),
                None => (status, body.to_string()),
            }
        }
    };
    let claims = |jti: &str, change: &dyn Fn(&mut Value)| {
        let mut c = github_claims(&issuer.url, &api, jti);
        change(&mut c);
        sign(&issuer.key, &c)
    };
    let (other_key, _) = signing_key();
    // (token, what the caller is told, what the audit log keeps): the caller learns
    // which claim differs, never the trust's values.
    let mismatch = |c: &str| format!("the token's {c} claim does not match the project's trust");
    let cases: Vec<(String, String, &str)> = vec![
        (
            claims("r1", &|c| c["repository_id"] = json!("666")),
            mismatch("repository_id"),
            "claim repository_id is \"666\"",
        ),
        (
            claims("r2", &|c| c["repository_owner_id"] = json!("1")),
            mismatch("repository_owner_id"),
            "claim repository_owner_id is \"1\"",
        ),
        (
            claims("r3", &|c| c["ref"] = json!("refs/heads/evil")),
            mismatch("ref"),
            "claim ref is \"refs/heads/evil\"",
        ),
        (
            claims("r4", &|c| {
                c["workflow_ref"] =
                    json!("octo-org/octo-repo/.github/workflows/other.yml@refs/heads/main")
            }),
            mismatch("workflow_ref"),
            "claim workflow_ref is \"octo-org/octo-repo/.github/workflows/other.yml",
        ),
        (
            claims("r5", &|c| {
                c["exp"] = json!(now() - 600);
                c["iat"] = json!(now() - 900);
            }),
            "the token expired".into(),
            "the token expired",
        ),
        (
            claims("r6", &|c| c["aud"] = json!("https://another.example.com")),
            "audience".into(),
            "audience (aud) is not this server",
        ),
        (
            sign(&other_key, &github_claims(&issuer.url, &api, "r7")),
            "signature does not verify".into(),
            "signature does not verify",
        ),
        (
            gitlab.clone(),
            "was used already".into(),
            "was used already",
        ),
        (
            claims("r8", &|c| {
                c["iss"] = json!("https://token.actions.githubusercontent.com")
            }),
            "does not trust this token's issuer".into(),
            "does not trust issuer \"https://token.actions.githubusercontent.com\"",
        ),
        ("not-a-jwt".to_string(), "not a JWT".into(), "not a JWT"),
    ];
    for (token, told, _) in &cases {
        let (status, body) = exchange(token);
        assert_eq!(status, 401, "{told}: {body}");
        assert!(body.contains(told.as_str()), "{told}: {body}");
        assert!(
            !body.contains("1296269") && !body.contains("trust_"),
            "{body}"
        );
    }

    // The audit log: each exchange with its outcome, reason and the token's claims.
    let audit = server.cli(&site, &["audit", "--action", "oidc", "--json"]);
    audit.assert_code(0);
    let entries: Vec<Value> = serde_json::from_str(&audit.stdout).unwrap();
    let details: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert_eq!(
        entries.iter().filter(|e| e["status"] == 201).count(),
        2,
        "{details:?}"
    );
    for (_, _, kept) in &cases {
        assert!(
            details.iter().any(|d| d.contains(kept)),
            "{kept} not in {details:?}"
        );
    }
    assert!(
        details
            .iter()
            .any(|d| d.contains("repository_id=666") && d.contains("actor=octocat")),
        "{details:?}"
    );
    // The token it gave deploys this project only, and dies in minutes.
    let (_, body) = exchange(&claims("fresh", &|_| {}));
    let answer: Value = serde_json::from_str(&body).unwrap();
    let token = answer["token"].as_str().unwrap();
    let other = server.cli_env(
        &site,
        &["deploy", "--slug", "other-site", "--json"],
        &[("CDEPLOY_TOKEN", token)],
    );
    assert_ne!(other.code, 0, "{}", other.stdout);
    let expires = answer["expires_at"].as_str().unwrap();
    assert!(
        expires > "2000" && wait_secs_until(expires) <= 600,
        "{answer}"
    );
    // Without an identity (and no stored token) the CLI deploys nothing.
    assert_ne!(ci(&[]).code, 0);
    // A flood from one address is cut off before any work (20 a minute), and its
    // refusals of one kind share an audit entry a minute.
    let statuses: Vec<u16> = (0..25).map(|_| exchange("not-a-jwt").0).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let audit = server.cli(&site, &["audit", "--action", "oidc", "--json"]);
    let entries: Vec<Value> = serde_json::from_str(&audit.stdout).unwrap();
    let not_jwt: Vec<&Value> = entries
        .iter()
        .filter(|e| {
            e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("not a JWT"))
        })
        .collect();
    // (Two when a minute turned between the first one and the flood.)
    assert!(not_jwt.len() <= 2, "{not_jwt:?}");
}

/// Seconds from now until an RFC 3339 time.
fn wait_secs_until(t: &str) -> u64 {
    let out = std::process::Command::new("date")
        .args(["-d", t, "+%s"])
        .output()
        .unwrap();
    let at: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    at.saturating_sub(now())
}
