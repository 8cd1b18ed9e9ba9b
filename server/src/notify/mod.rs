//! Deploy events out: the sender that takes events from the outbox (`db::notify`) and
//! POSTs each to its endpoint, signed as Standard Webhooks says, retrying on the
//! operator's schedule (`--notify-retry`) until the endpoint answers 2xx or the
//! schedule ends; every attempt is recorded with its answer (`cdeploy notify
//! deliveries`).
//!
//! * **Durable**: an event is in the database before anyone is told of it (written with
//!   the status change), so a crash or a restart delays it and never loses it. A
//!   message is sent at least once; its `webhook-id` is the same on every attempt, so a
//!   receiver drops repeats by it.
//! * **Replicas**: each attempt is taken under a lease (one sender at a time); a sender
//!   that dies mid-attempt leaves the message to another once the lease ends.
//! * **Where to**: endpoints are resolved by this server and only public addresses are
//!   connected to, unless the operator lists a network (`--notify-allow`); redirects
//!   are not followed. Errors are recorded without the URL: a Slack or Discord URL is
//!   their secret, and logs show it without its path.
//!
//! # Layout
//! * [`sign`] — signing secrets and the `webhook-signature` header.
//! * [`render`] — each format's body; an endpoint's URL as shown.

pub mod render;
pub mod sign;

use std::sync::Arc;
use std::time::Duration;

use cdeploy_core::api::{DeployEventData, NotifyEvent, NotifyFormat};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use crate::config::NotifySettings;
use crate::db::{NotifyAttemptRow, NotifyHookRow, OutboxRow, Store};

/// Opens an endpoint's sealed signing secret (the server's keyring, which sits above
/// this layer).
pub type OpenSecret = Arc<dyn Fn(&NotifyHookRow) -> Result<String, String> + Send + Sync>;

/// Attempts kept per endpoint (what `notify deliveries` lists).
pub const KEEP_ATTEMPTS: u32 = 200;
/// Attempts under way at once.
const PARALLEL: usize = 8;
/// How long one attempt may hold its message (longer than its timeout).
const LEASE: Duration = Duration::from_secs(60);
/// One attempt's deadline, connection included.
const TIMEOUT: Duration = Duration::from_secs(15);
/// The outbox is read at least this often (events other replicas wrote).
const POLL: Duration = Duration::from_secs(2);

/// The sender; [`Notifier::wake`] makes it look at the outbox now.
pub struct Notifier {
    wake: tokio::sync::Notify,
}

/// What an attempt needs.
struct Sender {
    store: Arc<dyn Store>,
    http: reqwest::Client,
    settings: NotifySettings,
    domain: String,
    open: OpenSecret,
    owner: String,
}

impl Notifier {
    /// Starts the sender; it stops when `shutdown` fires (messages it holds are
    /// retried when their lease ends, by this server once restarted or by another).
    pub fn start(
        store: Arc<dyn Store>,
        settings: NotifySettings,
        domain: String,
        open: OpenSecret,
        shutdown: CancellationToken,
    ) -> Arc<Notifier> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .dns_resolver(Arc::new(cdeploy_proxy::upstream::CheckedResolver::new(
                Arc::new(settings.allow.clone()),
                "notifications may not be sent to",
            )))
            .user_agent(concat!("cdeploy/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with default TLS builds");
        let notifier = Arc::new(Notifier {
            wake: tokio::sync::Notify::new(),
        });
        let sender = Arc::new(Sender {
            store,
            http,
            settings,
            domain,
            open,
            owner: format!("notify-{}", cdeploy_core::ids::random_id(12)),
        });
        tokio::spawn(run(notifier.clone(), sender, shutdown));
        notifier
    }

