//! Commit statuses: a deployment a forge's webhook made reports each of its states
//! (queued, building, ready, failed, canceled) to that commit on the forge, with the
//! deployment's URL, when the operator gave the server a token for the forge.
//!
//! Reports go out one at a time, in order, from one task: a `success` never lands
//! before the `pending` it follows. A forge that does not answer costs a few retries
//! and a warning; it never holds up a build.
//!
//! # Layout
//! * this file — the reporter's task and the commit statuses.
//! * [`comment`] — the comment a pull request's deployments keep up to date.

use std::sync::Arc;
use std::time::Duration;

use cdeploy_core::event::Status;
use tokio::sync::mpsc;

use crate::db::{CommitTarget, Store};

pub mod comment;

pub use crate::config::{ForgeApi, ForgeSettings};

/// A status change of a deployment.
#[derive(Debug, Clone)]
pub struct Report {
    pub deployment: String,
    pub status: Status,
    pub url: Option<String>,
    pub error: Option<String>,
    /// A ready deployment that took this earlier one's output instead of building.
    pub unchanged_since: Option<String>,
}

/// Queued reports beyond this are dropped (with a warning): a forge that is down must
/// not grow memory.
const QUEUE: usize = 4096;
/// The status's name on the forge.
const CONTEXT: &str = "cdeploy";

pub struct StatusReporter {
    settings: ForgeSettings,
    tx: mpsc::Sender<Report>,
}

impl StatusReporter {
    /// The reporter, with its task running; `None` when no forge is configured.
    pub fn start(
        settings: ForgeSettings,
        store: Arc<dyn Store>,
        domain: String,
    ) -> Option<Arc<Self>> {
        if settings.is_empty() {
            return None;
        }
        let (tx, mut rx) = mpsc::channel::<Report>(QUEUE);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("cdeploy/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with default TLS builds");
        let worker = settings.clone();
        tokio::spawn(async move {
            while let Some(report) = rx.recv().await {
                let target = match store.commit_target(&report.deployment).await {
                    Ok(Some(t)) => t,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(deployment = %report.deployment, error = %e, "cannot read the commit of a deployment");
                        continue;
                    }
                };
                let Some(api) = worker.api(&target.forge) else {
                    continue;
                };
                let (slug, created_at) = match store.get_deployment(&report.deployment).await {
                    Ok(Some(d)) => (d.slug, d.created_at),
                    _ => continue,
                };
                let url = report.url.clone().unwrap_or_else(|| {
                    cdeploy_core::api::site_url(&domain, &slug, Some(&report.deployment))
                });
                post(&http, api, &target, &report, &url).await;
                if let Some(pr) = target.pr {
                    let pr = comment::Pr {
                        slug: &slug,
                        number: pr,
                        deployment_at: &created_at,
                    };
                    comment::upsert(&http, api, store.as_ref(), &target, pr, (&report, &url)).await;
                }
            }
        });
        Some(Arc::new(StatusReporter { settings, tx }))
    }

    /// Whether statuses go to this forge.
    pub fn reports(&self, forge: &str) -> bool {
        self.settings.api(forge).is_some()
    }

    pub fn send(&self, report: Report) {
        if self.tx.try_send(report).is_err() {
            tracing::warn!("too many commit statuses waiting to be sent: one was dropped");
        }
    }
}

/// The forge's name for a state, and a line describing it.
fn state(forge: &str, r: &Report) -> (&'static str, String) {
    let gitlab = forge == "gitlab";
    match r.status {
        Status::Queued => ("pending", "Queued".into()),
        Status::Uploading => ("pending", "Receiving the source".into()),
        Status::Building => (
            if gitlab { "running" } else { "pending" },
            "Building".into(),
        ),
        Status::Ready => match &r.unchanged_since {
            Some(from) => (
                "success",
                format!("Unchanged since {from}: its output deployed"),
            ),
            None => ("success", "Deployed".into()),
        },
        Status::Failed => {
            let why = r.error.as_deref().unwrap_or("the build failed");
            (
                if gitlab { "failed" } else { "failure" },
                format!("Failed: {why}"),
            )
        }
        Status::Canceled => (if gitlab { "canceled" } else { "error" }, "Canceled".into()),
    }
}

