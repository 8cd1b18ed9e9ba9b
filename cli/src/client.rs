//! The API client: bearer auth, JSON in and out, `429`s waited out, errors mapped to
//! exit statuses with advice a person can act on.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cdeploy_core::api::{self, codes, ErrorBody};
use cdeploy_core::credentials::Credentials;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::exit::CliError;
use crate::printer::Printer;
use crate::Globals;

pub struct Client {
    pub api: String,
    /// A token given explicitly (flag or environment) is never replaced by a saved one.
    explicit_token: std::sync::atomic::AtomicBool,
    token: Mutex<Option<String>>,
    http: reqwest::Client,
    printer: Printer,
    backoff: Backoff,
}

/// Waiting out `429 Too Many Requests` (a rate limit, a full build queue): each is
/// retried after its `Retry-After` plus jitter, while the time spent waiting, counted
/// once however many requests wait together, stays within `--max-wait`.
struct Backoff {
    max: Duration,
    state: Mutex<Waited>,
    /// Where to say that we wait: the progress bar on screen, else a line on stderr.
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

/// How long a command waited on `429`s, and how often.
#[derive(Debug, Clone, Copy, Default)]
pub struct Waited {
    pub retries: u32,
    pub total: Duration,
    /// The end of the wait under way.
    until: Option<Instant>,
}

/// How long the CLI waits for a server on this machine that is still starting (the
/// quick start runs `cdeploy-server &` and `cdeploy deploy` back to back).
const LOCAL_STARTUP_GRACE: Duration = Duration::from_secs(5);

/// An API error answer, kept whole so callers can react to specific codes.
pub struct ApiFailure {
    pub status: StatusCode,
    pub body: Option<ErrorBody>,
    /// The `Retry-After` of a `429` that waiting out would have taken past `--max-wait`.
    pub retry_after: Option<Duration>,
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
            explicit_token: std::sync::atomic::AtomicBool::new(explicit_token),
            token: Mutex::new(token),
            http,
            printer: g.printer,
            backoff: Backoff {
                max: g.max_wait,
                state: Mutex::new(Waited::default()),
                bar: Mutex::new(None),
            },
        })
    }

    /// Says "waiting" on this bar (while it is shown) instead of on a line of its own.
    pub fn show_waits_on(&self, bar: Option<indicatif::ProgressBar>) {
        *self.backoff.bar.lock().expect("not poisoned") = bar;
    }

    /// The `429`s waited out so far.
    pub fn waited(&self) -> Waited {
        *self.backoff.state.lock().expect("not poisoned")
    }

    /// Sleeps out a `429`'s `Retry-After` (1 s when it gives none) plus jitter, unless
    /// that would take the time spent waiting past `--max-wait`: then `false` at once.
    /// `reason` is the server's message, shown while waiting.
    pub async fn wait_out(&self, retry_after: Option<Duration>, reason: &str) -> bool {
        let retry_after = retry_after.unwrap_or(Duration::from_secs(1));
        // Past the whole budget: no need to add it to an instant (which could overflow).
        if retry_after > self.backoff.max {
            return false;
        }
        // Clients told the same Retry-After must not all come back in the same instant.
        let spread = (retry_after / 10).max(Duration::from_millis(250));
        let jitter = spread.mul_f64(random_fraction());
        let now = Instant::now();
        let Some(target) = now.checked_add(retry_after + jitter) else {
            return false;
        };
        let (until, added) = {
            let mut w = self.backoff.state.lock().expect("not poisoned");
            // Requests waiting together spend the budget once.
            let from = w.until.filter(|u| *u > now).unwrap_or(now);
            let added = target.saturating_duration_since(from);
            if w.total + added > self.backoff.max {
                return false;
            }
            w.total += added;
            w.retries += 1;
            let until = from.max(target);
            w.until = Some(until);
            (until, added)
        };
        if !added.is_zero() {
            let secs = until.saturating_duration_since(now).as_secs_f64();
            let msg = format!("{reason}: waiting {secs:.1} s, then retrying");
            match self.backoff.bar.lock().expect("not poisoned").as_ref() {
                Some(bar) if !bar.is_hidden() => bar.set_message(msg),
                _ => self
                    .printer
                    .info(format!("{} {msg}", console::style("busy:").yellow().bold())),
            }
        }
        tokio::time::sleep_until(until.into()).await;
        if let Some(bar) = self.backoff.bar.lock().expect("not poisoned").as_ref() {
            bar.set_message("");
        }
        true
    }

    /// Uses `token` from now on (one traded for a CI identity), as if it were given.
    pub fn use_token(&self, token: String) {
        *self.token.lock().expect("not poisoned") = Some(token);
        self.explicit_token
            .store(true, std::sync::atomic::Ordering::Relaxed);
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
                        && !self
                            .explicit_token
                            .load(std::sync::atomic::Ordering::Relaxed) =>
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
                Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS => {
                    let retry_after = retry_after(r.headers());
                    let body = r.json::<ErrorBody>().await.ok();
                    let reason = body
                        .as_ref()
                        .map(|b| b.error.message.clone())
                        .unwrap_or_else(|| "the server is busy".to_string());
                    // A full build queue failed the deployment it was asked for: the
                    // caller retries with a new Idempotency-Key (`deploy`'s create).
                    let queue_full = body
                        .as_ref()
                        .is_some_and(|b| b.error.code == codes::QUEUE_FULL);
                    if !queue_full && self.wait_out(retry_after, &reason).await {
                        continue;
                    }
                    return Ok(Err(ApiFailure {
                        status: StatusCode::TOO_MANY_REQUESTS,
                        body,
                        retry_after: Some(retry_after.unwrap_or(Duration::from_secs(1))),
                    }));
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
        Ok(Err(ApiFailure {
            status,
            body,
            retry_after: None,
        }))
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
        if let Some(wait) = f.retry_after {
            return err.with_hint(self.outlasted(wait));
        }
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

    /// The advice when a `429` would outlast `--max-wait`.
    pub fn outlasted(&self, wait: Duration) -> String {
        let w = self.waited();
        format!(
            "the server asked for {} s more after {:.1} s of waiting, past --max-wait ({} s; CDEPLOY_MAX_WAIT): retry later, raise --max-wait, or ask the server's operator to raise the setting named above",
            wait.as_secs(),
            w.total.as_secs_f64(),
            self.backoff.max.as_secs()
        )
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

    /// What deployment `id`'s build read, compared with the nearest earlier one.
    pub async fn inputs(&self, id: &str) -> Result<api::DeploymentInputs, CliError> {
        self.get(&format!("/v1/deployments/{id}/inputs")).await
    }

    /// What answers `path` (with its query) on deployment `id`, at `host`.
    pub async fn route(
        &self,
        id: &str,
        path: &str,
        host: Option<&str>,
    ) -> Result<api::RouteAnswer, CliError> {
        use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
        let mut url = format!(
            "/v1/deployments/{id}/route?path={}",
            utf8_percent_encode(path, NON_ALPHANUMERIC)
        );
        if let Some(host) = host {
            url.push_str(&format!(
                "&host={}",
                utf8_percent_encode(host, NON_ALPHANUMERIC)
            ));
        }
        self.get(&url).await
    }
}

/// A `Retry-After` in seconds (the form cdeploy's server sends).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// A number in [0, 1) for jitter.
fn random_fraction() -> f64 {
    let mut b = [0u8; 4];
    // No randomness at hand: no jitter, which only makes waits line up.
    let _ = getrandom::fill(&mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}
