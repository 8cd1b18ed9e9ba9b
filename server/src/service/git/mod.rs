//! Git push deploys: a project linked to its repository deploys on the forge's webhooks
//! (GitHub, GitLab, Gitea/Forgejo) and on its deploy hooks.
//!
//! A push to the production branch deploys production; a push to another branch, a
//! preview at `<branch>--<slug>`; a pull request opened or updated, a preview at
//! `pr-<n>--<slug>`, whose alias goes when it closes. Builds always clone the linked
//! repository at the pushed commit: a payload's URLs are never used. Pull requests from
//! forks are not built (their code is nobody's on the team, and previews get secrets).
//!
//! # Layout
//! * this file — the forges, the link (its sealed webhook secret, one per forge) and
//!   where statuses may go.
//! * [`payload`] — what a delivery's payload asks for.
//! * [`decide`] — what cdeploy does about it.
//! * [`deliver`] — a delivery's way through: replays refused, the decision carried out
//!   and recorded.

pub mod decide;
pub mod deliver;
pub mod payload;

use std::collections::BTreeMap;

use cdeploy_core::api::{Delivery, GitLink, LinkGit};
use cdeploy_core::ids;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::error::{Error, Result};
use super::keyring::webhook_secret_aad;
use super::validate::{being_deleted, check_branch, check_git, check_slug};
use super::App;
use crate::db::{DeliveryRow, GitLinkRow};

/// Deliveries kept per project (refused ones count: anyone can send them).
pub const KEEP_DELIVERIES: u32 = 500;
/// Most deploy hooks per project.
pub const MAX_HOOKS: usize = 50;

/// The forges cdeploy takes deliveries from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    GitLab,
    Gitea,
}

impl Forge {
    pub const ALL: [Forge; 3] = [Forge::GitHub, Forge::GitLab, Forge::Gitea];

    pub fn as_str(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::GitLab => "gitlab",
            Forge::Gitea => "gitea",
        }
    }

    pub fn parse(s: &str) -> Option<Forge> {
        match s {
            "github" => Some(Forge::GitHub),
            "gitlab" => Some(Forge::GitLab),
            // Forgejo is a Gitea fork and speaks its webhook format.
            "gitea" | "forgejo" => Some(Forge::Gitea),
            _ => None,
        }
    }
}

