//! The API without a socket: the router of a whole server (SQLite and a storage folder
//! in a temporary directory, no embedded proxy) driven with `oneshot`. Validation,
//! authentication and roles, idempotency and the error body's shape, in milliseconds.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use clap::Parser;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::service::App;

struct TestServer {
    app: Arc<App>,
    admin: String,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let args = crate::config::Args::parse_from([
            "cdeploy-server",
            "--data-dir",
            data.to_str().unwrap(),
            "--cache-dir",
            dir.path().join("cache").to_str().unwrap(),
            "--proxy-listen",
            "none",
            // No build runs here: the sandbox's tools need not be installed.
            "--unsafe-no-sandbox",
        ]);
        let config = crate::config::Config::resolve(args).unwrap();
        let (app, _) = crate::assemble(
            config,
            false,
            "127.0.0.1:9000".parse().unwrap(),
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
        let admin = std::fs::read_to_string(data.join("admin-token"))
            .unwrap()
            .trim()
            .to_string();
        TestServer {
            app,
            admin,
            _dir: dir,
        }
    }

    /// One request; the answer's status and JSON body (`Null` when empty or not JSON).
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = super::router(self.app.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, &[], None).await
    }
}

/// Every error is `{"error":{"code","message"}}` with a code of the documented set.
fn assert_error(answer: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        answer.1
    );
}

#[tokio::test]
async fn tokens_and_roles_decide_who_gets_in() {
    let s = TestServer::start().await;
    assert_error(
        &s.get("/v1/projects", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        &s.get("/v1/projects", Some("cdp_not_a_token")).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_eq!(
        s.get("/v1/projects", Some(&s.admin)).await.0,
        StatusCode::OK
    );
    // Health and the API's description need no token.
    assert_eq!(s.get("/healthz", None).await.0, StatusCode::OK);
    assert_eq!(s.get("/v1/openapi.json", None).await.0, StatusCode::OK);

    // A read token of one project: reads it, writes nothing, sees no other.
    let (status, created) = s
        .call(
            Method::POST,
            "/v1/tokens",
            Some(&s.admin),
            &[],
            Some(json!({"name": "ci-read", "role": "read", "projects": ["web"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let read = created["token"].as_str().unwrap().to_string();
    let (status, body) = s.get("/v1/projects/web/deployments", Some(&read)).await;
    assert!(
        status == StatusCode::OK || status == StatusCode::NOT_FOUND,
        "{status} {body}"
    );
    assert_error(
        &s.call(
            Method::POST,
            "/v1/projects/web/deployments",
            Some(&read),
            &[],
            Some(json!({"files": {}})),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &s.get("/v1/projects/other/deployments", Some(&read)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &s.get("/v1/tokens", Some(&read)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_its_code() {
    let s = TestServer::start().await;
    let admin = Some(s.admin.as_str());
    assert_error(
        &s.call(
            Method::POST,
            "/v1/projects/Not_A_Slug/deployments",
            admin,
            &[],
            Some(json!({"files": {}})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_slug",
    );
    // Not JSON, or JSON of another shape.
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/projects/web/deployments",
            admin,
            &[],
            Some(json!({"files": "not a map"})),
        )
        .await;
    assert!(status.is_client_error(), "{status} {body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    // A file map naming a blob nobody uploaded.
    let missing = "0".repeat(64);
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/projects/web/deployments",
            admin,
            &[],
            Some(json!({"files": {"/index.html": missing}})),
        )
        .await;
    assert!(status.is_client_error(), "{status} {body}");
    assert_eq!(body["error"]["code"], "missing_files", "{body}");
    assert_error(
        &s.get("/v1/deployments/dpl_nope", admin).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &s.get("/v1/no/such/route", admin).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn an_idempotency_key_answers_the_same_deployment() {
    let s = TestServer::start().await;
    let admin = Some(s.admin.as_str());
    let page = b"<h1>once</h1>";
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(page));
    let (status, _) = s
        .call(Method::PUT, &format!("/v1/files/{hash}"), admin, &[], None)
        .await;
    assert!(
        status.is_client_error(),
        "an empty body is not the file: {status}"
    );
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/v1/files/{hash}"))
        .header("authorization", format!("Bearer {}", s.admin))
        .body(Body::from(&page[..]))
        .unwrap();
    let resp = super::router(s.app.clone()).oneshot(req).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let create = || {
        s.call(
            Method::POST,
            "/v1/projects/once/deployments",
            admin,
            &[("idempotency-key", "retry-me-1")],
            Some(json!({"files": {"/index.html": hash}})),
        )
    };
    let (a, b) = (create().await, create().await);
    assert!(a.0.is_success(), "{}", a.1);
    assert!(b.0.is_success(), "{}", b.1);
    assert_eq!(a.1["id"], b.1["id"]);
    let (_, list) = s.get("/v1/projects/once/deployments", admin).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}
