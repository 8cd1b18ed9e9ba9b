//! The forges' payloads: what a delivery asks for (a push, a pull or merge request
//! opened, updated or closed), whichever forge sent it. Only the fields a decision needs
//! are read, and a payload that lacks one is refused naming it.

use cdeploy_core::git;
use serde_json::Value;

use super::Forge;

/// A payload that is not what its event says it is: the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

/// What a delivery asks for, whichever forge sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Push {
        branch: String,
        /// `None`: the branch was deleted.
        sha: Option<String>,
        /// The repository the forge names (`owner/name`, GitLab's `group/sub/project`):
        /// commit statuses go to the linked repository only when it is this one
        /// ([`status_repo`]).
        repo: String,
    },
    PullRequest {
        number: u64,
        action: PrAction,
        head_branch: String,
        head_sha: String,
        repo: String,
        /// The head's repository, when it is not the base one.
        fork: Option<String>,
    },
    /// Anything else; the reason it is ignored.
    Ignored(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrAction {
    Open,
    Close,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn zero_sha(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

/// Reads a delivery's payload. `Err` only for a payload that is not what its event
/// says it is.
pub fn parse(forge: Forge, event: &str, payload: &Value) -> Result<Request, PayloadError> {
    let missing = |what: &str| PayloadError(format!("the {event} payload has no {what}"));
    match (forge, event) {
        (Forge::GitHub, "ping") | (Forge::Gitea, "ping") => Ok(Request::Ignored(
            "a ping: the webhook reaches cdeploy and its secret matches".into(),
        )),
        (Forge::GitHub | Forge::Gitea, "push") | (Forge::GitLab, "Push Hook") => {
            push(forge, payload, &missing)
        }
        (Forge::GitLab, "Tag Push Hook") => Ok(Request::Ignored("a tag push".into())),
        (Forge::GitHub | Forge::Gitea, "pull_request") => pull_request(payload, &missing),
        (Forge::GitLab, "Merge Request Hook") => merge_request(payload, &missing),
        (_, other) => Ok(Request::Ignored(format!(
            "{other} events do not deploy (send push and pull request events)"
        ))),
    }
}

/// A push (GitHub, Gitea) or Push Hook (GitLab).
fn push(
    forge: Forge,
    payload: &Value,
    missing: &dyn Fn(&str) -> PayloadError,
) -> Result<Request, PayloadError> {
    let git_ref = str_at(payload, &["ref"]).ok_or_else(|| missing("ref"))?;
    let Some(branch) = git_ref.strip_prefix("refs/heads/") else {
        return Ok(Request::Ignored(format!(
            "a push to {git_ref}, not to a branch"
        )));
    };
    let repo = if forge == Forge::GitLab {
        str_at(payload, &["project", "path_with_namespace"])
            .ok_or_else(|| missing("project.path_with_namespace"))?
            .to_string()
    } else {
        str_at(payload, &["repository", "full_name"])
            .ok_or_else(|| missing("repository.full_name"))?
            .to_string()
    };
    let after = str_at(payload, &["after"]).unwrap_or("");
    let deleted = payload.get("deleted").and_then(Value::as_bool) == Some(true) || zero_sha(after);
    let sha = if deleted {
        None
    } else {
        let sha = match forge {
            Forge::GitLab => str_at(payload, &["checkout_sha"]).unwrap_or(after),
            _ => after,
        };
        if !git::is_commit_id(sha) {
            return Err(missing("commit id (after)"));
        }
        Some(sha.to_string())
    };
    Ok(Request::Push {
        branch: branch.to_string(),
        sha,
        repo,
    })
}

/// A GitHub or Gitea `pull_request` event.
fn pull_request(
    payload: &Value,
    missing: &dyn Fn(&str) -> PayloadError,
) -> Result<Request, PayloadError> {
    let action = str_at(payload, &["action"]).ok_or_else(|| missing("action"))?;
    let action = match action {
        "opened" | "reopened" | "synchronize" | "synchronized" => PrAction::Open,
        "closed" => PrAction::Close,
        other => {
            return Ok(Request::Ignored(format!(
                "pull request {other}: nothing to build"
            )))
        }
    };
    let number = payload
        .get("number")
        .or_else(|| payload.get("pull_request").and_then(|p| p.get("number")))
        .and_then(Value::as_u64)
        .ok_or_else(|| missing("number"))?;
    let pr = payload
        .get("pull_request")
        .ok_or_else(|| missing("pull_request"))?;
    let head_sha = str_at(pr, &["head", "sha"]).ok_or_else(|| missing("pull_request.head.sha"))?;
    let head_branch =
        str_at(pr, &["head", "ref"]).ok_or_else(|| missing("pull_request.head.ref"))?;
    let repo = str_at(payload, &["repository", "full_name"])
        .or_else(|| str_at(pr, &["base", "repo", "full_name"]))
        .ok_or_else(|| missing("repository.full_name"))?;
    let head_repo = str_at(pr, &["head", "repo", "full_name"]);
    let fork = match head_repo {
        Some(h) if h == repo => None,
        Some(h) => Some(h.to_string()),
        None => Some("a deleted repository".to_string()),
    };
    if !git::is_commit_id(head_sha) {
        return Err(missing("commit id (pull_request.head.sha)"));
    }
    Ok(Request::PullRequest {
        number,
        action,
        head_branch: head_branch.to_string(),
        head_sha: head_sha.to_string(),
        repo: repo.to_string(),
        fork,
    })
}

/// A GitLab Merge Request Hook.
fn merge_request(
    payload: &Value,
    missing: &dyn Fn(&str) -> PayloadError,
) -> Result<Request, PayloadError> {
    let attrs = payload
        .get("object_attributes")
        .ok_or_else(|| missing("object_attributes"))?;
    let action = str_at(attrs, &["action"]).unwrap_or("");
    let action = match action {
        "open" | "reopen" => PrAction::Open,
        // An update without `oldrev` changed the title or labels, not the code.
        "update" if attrs.get("oldrev").is_some_and(|v| v.is_string()) => PrAction::Open,
        "close" | "merge" => PrAction::Close,
        "update" => {
            return Ok(Request::Ignored(
                "merge request updated without new commits".into(),
            ))
        }
        other => {
            return Ok(Request::Ignored(format!(
                "merge request {other}: nothing to build"
            )))
        }
    };
    let number = attrs
        .get("iid")
        .and_then(Value::as_u64)
        .ok_or_else(|| missing("object_attributes.iid"))?;
    let head_sha = str_at(attrs, &["last_commit", "id"])
        .ok_or_else(|| missing("object_attributes.last_commit.id"))?;
    let head_branch = str_at(attrs, &["source_branch"])
        .ok_or_else(|| missing("object_attributes.source_branch"))?;
    let target = attrs.get("target_project_id").and_then(Value::as_u64);
    let source = attrs.get("source_project_id").and_then(Value::as_u64);
    let target = target
        .or_else(|| {
            payload
                .get("project")
                .and_then(|p| p.get("id"))
                .and_then(Value::as_u64)
        })
        .ok_or_else(|| missing("object_attributes.target_project_id"))?;
    let repo = str_at(attrs, &["target", "path_with_namespace"])
        .or_else(|| str_at(payload, &["project", "path_with_namespace"]))
        .ok_or_else(|| missing("object_attributes.target.path_with_namespace"))?
        .to_string();
    let fork = match source {
        Some(s) if s == target => None,
        Some(s) => Some(
            str_at(attrs, &["source", "path_with_namespace"])
                .map(str::to_string)
                .unwrap_or_else(|| format!("project {s}")),
        ),
        None => None,
    };
    if !git::is_commit_id(head_sha) {
        return Err(missing("commit id (last_commit.id)"));
    }
    Ok(Request::PullRequest {
        number,
        action,
        head_branch: head_branch.to_string(),
        head_sha: head_sha.to_string(),
        repo,
        fork,
    })
}