/// The secret `forge` signs (or sends) deliveries with: each forge its own, derived from
/// the link's sealed secret, so GitLab's token, which it sends in clear, signs nothing
/// for the GitHub or Gitea routes. A link made before per-forge secrets uses the one
/// secret for every forge until `--new-secret`.
pub fn forge_secret(master: &str, forge: Forge, per_forge: bool) -> String {
    if !per_forge {
        return master.to_string();
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(master.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"cdeploy webhook secret/");
    mac.update(forge.as_str().as_bytes());
    hex::encode(mac.finalize().into_bytes())[..40].to_string()
}

/// The link's secret, opened.
pub fn open_secret(app: &App, link: &GitLinkRow) -> Result<String> {
    app.keys()?
        .open_with(
            &webhook_secret_aad(&link.slug),
            &link.key_id,
            &link.sealed_secret,
        )
        .map_err(|e| Error::internal("the project's webhook secret does not open", e))
}

/// Where each forge delivers to.
fn webhook_paths(slug: &str) -> BTreeMap<String, String> {
    Forge::ALL
        .iter()
        .map(|f| {
            (
                f.as_str().to_string(),
                format!("/v1/webhooks/{}/{slug}", f.as_str()),
            )
        })
        .collect()
}

/// The link as its admin sees it: with each forge's secret and webhook path.
pub fn link_json(app: &App, link: &GitLinkRow) -> Result<GitLink> {
    let master = open_secret(app, link)?;
    Ok(GitLink {
        repo: link.repo.clone(),
        production_branch: link.production_branch.clone(),
        root: link.root.clone(),
        webhook_secrets: Forge::ALL
            .iter()
            .map(|f| {
                (
                    f.as_str().to_string(),
                    forge_secret(&master, *f, link.per_forge_secrets),
                )
            })
            .collect(),
        webhooks: webhook_paths(&link.slug),
        created_at: link.created_at.clone(),
    })
}

/// Links a project (created if new) to its repository; the webhook secret is kept
/// unless `new_secret` asks for a new one.
pub async fn link(app: &App, slug: &str, req: &LinkGit) -> Result<GitLinkRow> {
    check_slug(slug)?;
    check_git(&req.repo, None)?;
    let branch = req
        .production_branch
        .clone()
        .unwrap_or_else(|| "main".into());
    check_branch(&branch)?;
    if let Some(root) = &req.root {
        cdeploy_core::config::check_relative_path(root)
            .map_err(|m| Error::bad_request(format!("root {m}")))?;
    }
    let keys = app.keys()?;
    app.store.create_project(slug, Some(&req.repo)).await?;
    if app.project(slug).await?.deleting {
        return Err(being_deleted(slug));
    }
    app.store.set_project_git(slug, Some(&req.repo)).await?;
    let existing = app.store.git_link(slug).await?;
    // Kept unless given (`.` clears it): rotating the secret must not move the app.
    let root = match &req.root {
        Some(r) if r == "." => None,
        Some(r) => Some(r.clone()),
        None => existing.as_ref().and_then(|l| l.root.clone()),
    };
    let (key_id, sealed_secret, per_forge_secrets) = match existing {
        Some(l) if !req.new_secret => (l.key_id, l.sealed_secret, l.per_forge_secrets),
        _ => {
            let (key_id, sealed) = keys.seal_with(&webhook_secret_aad(slug), &ids::random_id(40));
            (key_id, sealed, true)
        }
    };
    let row = GitLinkRow {
        slug: slug.to_string(),
        repo: req.repo.clone(),
        production_branch: branch,
        key_id,
        sealed_secret,
        created_at: cdeploy_core::now_rfc3339(),
        per_forge_secrets,
        root,
    };
    app.store.put_git_link(&row).await?;
    app.store
        .git_link(slug)
        .await?
        .ok_or_else(|| Error::internal("the link vanished", slug))
}

/// The project's link, or `404` saying how to make one.
pub async fn linked(app: &App, slug: &str) -> Result<GitLinkRow> {
    app.project(slug).await?;
    app.store.git_link(slug).await?.ok_or_else(|| {
        Error::not_found(format!(
            "a repository link of project {slug} (`cdeploy git link` makes one)"
        ))
    })
}

pub fn delivery_json(d: &DeliveryRow) -> Delivery {
    Delivery {
        id: d.id.clone(),
        at: d.at.clone(),
        forge: d.forge.clone(),
        event: d.event.clone(),
        delivery: d.delivery.clone(),
        decision: d.decision.clone(),
        reason: d.reason.clone(),
        deployment: d.deployment.clone(),
    }
}

/// The linked repository's own name for the repository a delivery names, when they are
/// the same: the last segments of the clone URL's path (`.git` dropped) equal the name's
/// segments, ignoring case. A name with an empty, `.` or `..` segment names nothing.
/// Statuses are posted to what this returns, so a payload can never steer them elsewhere.
pub fn status_repo(link_url: &str, named: &str) -> Option<String> {
    let path = match url::Url::parse(link_url) {
        Ok(u) if u.has_host() => u.path().to_string(),
        // scp-like `git@host:owner/name.git`
        _ => link_url.split_once(':')?.1.to_string(),
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let linked: Vec<&str> = path.split('/').collect();
    let named: Vec<&str> = named.split('/').collect();
    let bad = |seg: &&str| seg.is_empty() || *seg == "." || *seg == "..";
    if named.iter().any(bad) || linked.iter().any(bad) || named.len() > linked.len() {
        return None;
    }
    let tail = &linked[linked.len() - named.len()..];
    tail.iter()
        .zip(&named)
        .all(|(a, b)| a.eq_ignore_ascii_case(b))
        .then(|| tail.join("/"))
}

#[cfg(test)]
mod tests {
    use super::decide::{decide, Action};
    use super::payload::{parse, Request};
    use super::*;
    use serde_json::Value;

    const SHA: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

    fn github_push(branch: &str, after: &str) -> Value {
        serde_json::json!({
            "ref": format!("refs/heads/{branch}"),
            "before": "0000000000000000000000000000000000000000",
            "after": after,
            "created": false, "deleted": after.bytes().all(|b| b == b'0'), "forced": false,
            "repository": {"id": 1296269, "full_name": "octocat/Hello-World", "clone_url": "https://github.com/octocat/Hello-World.git"},
            "pusher": {"name": "octocat"}
        })
    }

    #[test]
    fn pushes_deploy_production_or_a_branch_preview() {
        let prod = decide(
            parse(Forge::GitHub, "push", &github_push("main", SHA)).unwrap(),
            "main",
        );
        assert!(
            matches!(&prod, Action::Deploy { preview: false, branch: None, git_ref, repo, .. } if git_ref == SHA && repo == "octocat/Hello-World"),
            "{prod:?}"
        );
        let feat = decide(
            parse(Forge::Gitea, "push", &github_push("feat/x", SHA)).unwrap(),
            "main",
        );
        assert!(
            matches!(&feat, Action::Deploy { preview: true, branch: Some(b), .. } if b == "feat/x"),
            "{feat:?}"
        );
        let gone = decide(
            parse(
                Forge::GitHub,
                "push",
                &github_push("feat/x", "0000000000000000000000000000000000000000"),
            )
            .unwrap(),
            "main",
        );
        assert!(matches!(gone, Action::RemoveAlias { ref branch, .. } if branch == "feat/x"));
        let tag = serde_json::json!({"ref": "refs/tags/v1", "after": SHA, "repository": {"full_name": "o/r"}});
        assert!(matches!(
            decide(parse(Forge::GitHub, "push", &tag).unwrap(), "main"),
            Action::Ignore(_)
        ));
    }

    #[test]
    fn pull_requests_get_a_pr_alias_and_forks_are_not_built() {
        let pr = |action: &str, head_repo: &str| {
            serde_json::json!({
                "action": action, "number": 7,
                "pull_request": {"number": 7, "head": {"ref": "feature", "sha": SHA, "repo": {"full_name": head_repo}}, "base": {"ref": "main", "repo": {"full_name": "o/r"}}},
                "repository": {"full_name": "o/r"}
            })
        };
        let opened = decide(
            parse(Forge::GitHub, "pull_request", &pr("opened", "o/r")).unwrap(),
            "main",
        );
        assert!(
            matches!(&opened, Action::Deploy { preview: true, branch: Some(b), git_ref, .. } if b == "pr-7" && git_ref == SHA)
        );
        let synced = decide(
            parse(Forge::Gitea, "pull_request", &pr("synchronized", "o/r")).unwrap(),
            "main",
        );
        assert!(matches!(synced, Action::Deploy { .. }));
        let closed = decide(
            parse(Forge::GitHub, "pull_request", &pr("closed", "o/r")).unwrap(),
            "main",
        );
        assert!(matches!(closed, Action::RemoveAlias { ref branch, .. } if branch == "pr-7"));
        let fork = decide(
            parse(Forge::GitHub, "pull_request", &pr("opened", "evil/r")).unwrap(),
            "main",
        );
        assert!(matches!(fork, Action::Ignore(ref why) if why.contains("fork")));
        let labeled = decide(
            parse(Forge::GitHub, "pull_request", &pr("labeled", "o/r")).unwrap(),
            "main",
        );
        assert!(matches!(labeled, Action::Ignore(_)));
    }

    #[test]
    fn gitlab_merge_requests_and_pushes() {
        let mr = |action: &str, oldrev: Option<&str>, source: u64| {
            let mut attrs = serde_json::json!({
                "iid": 3, "action": action, "source_branch": "fix", "target_branch": "main",
                "source_project_id": source, "target_project_id": 15,
                "last_commit": {"id": SHA}
            });
            if let Some(o) = oldrev {
                attrs["oldrev"] = o.into();
            }
            serde_json::json!({"object_kind": "merge_request", "project": {"id": 15, "path_with_namespace": "g/sub/p"}, "object_attributes": attrs})
        };
        let opened = decide(
            parse(Forge::GitLab, "Merge Request Hook", &mr("open", None, 15)).unwrap(),
            "main",
        );
        assert!(
            matches!(&opened, Action::Deploy { branch: Some(b), repo, .. } if b == "pr-3" && repo == "g/sub/p")
        );
        let retitled = decide(
            parse(Forge::GitLab, "Merge Request Hook", &mr("update", None, 15)).unwrap(),
            "main",
        );
        assert!(matches!(retitled, Action::Ignore(_)));
        let pushed = decide(
            parse(
                Forge::GitLab,
                "Merge Request Hook",
                &mr("update", Some(SHA), 15),
            )
            .unwrap(),
            "main",
        );
        assert!(matches!(pushed, Action::Deploy { .. }));
        let merged = decide(
            parse(Forge::GitLab, "Merge Request Hook", &mr("merge", None, 15)).unwrap(),
            "main",
        );
        assert!(matches!(merged, Action::RemoveAlias { .. }));
        let fork = decide(
            parse(Forge::GitLab, "Merge Request Hook", &mr("open", None, 99)).unwrap(),
            "main",
        );
        assert!(matches!(fork, Action::Ignore(_)));
        let push = serde_json::json!({"object_kind": "push", "ref": "refs/heads/main", "after": SHA, "checkout_sha": SHA, "project_id": 15, "project": {"id": 15, "path_with_namespace": "g/p"}});
        let prod = decide(parse(Forge::GitLab, "Push Hook", &push).unwrap(), "main");
        assert!(matches!(&prod, Action::Deploy { preview: false, repo, .. } if repo == "g/p"));
    }

    #[test]
    fn statuses_go_to_the_linked_repository_only() {
        let gh = "https://github.com/Octo-Org/octo-repo.git";
        assert_eq!(
            status_repo(gh, "octo-org/octo-repo").as_deref(),
            Some("Octo-Org/octo-repo")
        );
        assert_eq!(
            status_repo("git@gitlab.com:group/sub/project.git", "group/sub/project").as_deref(),
            Some("group/sub/project")
        );
        assert_eq!(
            status_repo("git://127.0.0.1:9/prefix/o/r.git", "o/r").as_deref(),
            Some("o/r")
        );
        assert_eq!(
            status_repo("https://user:token@gitea.example/o/r", "o/r").as_deref(),
            Some("o/r")
        );
        for named in [
            "../../../escape",
            "o/../../x",
            "someone/else",
            "",
            "/o/r",
            "o//r",
            ".",
            "a/b/c/d/e/f",
        ] {
            assert_eq!(status_repo(gh, named), None, "{named}");
        }
        assert_eq!(
            status_repo("https://github.com/../x.git", "x"),
            Some("x".into())
        );
        assert_eq!(status_repo("not a url", "o/r"), None);
    }

    #[test]
    fn malformed_payloads_are_refused_with_what_is_missing() {
        let err = parse(Forge::GitHub, "push", &serde_json::json!({"after": SHA})).unwrap_err();
        assert!(err.0.contains("ref"), "{err}");
        let bad_sha = serde_json::json!({"ref": "refs/heads/main", "after": "nope", "repository": {"full_name": "o/r"}});
        assert!(parse(Forge::GitHub, "push", &bad_sha).is_err());
        assert!(matches!(
            parse(Forge::GitHub, "issues", &serde_json::json!({})).unwrap(),
            Request::Ignored(_)
        ));
    }
}
