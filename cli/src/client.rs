//! The API client: bearer auth, JSON in and out, errors mapped to exit statuses with
//! advice a person can act on.

use std::time::Duration;

use cdeploy_core::api::{self, ErrorBody};
use cdeploy_core::credentials::Credentials;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::exit::CliError;
use crate::Globals;

pub struct Client {
    pub api: String,
    /// A token given explicitly (flag or environment) is never replaced by a saved one.
    explicit_token: bool,
    token: std::sync::Mutex<Option<String>>,
    http: reqwest::Client,
}

/// How long the CLI waits for a server on this machine that is still starting (the
/// quick start runs `cdeploy-server &` and `cdeploy deploy` back to back).
const LOCAL_STARTUP_GRACE: Duration = Duration::from_secs(5);

/// An API error answer, kept whole so callers can react to specific codes.
pub struct ApiFailure {
    pub status: StatusCode,
    pub body: Option<ErrorBody>,
}

impl Client {
    pub fn new(g: &Globals) -> Result<Client, CliError> {
        let explicit_token = g.token.is_some();
        let token = g
            .token
            .clone()
            .or_else(|| Credentials::load().token_for(&g.api).map(str::to_string));
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .user_agent(concat!("cdeploy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::api("client", format!("cannot create the HTTP client: {e}")))?;
        Ok(Client {
            api: g.api.clone(),
            explicit_token,
            token: std::sync::Mutex::new(token),
            http,
        })
    }

    pub fn token(&self) -> Option<String> {
        self.token.lock().expect("not poisoned").clone()
    }

    /// A request to the API; the token is added when it is sent.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.api))
    }

    fn is_local(&self) -> bool {
        let host = url::Url::parse(&self.api)
            .ok()
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()));
        host.is_some_and(|h| {
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
    }

    /// Sends a request — retrying only while a server on this machine is still starting —
    /// and returns the decoded answer or the API failure.
    pub async fn send_raw<T: DeserializeOwned>(
        &self,
        rb: RequestBuilder,
    ) -> Result<Result<T, ApiFailure>, CliError> {
        let started = std::time::Instant::now();
        let resp = loop {
            let mut attempt = rb.try_clone().expect("API requests have in-memory bodies");
            if let Some(t) = self.token() {
                attempt = attempt.bearer_auth(t);
            }
            let waiting = self.is_local() && started.elapsed() < LOCAL_STARTUP_GRACE;
            match attempt.send().await {
                Err(e) if e.is_connect() && waiting => {}
                Err(e) => return Err(self.transport_error(e)),
                Ok(r)
                    if r.status() == StatusCode::UNAUTHORIZED
                        && waiting
                        && !self.explicit_token =>
                {
                    // A server's first start saves the admin token for the local CLI.
                    let saved = Credentials::load().token_for(&self.api).map(str::to_string);
                    match saved {
                        Some(t) if Some(&t) != self.token().as_ref() => {
                            *self.token.lock().expect("not poisoned") = Some(t);
                            continue;
                        }
                        Some(_) => break r,
                        None => {}
                    }
                }
                Ok(r) => break r,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let status = resp.status();
        if status.is_success() {
            let text = resp.text().await.map_err(|e| self.transport_error(e))?;
            let text = if text.is_empty() {
                "null".to_string()
            } else {
                text
            };
            return serde_json::from_str(&text).map(Ok).map_err(|e| {
                CliError::api(
                    "bad_response",
                    format!("unexpected answer from {}: {e}", self.api),
                )
            });
        }
        let body = resp.json::<ErrorBody>().await.ok();
        Ok(Err(ApiFailure { status, body }))
    }

    pub async fn send<T: DeserializeOwned>(&self, rb: RequestBuilder) -> Result<T, CliError> {
        self.send_raw(rb).await?.map_err(|f| self.failure(f))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub fn failure(&self, f: ApiFailure) -> CliError {
        let (code, message) = match f.body {
            Some(b) => (b.error.code, b.error.message),
            None => (
                "http_error".to_string(),
                format!("the server answered {}", f.status),
            ),
        };
        let err = CliError::api(code, message);
        if f.status == StatusCode::UNAUTHORIZED {
            let hint = match self.token() {
                None => format!(
                    "no token for {}: run `cdeploy login --api {}` or set CDEPLOY_TOKEN",
                    self.api, self.api
                ),
                Some(_) => format!(
                    "the token was refused by {}: run `cdeploy login` again or check CDEPLOY_TOKEN",
                    self.api
                ),
            };
            return err.with_hint(hint);
        }
        err
    }

    pub fn transport_error(&self, e: reqwest::Error) -> CliError {
        if e.is_connect() {
            CliError::api(
                "unreachable",
                format!("cannot reach the cdeploy server at {}", self.api),
            )
            .with_hint(
                "start it with `cdeploy-server` (or pass --api / set CDEPLOY_API to where it runs)",
            )
        } else if e.is_timeout() {
            CliError::api(
                "timeout",
                format!("the server at {} did not answer in time", self.api),
            )
        } else {
            CliError::api("transport", format!("request to {} failed: {e}", self.api))
        }
    }

    pub async fn deployment(&self, id: &str) -> Result<api::Deployment, CliError> {
        self.get(&format!("/v1/deployments/{id}")).await
    }
}
