//! The forges' payloads: what a delivery asks for (a push, a pull or merge request
//! opened, updated or closed), whichever forge sent it. Only the fields a decision needs
//! are read, into the typed structs of [`wire`]; a payload that lacks one is refused
//! naming it, and one whose field has the wrong type is refused with serde's reason.

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

fn zero_sha(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

/// The fields of the forges' payloads a decision reads, typed. Every field is optional
/// here so a missing one is refused naming its path (serde's own message would not).
mod wire {
    use serde::Deserialize;

    /// A GitHub or Gitea repository.
    #[derive(Debug, Default, Deserialize)]
    pub struct Repo {
        pub full_name: Option<String>,
    }

    /// A GitLab project.
    #[derive(Debug, Default, Deserialize)]
    pub struct Project {
        pub id: Option<u64>,
        pub path_with_namespace: Option<String>,
    }

    /// `push` (GitHub, Gitea) and `Push Hook` (GitLab).
    #[derive(Debug, Deserialize)]
    pub struct Push {
        #[serde(rename = "ref")]
        pub git_ref: Option<String>,
        pub after: Option<String>,
        pub deleted: Option<bool>,
        /// GitLab: the commit to check out (`after` may be a merge's).
        pub checkout_sha: Option<String>,
        pub repository: Option<Repo>,
        pub project: Option<Project>,
    }

    /// GitHub's and Gitea's `pull_request`.
    #[derive(Debug, Deserialize)]
    pub struct PullRequestEvent {
        pub action: Option<String>,
        pub number: Option<u64>,
        pub pull_request: Option<PullRequest>,
        pub repository: Option<Repo>,
    }

    #[derive(Debug, Deserialize)]
    pub struct PullRequest {
        pub number: Option<u64>,
        pub head: Option<Branch>,
        pub base: Option<Branch>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct Branch {
        #[serde(rename = "ref")]
        pub git_ref: Option<String>,
        pub sha: Option<String>,
        pub repo: Option<Repo>,
    }

    /// GitLab's `Merge Request Hook`.
    #[derive(Debug, Deserialize)]
    pub struct MergeRequestEvent {
        pub object_attributes: Option<MergeRequest>,
        pub project: Option<Project>,
    }

    #[derive(Debug, Deserialize)]
    pub struct MergeRequest {
        pub action: Option<String>,
        /// Present on an update that brought new commits.
        pub oldrev: Option<String>,
        pub iid: Option<u64>,
        pub last_commit: Option<Commit>,
        pub source_branch: Option<String>,
        pub target_project_id: Option<u64>,
        pub source_project_id: Option<u64>,
        pub target: Option<Project>,
        pub source: Option<Project>,
    }

    #[derive(Debug, Deserialize)]
    pub struct Commit {
        pub id: Option<String>,
    }
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
            push(forge, typed(event, payload)?, &missing)
        }
        (Forge::GitLab, "Tag Push Hook") => Ok(Request::Ignored("a tag push".into())),
        (Forge::GitHub | Forge::Gitea, "pull_request") => {
            pull_request(typed(event, payload)?, &missing)
        }
        (Forge::GitLab, "Merge Request Hook") => merge_request(typed(event, payload)?, &missing),
        (_, other) => Ok(Request::Ignored(format!(
            "{other} events do not deploy (send push and pull request events)"
        ))),
    }
}

/// `payload` read as the event's type: a field of the wrong type refuses it.
fn typed<T: serde::de::DeserializeOwned>(event: &str, payload: &Value) -> Result<T, PayloadError> {
    T::deserialize(payload)
        .map_err(|e| PayloadError(format!("the {event} payload does not read: {e}")))
}

