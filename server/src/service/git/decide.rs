//! The decision a delivery makes: deploy production or a preview, remove a preview's
//! alias, or ignore it, saying why. Pure: no store, no network.

use super::payload::{PrAction, Request};

/// What cdeploy does about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Deploy {
        preview: bool,
        branch: Option<String>,
        git_ref: String,
        repo: String,
        reason: String,
        /// The pull request it is for (its comment shows the preview).
        pr: Option<u64>,
        /// Build even when a ready deployment was built from the same inputs (a deploy
        /// hook: what changed is outside the repository).
        force: bool,
    },
    /// A closed pull request or a deleted branch: its alias goes.
    RemoveAlias {
        branch: String,
        reason: String,
    },
    Ignore(String),
}

/// Decides what a request does to a project whose production branch is `production`.
pub fn decide(request: Request, production: &str) -> Action {
    match request {
        Request::Ignored(why) => Action::Ignore(why),
        Request::Push {
            branch,
            sha: None,
            ..
        } => Action::RemoveAlias {
            reason: format!("branch {branch} was deleted"),
            branch,
        },
        Request::Push {
            branch,
            sha: Some(sha),
            repo,
        } if branch == production => Action::Deploy {
            preview: false,
            branch: None,
            reason: format!("a push to {branch}, the production branch"),
            git_ref: sha,
            repo,
            pr: None,
            force: false,
        },
        Request::Push {
            branch,
            sha: Some(sha),
            repo,
        } => Action::Deploy {
            preview: true,
            reason: format!("a push to branch {branch}: a preview"),
            branch: Some(branch),
            git_ref: sha,
            repo,
            pr: None,
            force: false,
        },
        Request::PullRequest { fork: Some(fork), number, .. } => Action::Ignore(format!(
            "pull request #{number} comes from a fork ({fork}): its code is not the team's, so it is not built (deploy it by hand once reviewed)"
        )),
        Request::PullRequest {
            number,
            action: PrAction::Close,
            ..
        } => Action::RemoveAlias {
            branch: format!("pr-{number}"),
            reason: format!("pull request #{number} was closed"),
        },
        Request::PullRequest {
            number,
            action: PrAction::Open,
            head_branch,
            head_sha,
            repo,
            ..
        } => Action::Deploy {
            preview: true,
            branch: Some(format!("pr-{number}")),
            reason: format!("pull request #{number} ({head_branch}) opened or updated"),
            git_ref: head_sha,
            repo,
            pr: Some(number),
            force: false,
        },
    }
}
