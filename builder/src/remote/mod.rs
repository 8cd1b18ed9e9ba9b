//! The builder's side of the control plane's builder API (distributed mode). An ECS
//! builder holds no storage or Redis credential: with the one-time claim in its task's
//! overrides it gets its build spec and a capability for its one deployment, which
//! expires when the deployment ends. Through it the builder reads its uploaded source,
//! uploads output blobs (the server verifies and stores them), publishes its log events
//! and asks the server to activate the deployment; the server alone writes storage and
//! the log bus.
//!
//! # Layout
//! * this file — [`Client`] (calls with retries, across replicas) and [`claim`].
//! * `storage` — [`ApiStorage`]: the source, blobs and cache entry through the API.
//! * `publisher` — [`ApiPublisher`]: activation by the control plane.
//! * `log` — [`ApiSink`]: the build's events, in order, through outages.

mod log;
mod publisher;
mod storage;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cdeploy_core::api::{self, BuildGrant};

use crate::BuildSpec;

pub use log::ApiSink;
pub use publisher::ApiPublisher;
pub use storage::ApiStorage;

/// Attempts of a request that fails transiently (no answer, 5xx, 429).
const ATTEMPTS: u32 = 6;

/// A failed call: whether trying again may help, and what the server said.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    pub status: Option<u16>,
    pub code: String,
    pub message: String,
}

impl CallError {
    fn transient(&self) -> bool {
        match self.status {
            None => true,
            Some(s) => s >= 500 || s == 429,
        }
    }
}

/// The builder API for one deployment.
pub struct Client {
    http: reqwest::Client,
    /// The API's base URLs (several: replicas without a load balancer); a connection
    /// failure moves to the next.
    bases: Vec<String>,
    current: AtomicU64,
    id: String,
    token: Mutex<String>,
}

/// Why a build could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("no API URL")]
    NoApiUrl,
    #[error("{0}")]
    Http(reqwest::Error),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("claiming the build: {0}")]
    Grant(serde_json::Error),
}

impl Client {
    fn new(bases: &str, id: &str) -> Result<Client, ClaimError> {
        let bases: Vec<String> = bases
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_string())
            .filter(|b| !b.is_empty())
            .collect();
        if bases.is_empty() {
            return Err(ClaimError::NoApiUrl);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(ClaimError::Http)?;
        Ok(Client {
            http,
            bases,
            current: AtomicU64::new(0),
            id: id.to_string(),
            token: Mutex::new(String::new()),
        })
    }

    fn url(&self, path: &str) -> String {
        let i = self.current.load(Ordering::Relaxed) as usize % self.bases.len();
        format!("{}/v1/builds/{}{path}", self.bases[i], self.id)
    }

    /// Sends a request (built afresh per attempt), retrying transient failures with
    /// jittered exponential backoff (200 ms doubling to 5 s). Answers with the body of a
    /// 2xx.
    async fn call(
        &self,
        what: &str,
        make: impl Fn(&reqwest::Client, String) -> reqwest::RequestBuilder,
        path: &str,
    ) -> Result<Bytes, CallError> {
        use backon::Retryable;
        let policy = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(ATTEMPTS as usize - 1)
            .with_jitter();
        (|| self.attempt(what, &make, path))
            .retry(policy)
            .when(CallError::transient)
            .notify(|err, wait| {
                tracing::warn!(error = %err, ?wait, "builder API call failed; retrying")
            })
            .await
    }

    /// One try of [`Client::call`].
    async fn attempt(
        &self,
        what: &str,
        make: &impl Fn(&reqwest::Client, String) -> reqwest::RequestBuilder,
        path: &str,
    ) -> Result<Bytes, CallError> {
        let token = self.token.lock().expect("not poisoned").clone();
        let mut req = make(&self.http, self.url(path));
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        Err(match req.send().await {
            Ok(resp) if resp.status().is_success() => match resp.bytes().await {
                Ok(b) => return Ok(b),
                Err(e) => CallError {
                    status: None,
                    code: String::new(),
                    message: format!("{what}: reading the answer: {e}"),
                },
            },
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                CallError {
                    status: Some(status),
                    code: body["error"]["code"].as_str().unwrap_or("").to_string(),
                    message: format!(
                        "{what}: {}",
                        body["error"]["message"]
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("HTTP {status}"))
                    ),
                }
            }
            Err(e) => {
                // Another replica may answer.
                self.current.fetch_add(1, Ordering::Relaxed);
                CallError {
                    status: None,
                    code: String::new(),
                    message: format!("{what}: the control plane is unreachable: {e}"),
                }
            }
        })
    }

    async fn post_json<T: serde::Serialize + Sync>(
        &self,
        what: &str,
        path: &str,
        body: &T,
    ) -> Result<Bytes, CallError> {
        self.call(what, |http, url| http.post(url).json(body), path)
            .await
    }

    /// Whether a cancel was asked for, and whether the log is closed (the server ended
    /// the deployment, e.g. with ECS's stop reason).
    pub async fn state(&self) -> Result<api::BuildState, CallError> {
        let b = self
            .call("build state", |http, url| http.get(url), "/state")
            .await?;
        serde_json::from_slice(&b).map_err(|e| CallError {
            status: None,
            code: String::new(),
            message: format!("build state: {e}"),
        })
    }
}

/// How long a builder keeps asking for its build while the server can't check the claim.
const CLAIM_PATIENCE: Duration = Duration::from_secs(60);

/// Trades the one-time claim for the build spec and the deployment's capability.
pub async fn claim(
    api: &str,
    deployment_id: &str,
    claim: &str,
) -> Result<(Arc<Client>, BuildSpec), ClaimError> {
    let client = Client::new(api, deployment_id)?;
    let claim = api::BuildClaim {
        claim: claim.to_string(),
    };
    // Each call retries for seconds; the server may take longer to know the task (ECS
    // answers slowly under throttling): a minute in all before giving up.
    let started = std::time::Instant::now();
    let body = loop {
        match client
            .post_json("claiming the build", "/claim", &claim)
            .await
        {
            Ok(body) => break body,
            Err(e) if e.status == Some(503) && started.elapsed() < CLAIM_PATIENCE => {
                tracing::warn!(error = %e, "the build can't be claimed yet; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let grant: BuildGrant<BuildSpec> = serde_json::from_slice(&body).map_err(ClaimError::Grant)?;
    *client.token.lock().expect("not poisoned") = grant.token;
    Ok((Arc::new(client), grant.spec))
}
