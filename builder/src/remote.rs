//! The builder's side of the control plane's builder API (distributed mode). An ECS
//! builder holds no storage or Redis credential: with the one-time claim in its task's
//! overrides it gets its build spec and a capability for its one deployment, which
//! expires when the deployment ends. Through it the builder reads its uploaded source,
//! uploads output blobs (the server verifies and stores them), publishes its log events
//! and asks the server to activate the deployment; the server alone writes storage and
//! the log bus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cdeploy_core::api::{self, BuildGrant, ProducedEvent};
use cdeploy_core::config::SiteConfig;
use cdeploy_core::event::{Event, EventBody};
use cdeploy_core::layout;
use cdeploy_core::publish::OutputFiles;
use cdeploy_core::storage::{blob_hash_of, Result as StorageResult, Storage, StorageError};
use tokio::sync::mpsc;

use crate::{BuildSpec, EventSink, Publisher};

/// Attempts of a request that fails transiently (no answer, 5xx, 429).
const ATTEMPTS: u32 = 6;

/// A failed call: whether trying again may help, and what the server said.
#[derive(Debug)]
pub struct CallError {
    pub status: Option<u16>,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
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

impl Client {
    fn new(bases: &str, id: &str) -> Result<Client, String> {
        let bases: Vec<String> = bases
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_string())
            .filter(|b| !b.is_empty())
            .collect();
        if bases.is_empty() {
            return Err("no API URL".into());
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| e.to_string())?;
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
) -> Result<(Arc<Client>, BuildSpec), String> {
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
            Err(e) => return Err(e.to_string()),
        }
    };
    let grant: BuildGrant<BuildSpec> =
        serde_json::from_slice(&body).map_err(|e| format!("claiming the build: {e}"))?;
    *client.token.lock().expect("not poisoned") = grant.token;
    Ok((Arc::new(client), grant.spec))
}

/// The entry of a build cache key (`cache/<slug>/<entry>.tar.zst`); the server puts it
/// under the slug of the build's own project, whatever the key says.
fn cache_entry_of(key: &str) -> Option<&str> {
    let entry = key
        .strip_prefix("cache/")?
        .rsplit('/')
        .next()?
        .strip_suffix(".tar.zst")?;
    cdeploy_core::layout::is_cache_entry(entry).then_some(entry)
}

/// Storage as an API builder may use it: its own source map and source blobs to read,
/// blobs to upload. Nothing else exists for it.
pub struct ApiStorage {
    pub client: Arc<Client>,
}

impl ApiStorage {
    fn unsupported(key: &str) -> StorageError {
        StorageError::Backend(format!("{key} is not available to a builder"))
    }

    fn backend(e: CallError) -> StorageError {
        StorageError::Backend(e.message)
    }
}

#[async_trait]
impl Storage for ApiStorage {
    async fn get(&self, key: &str) -> StorageResult<Option<Bytes>> {
        let path = if key == layout::source_map(&self.client.id) {
            "/source".to_string()
        } else if let Some(entry) = cache_entry_of(key) {
            format!("/cache/{entry}")
        } else if let Some(hash) = blob_hash_of(key) {
            format!("/files/{hash}")
        } else {
            return Err(Self::unsupported(key));
        };
        match self
            .client
            .call("reading the source", |http, url| http.get(url), &path)
            .await
        {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(Self::backend(e)),
        }
    }

    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()> {
        if let Some(entry) = cache_entry_of(key) {
            return self
                .client
                .call(
                    "saving the build cache",
                    |http, url| http.put(url).body(data.clone()),
                    &format!("/cache/{entry}"),
                )
                .await
                .map(|_| ())
                .map_err(Self::backend);
        }
        let hash = blob_hash_of(key).ok_or_else(|| Self::unsupported(key))?;
        self.client
            .call(
                "uploading",
                |http, url| http.put(url).body(data.clone()),
                &format!("/files/{hash}"),
            )
            .await
            .map(|_| ())
            .map_err(Self::backend)
    }

    async fn exists(&self, key: &str) -> StorageResult<bool> {
        let hash = blob_hash_of(key).ok_or_else(|| Self::unsupported(key))?;
        let body = self
            .client
            .post_json(
                "checking stored files",
                "/files/missing",
                &api::MissingRequest {
                    hashes: vec![hash.to_string()],
                },
            )
            .await
            .map_err(Self::backend)?;
        let missing: api::MissingResponse = serde_json::from_slice(&body)
            .map_err(|e| StorageError::Backend(format!("checking stored files: {e}")))?;
        Ok(missing.missing.is_empty())
    }

