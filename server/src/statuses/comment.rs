//! One comment per pull request, kept up to date by its deployments: the preview's URL
//! and status. The first report reserves the pull request's row and creates the
//! comment, whose id is stored; every later one edits it (a redelivery, a new push, a
//! rebuild, another replica: never a second comment), unless it reports a deployment
//! older than the one shown. One a person deleted is made again.

use cdeploy_core::event::Status;
use serde_json::Value;

use super::{authed, repo_path, ForgeApi, Report};
use crate::db::{CommitTarget, PrSlot, Store};

/// The pull request a report is for.
pub struct Pr<'a> {
    /// The project whose comment it is (two projects of one repository have one each).
    pub slug: &'a str,
    pub number: i64,
    /// When the reported deployment was created: a late report of an older one does
    /// not replace a newer one's.
    pub deployment_at: &'a str,
}

/// Creates or edits the project's comment on the pull request.
pub async fn upsert(
    http: &reqwest::Client,
    api: &ForgeApi,
    store: &dyn Store,
    t: &CommitTarget,
    pr: Pr<'_>,
    (report, url): (&Report, &str),
) {
    let body = serde_json::json!({ "body": text(pr.slug, t, report, url) });
    let (base, repo, n) = (api.base.trim_end_matches('/'), repo_path(t), pr.number);
    let slot = match store.pr_slot(pr.slug, t, n, pr.deployment_at).await {
        Ok(slot) => slot,
        Err(e) => {
            tracing::warn!(deployment = %t.deployment, error = %e, "cannot read a pull request's comment");
            return;
        }
    };
    if let PrSlot::Edit(id) = &slot {
        let edit = match t.forge.as_str() {
            "gitlab" => http.put(format!(
                "{base}/projects/{repo}/merge_requests/{n}/notes/{id}"
            )),
            _ => http.patch(format!("{base}/repos/{repo}/issues/comments/{id}")),
        };
        match authed(edit, &t.forge, api).json(&body).send().await {
            Ok(resp) if resp.status().is_success() => return,
            // Deleted on the forge: made again below.
            Ok(resp) if resp.status() == reqwest::StatusCode::NOT_FOUND => {}
            Ok(resp) => {
                tracing::warn!(deployment = %t.deployment, forge = %t.forge, status = %resp.status(), "the forge refused to edit the pull request's comment");
                return;
            }
            Err(e) => {
                tracing::warn!(deployment = %t.deployment, forge = %t.forge, error = %e, "cannot edit the pull request's comment");
                return;
            }
        }
    }
    if slot == PrSlot::Skip {
        return;
    }
    let id = create(http, api, t, n, &body).await;
    // Without an id (refused, or no answer) the row goes: the next report tries again.
    if let Err(e) = store.set_pr_comment(pr.slug, t, n, id.as_deref()).await {
        tracing::warn!(deployment = %t.deployment, error = %e, "cannot record the pull request's comment");
    }
}

/// Creates the comment; its id on the forge.
async fn create(
    http: &reqwest::Client,
    api: &ForgeApi,
    t: &CommitTarget,
    n: i64,
    body: &Value,
) -> Option<String> {
    let (base, repo) = (api.base.trim_end_matches('/'), repo_path(t));
    let create = match t.forge.as_str() {
        "gitlab" => http.post(format!("{base}/projects/{repo}/merge_requests/{n}/notes")),
        _ => http.post(format!("{base}/repos/{repo}/issues/{n}/comments")),
    };
    let created = match authed(create, &t.forge, api).json(body).send().await {
        Ok(resp) if resp.status().is_success() => resp.json::<Value>().await.ok(),
        Ok(resp) => {
            tracing::warn!(deployment = %t.deployment, forge = %t.forge, status = %resp.status(), "the forge refused the pull request's comment (check the token's scope)");
            return None;
        }
        Err(e) => {
            tracing::warn!(deployment = %t.deployment, forge = %t.forge, error = %e, "cannot comment on the pull request");
            return None;
        }
    };
    let id = created.as_ref().and_then(|v| match &v["id"] {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    });
    if id.is_none() {
        tracing::warn!(deployment = %t.deployment, forge = %t.forge, "the forge's answer to a new comment has no id: it cannot be edited later");
    }
    id
}

/// The comment, in Markdown (what GitHub, GitLab and Gitea render).
fn text(slug: &str, t: &CommitTarget, r: &Report, url: &str) -> String {
    let status = match r.status {
        Status::Queued | Status::Uploading => "⏳ Queued".to_string(),
        Status::Building => "🔨 Building".to_string(),
        Status::Ready => "✅ Ready".to_string(),
        Status::Failed => format!(
            "❌ Failed: {}",
            r.error
                .as_deref()
                .unwrap_or("the build failed")
                .replace('|', "\\|")
        ),
        Status::Canceled => "⚪ Canceled".to_string(),
    };
    let sha: String = t.sha.chars().take(7).collect();
    format!(
        "**cdeploy** preview of `{slug}` at {sha}\n\n\
         | Status | Preview | Deployment |\n|---|---|---|\n| {status} | {url} | `{}` |\n\n\
         <sub>Updated {} — this comment is edited as new commits deploy.</sub>",
        t.deployment,
        cdeploy_core::now_rfc3339()
    )
}
