//! A delivery's way through, once its signature holds: a payload that is not JSON is
//! refused, a redelivery or a replay of an accepted payload is ignored, the rest is
//! decided and carried out; every outcome is recorded with its reason.

use cdeploy_core::api::{self, CreateDeployment, Delivery};
use cdeploy_core::{ids, layout};
use serde_json::Value;

use super::decide::{decide, Action};
use super::payload::parse;
use super::{delivery_json, status_repo, Forge, KEEP_DELIVERIES};
use crate::db::{DeliveryRow, GitLinkRow};
use crate::service::deployments::{self, Commit};
use crate::service::error::Result;
use crate::service::projects::stop_builds;
use crate::service::App;

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A deployment was made.
    Deployed,
    /// Ignored, or an alias was removed.
    Done,
    /// Refused: the payload is not what its event needs.
    Malformed,
}

/// A delivery as it arrived: whose, from where, which event.
pub struct Incoming<'a> {
    pub slug: &'a str,
    pub forge: &'a str,
    pub event: &'a str,
    pub delivery: Option<String>,
    /// SHA-256 of the payload.
    pub payload: Option<String>,
}

impl Incoming<'_> {
    /// Records what became of it.
    pub async fn record(
        &self,
        app: &App,
        decision: &str,
        reason: &str,
        deployment: Option<String>,
    ) -> Result<Delivery> {
        let now = chrono::Utc::now();
        let row = DeliveryRow {
            id: format!("dlv_{}", ids::random_id(16)),
            slug: self.slug.to_string(),
            at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            at_us: now.timestamp_micros(),
            forge: self.forge.to_string(),
            event: self.event.chars().take(100).collect(),
            delivery: self.delivery.clone(),
            decision: decision.to_string(),
            reason: reason.chars().take(500).collect(),
            deployment,
            payload: self.payload.clone(),
        };
        app.store.insert_delivery(&row, KEEP_DELIVERIES).await?;
        tracing::info!(
            slug = self.slug,
            forge = self.forge,
            event = self.event,
            decision,
            reason,
            "webhook delivery"
        );
        Ok(delivery_json(&row))
    }
}

/// A verified delivery of `forge`: what it asks for is decided and carried out, unless
/// it was handled before.
pub async fn handle(
    app: &App,
    link: &GitLinkRow,
    incoming: &Incoming<'_>,
    forge: Forge,
    body: &[u8],
) -> Result<(Outcome, Delivery)> {
    let payload: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            let why = format!(
                "the payload is not JSON ({e}); set the webhook's content type to application/json"
            );
            let d = incoming.record(app, "refused", &why, None).await?;
            return Ok((Outcome::Malformed, d));
        }
    };
    if let Some(d) = seen_before(app, incoming, forge).await? {
        return Ok((Outcome::Done, d));
    }
    let action = match parse(forge, incoming.event, &payload) {
        Ok(request) => decide(request, &link.production_branch),
        Err(why) => {
            let d = incoming.record(app, "refused", &why.0, None).await?;
            return Ok((Outcome::Malformed, d));
        }
    };
    act(app, link, incoming, action).await
}

/// A redelivery, or a replay of a payload accepted before: recorded as ignored.
async fn seen_before(app: &App, incoming: &Incoming<'_>, forge: Forge) -> Result<Option<Delivery>> {
    let slug = incoming.slug;
    if let Some(id) = &incoming.delivery {
        if let Some(earlier) = app
            .store
            .accepted_delivery(slug, forge.as_str(), id)
            .await?
        {
            let why = format!(
                "delivery {id} was handled already ({}): a redelivery",
                earlier.id
            );
            let d = incoming
                .record(app, "ignored", &why, earlier.deployment)
                .await?;
            return Ok(Some(d));
        }
    }
    // The forge signs the body, not the delivery id: a captured delivery sent again
    // under another id, or to another forge's route, is the same payload, and deploys
    // nothing twice. GitLab's are remembered for an hour only: it sends its token in
    // clear, so whoever captured a delivery can forge any other (the per-forge secret
    // keeps that to GitLab's route), and its push bodies carry no time, so a branch moved
    // back and forth sends the same body again, which must not be refused for good.
    if let Some(hash) = &incoming.payload {
        let since_us =
            (forge == Forge::GitLab).then(|| chrono::Utc::now().timestamp_micros() - 3_600_000_000);
        if let Some(earlier) = app.store.accepted_payload(slug, hash, since_us).await? {
            let why = format!(
                "this exact payload was accepted before ({}): a replay",
                earlier.id
            );
            let d = incoming
                .record(app, "ignored", &why, earlier.deployment)
                .await?;
            return Ok(Some(d));
        }
    }
    Ok(None)
}