    async fn size(&self, key: &str) -> StorageResult<Option<u64>> {
        Err(Self::unsupported(key))
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        Err(Self::unsupported(key))
    }

    fn describe(&self) -> String {
        format!(
            "the control plane's builder API ({})",
            self.client.bases.join(",")
        )
    }
}

/// Activation by the control plane: it checks every blob is stored, writes the
/// manifest and its precompressed variants itself, and moves the route.
pub struct ApiPublisher {
    pub client: Arc<Client>,
}

#[async_trait]
impl Publisher for ApiPublisher {
    async fn activate(
        &self,
        _spec: &BuildSpec,
        files: &OutputFiles,
        site: &SiteConfig,
    ) -> Result<cdeploy_core::manifest::Site, String> {
        let body = self
            .client
            .post_json(
                "activating",
                "/activate",
                &api::ActivateRequest {
                    files: files.clone(),
                    site: *site,
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&body).map_err(|e| format!("activating: {e}"))
    }
}

/// Events in order through the API. Sending never waits: a background task posts
/// batches, retries through outages, and when the server says the log bus lost what it
/// had stored (Redis restarted empty) writes back the log it has seen, with the
/// original numbers, before going on.
pub struct ApiSink {
    tx: Mutex<Option<mpsc::Sender<(String, EventBody)>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    unsent: Arc<AtomicU64>,
}

/// Most events in one request.
const BATCH: usize = 200;

impl ApiSink {
    pub fn start(client: Arc<Client>, on_stored: Box<dyn Fn(&Event) + Send + Sync>) -> ApiSink {
        // Bounded: a build printing faster than the API takes its log waits for it.
        let (tx, mut rx) = mpsc::channel::<(String, EventBody)>(4096);
        let unsent = Arc::new(AtomicU64::new(0));
        let pending = unsent.clone();
        let producer = format!("builder-{}", cdeploy_core::ids::random_id(12));
        let task = tokio::spawn(async move {
            let mut history: Vec<Event> = Vec::new();
            let mut n = 0u64;
            let mut closed = false;
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                let count = batch.len() as u64;
                if closed {
                    pending.fetch_sub(count, Ordering::SeqCst);
                    continue;
                }
                let events: Vec<ProducedEvent> = batch
                    .into_iter()
                    .map(|(ts, body)| {
                        n += 1;
                        ProducedEvent { n, ts, body }
                    })
                    .collect();
                let mut delay = Duration::from_millis(200);
                loop {
                    let floor = history.last().map_or(0, |e| e.seq);
                    let req = api::EventBatch {
                        producer: producer.clone(),
                        floor,
                        events: events.clone(),
                    };
                    match client
                        .post_json("publishing the log", "/events", &req)
                        .await
                    {
                        Ok(body) => {
                            let stored: api::EventsStored =
                                serde_json::from_slice(&body).unwrap_or_default();
                            for e in stored.events {
                                on_stored(&e);
                                closed |= e.is_terminal();
                                history.push(e);
                            }
                            break;
                        }
                        Err(e) if e.code == api::codes::LOG_LOST => {
                            tracing::warn!("the log bus lost this log; writing it back");
                            let restore = api::EventRestore {
                                events: history.clone(),
                            };
                            if let Err(e) = client
                                .post_json("restoring the log", "/restore", &restore)
                                .await
                            {
                                tracing::warn!(error = %e, "cannot restore the log yet");
                                tokio::time::sleep(delay).await;
                            }
                        }
                        // The deployment ended (its capability expired): nothing more
                        // will be taken.
                        Err(e) if e.status == Some(401) || e.status == Some(410) => {
                            tracing::warn!(error = %e, "the deployment is over; log events dropped");
                            closed = true;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot publish log events; retrying");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
                }
                pending.fetch_sub(count, Ordering::SeqCst);
            }
        });
        ApiSink {
            tx: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
            unsent,
        }
    }

    /// Waits until every event is stored, at most `timeout`. Returns how many were not.
    pub async fn finish(&self, timeout: Duration) -> u64 {
        drop(self.tx.lock().expect("not poisoned").take());
        let task = self.task.lock().expect("not poisoned").take();
        if let Some(task) = task {
            let abort = task.abort_handle();
            if tokio::time::timeout(timeout, task).await.is_err() {
                abort.abort();
            }
        }
        self.unsent.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl EventSink for ApiSink {
    async fn emit(&self, body: EventBody) {
        let tx = self.tx.lock().expect("not poisoned").clone();
        if let Some(tx) = tx {
            self.unsent.fetch_add(1, Ordering::SeqCst);
            if tx.send((cdeploy_core::now_rfc3339(), body)).await.is_err() {
                self.unsent.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}