    /// An event was just written: send it now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Takes due messages and sends them, at most [`PARALLEL`] at once, until shutdown.
async fn run(notifier: Arc<Notifier>, sender: Arc<Sender>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(PARALLEL));
    loop {
        let now = now_us();
        match sender.store.due_notifications(now, 64).await {
            Ok(due) => {
                for row in due {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    let until = now_us() + LEASE.as_micros() as i64;
                    match sender
                        .store
                        .claim_notification(&row, &sender.owner, now_us(), until)
                        .await
                    {
                        Ok(true) => {
                            let (sender, notifier) = (sender.clone(), notifier.clone());
                            tokio::spawn(async move {
                                sender.attempt(row).await;
                                drop(slot);
                                // Its retry may be due before the loop's next look.
                                notifier.wake();
                            });
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "cannot take a notification"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the notification outbox"),
        }
        let next = sender.store.next_notification_due().await.ok().flatten();
        let wait = next
            .map(|at| Duration::from_micros((at - now_us()).max(0) as u64))
            .unwrap_or(POLL)
            .clamp(Duration::from_millis(20), POLL);
        tokio::select! {
            () = notifier.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// What one attempt came to.
struct Answer {
    status: Option<u16>,
    error: Option<String>,
}

impl Sender {
    /// One attempt at a message, recorded with its outcome.
    async fn attempt(&self, row: OutboxRow) {
        let hook = match self.store.get_notify_hook(&row.hook).await {
            Ok(Some(h)) => h,
            // Removed meanwhile: its messages went with it.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a notification endpoint");
                return;
            }
        };
        let format: NotifyFormat = hook.format.parse().unwrap_or_default();
        let started = std::time::Instant::now();
        let answer = match self.body(&row, format).await {
            Ok(body) => self.post(&hook, &row, body).await,
            Err(why) => Answer {
                status: None,
                error: Some(why),
            },
        };
        let delivered = answer.status.is_some_and(|s| (200..300).contains(&s));
        let attempt = row.attempts + 1;
        let at_us = now_us();
        let retry_in = self.settings.retry.get(row.attempts as usize).copied();
        let (outcome, next_us) = match (delivered, retry_in) {
            (true, _) => ("delivered", None),
            (false, Some(after)) => ("retrying", Some(at_us + after.as_micros() as i64)),
            (false, None) => ("failed", None),
        };
        let shown = render::shown_url(&hook.url);
        match outcome {
            "delivered" => {
                tracing::info!(hook = %hook.id, url = %shown, event = %row.event, deployment = %row.deployment, attempt, "notification delivered")
            }
            _ => {
                tracing::warn!(hook = %hook.id, url = %shown, event = %row.event, deployment = %row.deployment, attempt, status = ?answer.status, error = ?answer.error, outcome, "notification not delivered")
            }
        }
        let record = NotifyAttemptRow {
            id: format!("na_{}", cdeploy_core::ids::random_id(16)),
            message: row.id.clone(),
            hook: hook.id.clone(),
            event: row.event.clone(),
            deployment: row.deployment.clone(),
            attempt,
            at: cdeploy_core::now_rfc3339(),
            at_us,
            status: answer.status.map(i64::from),
            error: answer.error,
            ms: started.elapsed().as_millis() as i64,
            outcome: outcome.to_string(),
            next_us,
        };
        match self
            .store
            .finish_notification(&record, &self.owner, KEEP_ATTEMPTS)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(hook = %hook.id, event = %row.event, deployment = %row.deployment, "a notification attempt outlived its lease (or its endpoint): not recorded")
            }
            Err(e) => tracing::warn!(error = %e, "cannot record a notification attempt"),
        }
    }

    /// The message's body for an endpoint of `format`, from the event and what the
    /// deployment is (what it was built as, its branch and commit).
    async fn body(&self, row: &OutboxRow, format: NotifyFormat) -> Result<Vec<u8>, String> {
        let event: NotifyEvent = row.event.parse().map_err(|e| format!("{e}"))?;
        let deployment = self
            .store
            .get_deployment(&row.deployment)
            .await
            .map_err(|e| format!("cannot read the deployment: {e}"))?;
        let commit = self
            .store
            .commit_target(&row.deployment)
            .await
            .map_err(|e| format!("cannot read the deployment's commit: {e}"))?;
        let status = match event {
            NotifyEvent::Created => "queued",
            NotifyEvent::Failed => "failed",
            NotifyEvent::Canceled => "canceled",
            NotifyEvent::Ready | NotifyEvent::Promoted | NotifyEvent::RolledBack => "ready",
        };
        let data = DeployEventData {
            event,
            project: row.slug.clone(),
            deployment: row.deployment.clone(),
            url: cdeploy_core::api::site_url(&self.domain, &row.slug, Some(&row.deployment)),
            status: status.to_string(),
            error: row.error.clone().filter(|_| event == NotifyEvent::Failed),
            target: match deployment.as_ref().is_some_and(|d| d.preview) {
                true => "preview".into(),
                false => "production".into(),
            },
            branch: deployment.as_ref().and_then(|d| d.branch.clone()),
            commit: commit.map(|c| c.sha).or_else(|| {
                deployment
                    .as_ref()
                    .and_then(|d| d.git.as_ref())
                    .and_then(|g| g.git_ref.clone())
            }),
        };
        Ok(render::body(format, &row.at, data))
    }

    /// POSTs a signed body; the answer's status, or why there was none.
    async fn post(&self, hook: &NotifyHookRow, row: &OutboxRow, body: Vec<u8>) -> Answer {
        let failed = |error: String| Answer {
            status: None,
            error: Some(error),
        };
        let secret = match (self.open)(hook) {
            Ok(s) => s,
            Err(why) => {
                return failed(format!(
                    "the endpoint's signing secret does not open: {why}"
                ))
            }
        };
        let url = match checked_url(&hook.url, &self.settings.allow) {
            Ok(u) => u,
            Err(why) => return failed(why),
        };
        let timestamp = chrono::Utc::now().timestamp();
        let Some(signature) = sign::signature(&secret, &row.id, timestamp, &body) else {
            return failed("the endpoint's signing secret is not one this server made".into());
        };
        let sent = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &row.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => Answer {
                status: Some(resp.status().as_u16()),
                error: None,
            },
            Ok(resp) => Answer {
                status: Some(resp.status().as_u16()),
                error: Some(format!("the endpoint answered {}", resp.status())),
            },
            Err(e) => failed(describe(e)),
        }
    }
}

/// The endpoint's URL, with an address written in it checked (a name is checked when
/// it is resolved).
fn checked_url(
    url: &str,
    allow: &cdeploy_proxy::upstream::ProxyAllow,
) -> Result<reqwest::Url, String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|_| "the endpoint's URL does not parse".to_string())?;
    match allow.refused_literal(&parsed) {
        Some(ip) => Err(format!(
            "{ip} is an address notifications may not be sent to (the operator may allow it: --notify-allow)"
        )),
        _ => Ok(parsed),
    }
}

/// A send error and its causes, without the URL (it may be the endpoint's secret).
fn describe(e: reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "no answer within 15 s"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "the request failed"
    };
    let e = e.without_url();
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    causes.dedup();
    match causes.is_empty() {
        true => what.to_string(),
        false => format!("{what}: {}", causes.join(": ")),
    }
}