/// Carries out a decision and records it.
pub async fn act(
    app: &App,
    link: &GitLinkRow,
    incoming: &Incoming<'_>,
    action: Action,
) -> Result<(Outcome, Delivery)> {
    let slug = &link.slug;
    let forge = incoming.forge;
    match action {
        Action::Ignore(why) => {
            let d = incoming.record(app, "ignored", &why, None).await?;
            Ok((Outcome::Done, d))
        }
        Action::RemoveAlias { branch, reason } => {
            let removed = remove_alias(app, slug, &branch).await?;
            let (decision, why) = if removed {
                (
                    "accepted",
                    format!("{reason}: its preview alias was removed"),
                )
            } else {
                ("ignored", format!("{reason}: it had no preview alias"))
            };
            let d = incoming.record(app, decision, &why, None).await?;
            Ok((Outcome::Done, d))
        }
        Action::Deploy {
            preview,
            branch,
            git_ref,
            repo,
            reason,
            pr,
            force,
        } => {
            let build = cdeploy_core::config::BuildConfig {
                root: link.root.clone(),
                skip_unchanged: force.then_some(false),
                ..Default::default()
            };
            let req = CreateDeployment {
                git: Some(api::GitSource {
                    url: link.repo.clone(),
                    git_ref: Some(git_ref.clone()),
                }),
                preview,
                branch,
                build: (!build.is_empty()).then_some(build),
                ..Default::default()
            };
            let (commit, reason) = status_target(app, link, forge, (git_ref, pr), &repo, reason);
            // A redelivery racing the first gets the same deployment.
            let key = incoming.delivery.as_ref().map(|d| format!("{forge}:{d}"));
            let d = match deployments::start(app, slug, req, key, commit).await {
                Ok(d) => d,
                Err(e) => {
                    let why = format!(
                        "{reason}, but the deployment was not created: {}",
                        e.message
                    );
                    incoming.record(app, "refused", &why, None).await?;
                    return Err(e);
                }
            };
            let id = d.id.clone();
            let d = incoming
                .record(app, "accepted", &reason, Some(id.clone()))
                .await?;
            skipped_meanwhile(app, &id).await;
            Ok((Outcome::Deployed, d))
        }
    }
}

/// A build skipped before its delivery was recorded: the delivery says so too.
async fn skipped_meanwhile(app: &App, id: &str) {
    if let Ok(Some(from)) = app
        .store
        .get_deployment(id)
        .await
        .map(|d| d.and_then(|d| d.reused_from))
    {
        let reason = crate::lifecycle::skipped_reason(&from);
        if let Err(e) = app.store.delivery_skipped(id, &reason).await {
            tracing::warn!(deployment = id, error = %e, "cannot mark its delivery skipped");
        }
    }
}

/// Where the deployment's commit statuses go, if anywhere, and the reason to record.
/// Statuses go to the linked repository, with the operator's forge token: never to a
/// repository a payload names that is not the linked one.
fn status_target(
    app: &App,
    link: &GitLinkRow,
    forge: &str,
    (sha, pr): (String, Option<u64>),
    named: &str,
    reason: String,
) -> (Option<Commit>, String) {
    let reports = app
        .lifecycle
        .statuses
        .as_ref()
        .is_some_and(|s| s.reports(forge));
    match (reports, status_repo(&link.repo, named)) {
        (false, _) => (None, reason),
        (true, Some(repo)) => (
            Some(Commit {
                forge: forge.to_string(),
                repo,
                sha,
                pr,
            }),
            reason,
        ),
        (true, None) => (
            None,
            format!(
                "{reason}; no commit status: the delivery names repository {named:?}, not the linked {}",
                // Read tokens see delivery reasons: never a credential of the URL.
                cdeploy_core::git::redact_url(&link.repo)
            ),
        ),
    }
}

/// Stops a branch's running builds and removes its alias; answers whether it had one.
async fn remove_alias(app: &App, slug: &str, branch: &str) -> Result<bool> {
    let Some(label) = ids::branch_label(branch, slug) else {
        return Ok(false);
    };
    // Its builds still running would bring the alias back when they finish: stopped
    // and waited for, as when a project is deleted.
    let running: Vec<_> = app
        .store
        .list_deployments(slug, 1000)
        .await?
        .into_iter()
        .filter(|d| {
            d.preview
                && d.branch
                    .as_deref()
                    .and_then(|b| ids::branch_label(b, slug))
                    .is_some_and(|l| l == label)
        })
        .collect();
    stop_builds(app, &running).await?;
    let had = app.store.delete_alias(slug, &label).await?;
    app.storage.delete(&layout::alias(slug, &label)).await?;
    if let Some(proxy) = &app.lifecycle.proxy {
        proxy.invalidate_alias(slug, &label).await;
    }
    Ok(had)
}