/// The repository as the forge's API paths take it: each segment of `owner/name`
/// escaped (RFC 3986's unreserved characters kept); GitLab takes a project's full path
/// as one segment (`group%2Fsub%2Fproject`). `t.repo` is the linked repository's path
/// (`hooks::status_repo`): no `.`/`..` segment.
fn repo_path(t: &CommitTarget) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let segments = t
        .repo
        .split('/')
        .map(|p| percent_encoding::utf8_percent_encode(p, SEGMENT).to_string());
    segments
        .collect::<Vec<_>>()
        .join(if t.forge == "gitlab" { "%2F" } else { "/" })
}

/// A request to the forge's API with its token, as that forge takes it.
fn authed(req: reqwest::RequestBuilder, forge: &str, api: &ForgeApi) -> reqwest::RequestBuilder {
    match forge {
        "gitlab" => req.header("PRIVATE-TOKEN", &api.token),
        "github" => req
            .bearer_auth(&api.token)
            .header("Accept", "application/vnd.github+json"),
        _ => req.header("Authorization", format!("token {}", api.token)),
    }
}

async fn post(http: &reqwest::Client, api: &ForgeApi, t: &CommitTarget, r: &Report, url: &str) {
    let (state, mut description) = state(&t.forge, r);
    // GitHub refuses descriptions over 140 characters.
    if description.chars().count() > 140 {
        description = description.chars().take(139).collect::<String>() + "…";
    }
    let base = api.base.trim_end_matches('/');
    let repo_path = repo_path(t);
    let (path, name) = match t.forge.as_str() {
        "gitlab" => (
            format!("{base}/projects/{repo_path}/statuses/{}", t.sha),
            "name",
        ),
        _ => (
            format!("{base}/repos/{repo_path}/statuses/{}", t.sha),
            "context",
        ),
    };
    let mut body = serde_json::json!({
        "state": state, "target_url": url, "description": description,
    });
    body[name] = CONTEXT.into();
    let request = authed(http.post(path), &t.forge, api).json(&body);
    for attempt in 1..=3u32 {
        let Some(req) = request.try_clone() else {
            return;
        };
        match req.send().await {
            Ok(resp) if resp.status().is_success() => return,
            Ok(resp) if resp.status().is_client_error() => {
                tracing::warn!(deployment = %t.deployment, forge = %t.forge, status = %resp.status(), "the forge refused a commit status (check the token's scope)");
                return;
            }
            Ok(resp) => {
                tracing::warn!(deployment = %t.deployment, forge = %t.forge, status = %resp.status(), attempt, "a commit status failed");
            }
            Err(e) => {
                tracing::warn!(deployment = %t.deployment, forge = %t.forge, error = %e, attempt, "a commit status failed");
            }
        }
        tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(status: Status, error: Option<&str>) -> Report {
        Report {
            deployment: "d".into(),
            status,
            url: None,
            error: error.map(String::from),
            unchanged_since: None,
        }
    }

    #[test]
    fn states_use_each_forges_words() {
        assert_eq!(
            state("github", &report(Status::Building, None)).0,
            "pending"
        );
        assert_eq!(
            state("gitlab", &report(Status::Building, None)).0,
            "running"
        );
        assert_eq!(state("gitea", &report(Status::Ready, None)).0, "success");
        assert_eq!(state("gitlab", &report(Status::Failed, None)).0, "failed");
        let (s, d) = state("github", &report(Status::Failed, Some("npm ERR")));
        assert_eq!((s, d.as_str()), ("failure", "Failed: npm ERR"));
        assert_eq!(state("gitea", &report(Status::Canceled, None)).0, "error");
    }

    #[test]
    fn tokens_stay_out_of_debug_output() {
        let api = ForgeApi {
            base: "https://api.github.com".into(),
            token: "ghp_secret".into(),
        };
        assert!(!format!("{api:?}").contains("ghp_secret"));
    }
}