/// A push (GitHub, Gitea) or Push Hook (GitLab).
fn push(
    forge: Forge,
    payload: wire::Push,
    missing: &dyn Fn(&str) -> PayloadError,
) -> Result<Request, PayloadError> {
    let git_ref = payload.git_ref.ok_or_else(|| missing("ref"))?;
    let Some(branch) = git_ref.strip_prefix("refs/heads/") else {
        return Ok(Request::Ignored(format!(
            "a push to {git_ref}, not to a branch"
        )));
    };
    let repo = if forge == Forge::GitLab {
        payload
            .project
            .and_then(|p| p.path_with_namespace)
            .ok_or_else(|| missing("project.path_with_namespace"))?
    } else {
        payload
            .repository
            .and_then(|r| r.full_name)
            .ok_or_else(|| missing("repository.full_name"))?
    };
    let after = payload.after.unwrap_or_default();
    let deleted = payload.deleted == Some(true) || zero_sha(&after);
    let sha = if deleted {
        None
    } else {
        let sha = match forge {
            Forge::GitLab => payload.checkout_sha.unwrap_or(after),
            _ => after,
        };
        if !git::is_commit_id(&sha) {
            return Err(missing("commit id (after)"));
        }
        Some(sha)
    };
    Ok(Request::Push {
        branch: branch.to_string(),
        sha,
        repo,
    })
}

/// A GitHub or Gitea `pull_request` event.
fn pull_request(
    payload: wire::PullRequestEvent,
    missing: &dyn Fn(&str) -> PayloadError,
) -> Result<Request, PayloadError> {
    let action = payload.action.ok_or_else(|| missing("action"))?;
    let action = match action.as_str() {
        "opened" | "reopened" | "synchronize" | "synchronized" => PrAction::Open,
        "closed" => PrAction::Close,
        other => {
            return Ok(Request::Ignored(format!(
                "pull request {other}: nothing to build"
            )))
        }
    };
    let pr = payload
        .pull_request
        .ok_or_else(|| missing("pull_request"))?;
    let number = payload
        .number
        .or(pr.number)
        .ok_or_else(|| missing("number"))?;
    let head = pr.head.unwrap_or_default();
    let head_sha = head.sha.ok_or_else(|| missing("pull_request.head.sha"))?;
    let head_branch = head
        .git_ref
        .ok_or_else(|| missing("pull_request.head.ref"))?;
    let repo = payload
        .repository
        .and_then(|r| r.full_name)
        .or_else(|| pr.base.and_then(|b| b.repo).and_then(|r| r.full_name))
        .ok_or_else(|| missing("repository.full_name"))?;
    let fork = match head.repo.and_then(|r| r.full_name) {
        Some(h) if h == repo => None,
        Some(h) => Some(h),
        None => Some("a deleted repository".to_string()),
    };
    if !git::is_commit_id(&head_sha) {
        return Err(missing("commit id (pull_request.head.sha)"));
    }
    Ok(Request::PullRequest {
        number,
        action,
        head_branch,
        head_sha,
        repo,
        fork,
    })
}

/// A GitLab Merge Request Hook.
fn merge_request(
    payload: wire::MergeRequestEvent,
    missing: &dyn Fn(&str) -> PayloadError,
) -> Result<Request, PayloadError> {
    let attrs = payload
        .object_attributes
        .ok_or_else(|| missing("object_attributes"))?;
    let action = match attrs.action.as_deref().unwrap_or("") {
        "open" | "reopen" => PrAction::Open,
        // An update without `oldrev` changed the title or labels, not the code.
        "update" if attrs.oldrev.is_some() => PrAction::Open,
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
    let number = attrs.iid.ok_or_else(|| missing("object_attributes.iid"))?;
    let head_sha = attrs
        .last_commit
        .and_then(|c| c.id)
        .ok_or_else(|| missing("object_attributes.last_commit.id"))?;
    let head_branch = attrs
        .source_branch
        .ok_or_else(|| missing("object_attributes.source_branch"))?;
    let project = payload.project.unwrap_or_default();
    let target = attrs
        .target_project_id
        .or(project.id)
        .ok_or_else(|| missing("object_attributes.target_project_id"))?;
    let repo = attrs
        .target
        .and_then(|t| t.path_with_namespace)
        .or(project.path_with_namespace)
        .ok_or_else(|| missing("object_attributes.target.path_with_namespace"))?;
    let fork = match attrs.source_project_id {
        Some(s) if s == target => None,
        Some(s) => Some(
            attrs
                .source
                .and_then(|p| p.path_with_namespace)
                .unwrap_or_else(|| format!("project {s}")),
        ),
        None => None,
    };
    if !git::is_commit_id(&head_sha) {
        return Err(missing("commit id (last_commit.id)"));
    }
    Ok(Request::PullRequest {
        number,
        action,
        head_branch,
        head_sha,
        repo,
        fork,
    })
}
