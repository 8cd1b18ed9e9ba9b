//! Git push deploys: a project linked to its repository deploys on the forge's webhooks
//! (GitHub, GitLab, Gitea/Forgejo) and on its deploy hooks.
//!
//! * `PUT|GET|DELETE /v1/projects/{slug}/git` (admin): the link, and its webhook secret.
//! * `GET /v1/projects/{slug}/deliveries` (read): every delivery and its decision.
//! * `POST|GET /v1/projects/{slug}/deploy-hooks`, `DELETE …/deploy-hooks/{id}` (admin).
//! * `POST /v1/webhooks/{forge}/{slug}`: a forge's delivery, authenticated by the
//!   project's secret (an HMAC-SHA256 signature of the body; GitLab sends the secret).
//! * `POST /v1/hooks/{token}`: a deploy hook; the URL is the secret.
//!
//! A push to the production branch deploys production; a push to another branch, a
//! preview at `<branch>--<slug>`; a pull request opened or updated, a preview at
//! `pr-<n>--<slug>`, whose alias goes when it closes. Builds always clone the linked
//! repository at the pushed commit: a payload's URLs are never used. Pull requests from
//! forks are not built (their code is nobody's on the team, and previews get secrets).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use cdeploy_core::api::{
    self, CreateDeployHook, CreateDeployment, Delivery, DeployHook, GitLink, LinkGit,
};
use cdeploy_core::{git, ids, layout};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::db::{DeliveryRow, DeployHookRow, GitLinkRow};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::App;

/// Deliveries kept per project (refused ones count: anyone can send them).
pub const KEEP_DELIVERIES: u32 = 500;
/// Largest delivery accepted (GitHub caps its payloads at 25 MB; pushes of thousands of
/// commits are far below this).
pub const MAX_PAYLOAD_BYTES: usize = 5 * 1024 * 1024;
/// Most deploy hooks per project.
const MAX_HOOKS: usize = 50;

/// What the webhook secret is sealed to.
pub fn secret_aad(slug: &str) -> Vec<u8> {
    format!("cdeploy-webhook-secret\0{slug}").into_bytes()
}

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

    fn parse(s: &str) -> Option<Forge> {
        match s {
            "github" => Some(Forge::GitHub),
            "gitlab" => Some(Forge::GitLab),
            // Forgejo is a Gitea fork and speaks its webhook format.
            "gitea" | "forgejo" => Some(Forge::Gitea),
            _ => None,
        }
    }

    fn event(self, headers: &HeaderMap) -> Option<String> {
        let names: &[&str] = match self {
            Forge::GitHub => &["x-github-event"],
            Forge::GitLab => &["x-gitlab-event"],
            Forge::Gitea => &["x-gitea-event", "x-forgejo-event", "x-gogs-event"],
        };
        header(headers, names)
    }

    fn delivery(self, headers: &HeaderMap) -> Option<String> {
        let names: &[&str] = match self {
            Forge::GitHub => &["x-github-delivery"],
            Forge::GitLab => &["x-gitlab-event-uuid", "x-gitlab-webhook-uuid"],
            Forge::Gitea => &["x-gitea-delivery", "x-forgejo-delivery", "x-gogs-delivery"],
        };
        header(headers, names).filter(|d| d.len() <= 100)
    }

    /// Checks a delivery against the project's secret; the reason when it fails.
    fn verify(self, headers: &HeaderMap, body: &[u8], secret: &str) -> Result<(), String> {
        match self {
            Forge::GitLab => {
                let Some(token) = header(headers, &["x-gitlab-token"]) else {
                    return Err("no X-Gitlab-Token header".into());
                };
                if bool::from(token.as_bytes().ct_eq(secret.as_bytes())) {
                    Ok(())
                } else {
                    Err("the X-Gitlab-Token does not match the project's webhook secret".into())
                }
            }
            Forge::GitHub | Forge::Gitea => {
                let names: &[&str] = if self == Forge::GitHub {
                    &["x-hub-signature-256"]
                } else {
                    &["x-gitea-signature", "x-forgejo-signature"]
                };
                let Some(given) = header(headers, names) else {
                    return Err(format!("no {} header", display_header(names[0])));
                };
                let hex_sig = if self == Forge::GitHub {
                    given.strip_prefix("sha256=").unwrap_or("")
                } else {
                    given.as_str()
                };
                let Ok(sig) = hex::decode(hex_sig.trim()) else {
                    return Err(format!(
                        "the {} header is not a hex HMAC-SHA256",
                        display_header(names[0])
                    ));
                };
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                    .expect("HMAC takes any key length");
                mac.update(body);
                mac.verify_slice(&sig).map_err(|_| {
                    format!(
                        "the {} signature does not match the project's webhook secret",
                        display_header(names[0])
                    )
                })
            }
        }
    }
}

fn display_header(lower: &str) -> String {
    match lower {
        "x-hub-signature-256" => "X-Hub-Signature-256".into(),
        "x-gitea-signature" => "X-Gitea-Signature".into(),
        other => other.to_string(),
    }
}

fn header(headers: &HeaderMap, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        headers
            .get(*n)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    })
}

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
pub fn parse(forge: Forge, event: &str, payload: &Value) -> Result<Request, String> {
    let missing = |what: &str| format!("the {event} payload has no {what}");
    match (forge, event) {
        (Forge::GitHub, "ping") | (Forge::Gitea, "ping") => Ok(Request::Ignored(
            "a ping: the webhook reaches cdeploy and its secret matches".into(),
        )),
        (Forge::GitHub | Forge::Gitea, "push") | (Forge::GitLab, "Push Hook") => {
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
            let deleted =
                payload.get("deleted").and_then(Value::as_bool) == Some(true) || zero_sha(after);
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
        (Forge::GitLab, "Tag Push Hook") => Ok(Request::Ignored("a tag push".into())),
        (Forge::GitHub | Forge::Gitea, "pull_request") => {
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
            let head_sha =
                str_at(pr, &["head", "sha"]).ok_or_else(|| missing("pull_request.head.sha"))?;
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
        (Forge::GitLab, "Merge Request Hook") => {
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
        (_, other) => Ok(Request::Ignored(format!(
            "{other} events do not deploy (send push and pull request events)"
        ))),
    }
}

/// What cdeploy does about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Deploy {
        preview: bool,
        branch: Option<String>,
        git_ref: String,
        repo: String,
        reason: String,
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
        },
    }
}

fn webhooks(slug: &str) -> BTreeMap<String, String> {
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

fn open_secret(app: &App, link: &GitLinkRow) -> Result<String, ApiError> {
    crate::secrets::keyring(app)?
        .open_with(&secret_aad(&link.slug), &link.key_id, &link.sealed_secret)
        .map_err(|e| ApiError::internal("the project's webhook secret does not open", e))
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

fn link_json(app: &App, link: &GitLinkRow) -> Result<GitLink, ApiError> {
    let master = open_secret(app, link)?;
    Ok(GitLink {
        repo: link.repo.clone(),
        production_branch: link.production_branch.clone(),
        webhook_secrets: Forge::ALL
            .iter()
            .map(|f| {
                (
                    f.as_str().to_string(),
                    forge_secret(&master, *f, link.per_forge_secrets),
                )
            })
            .collect(),
        webhooks: webhooks(&link.slug),
        created_at: link.created_at.clone(),
    })
}

fn check_branch(b: &str) -> Result<(), ApiError> {
    git::validate_git_ref(b).map_err(|e| ApiError::bad_request(format!("branch {b:?}: {e}")))?;
    if git::is_commit_id(b) || b.len() > 255 {
        return Err(ApiError::bad_request(format!(
            "branch {b:?}: a branch name, at most 255 characters"
        )));
    }
    Ok(())
}

/// `PUT /v1/projects/{slug}/git`.
#[utoipa::path(put, path = "/v1/projects/{slug}/git", tag = "git", params(crate::openapi::SlugPath), request_body = LinkGit, responses((status = 200, body = GitLink), crate::openapi::Errors), security(("bearer" = [])))]
pub async fn link(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    ApiJson(req): ApiJson<LinkGit>,
) -> Result<(axum::Extension<crate::access::AuditDetail>, Json<GitLink>), ApiError> {
    crate::api::check_slug(&slug)?;
    crate::api::check_git(&req.repo, None)?;
    let branch = req
        .production_branch
        .clone()
        .unwrap_or_else(|| "main".into());
    check_branch(&branch)?;
    let keys = crate::secrets::keyring(&app)?;
    app.store.create_project(&slug, Some(&req.repo)).await?;
    if app.project(&slug).await?.deleting {
        return Err(crate::api::being_deleted(&slug));
    }
    app.store.set_project_git(&slug, Some(&req.repo)).await?;
    let existing = app.store.git_link(&slug).await?;
    let (key_id, sealed_secret, per_forge_secrets) = match existing {
        Some(l) if !req.new_secret => (l.key_id, l.sealed_secret, l.per_forge_secrets),
        _ => {
            let (key_id, sealed) = keys.seal_with(&secret_aad(&slug), &ids::random_id(40));
            (key_id, sealed, true)
        }
    };
    let row = GitLinkRow {
        slug: slug.clone(),
        repo: req.repo.clone(),
        production_branch: branch,
        key_id,
        sealed_secret,
        created_at: cdeploy_core::now_rfc3339(),
        per_forge_secrets,
    };
    app.store.put_git_link(&row).await?;
    let row = app
        .store
        .git_link(&slug)
        .await?
        .ok_or_else(|| ApiError::internal("the link vanished", &slug))?;
    let detail = crate::access::AuditDetail(format!(
        "{slug} linked to {} (production branch {}){}",
        cdeploy_core::git::redact_url(&row.repo),
        row.production_branch,
        if req.new_secret {
            ", new webhook secrets"
        } else {
            ""
        }
    ));
    Ok((axum::Extension(detail), Json(link_json(&app, &row)?)))
}

async fn linked(app: &App, slug: &str) -> Result<GitLinkRow, ApiError> {
    app.project(slug).await?;
    app.store.git_link(slug).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "a repository link of project {slug} (`cdeploy git link` makes one)"
        ))
    })
}

/// `GET /v1/projects/{slug}/git`.
#[utoipa::path(get, path = "/v1/projects/{slug}/git", operation_id = "show_git_link", tag = "git", params(crate::openapi::SlugPath), responses((status = 200, body = GitLink), crate::openapi::Errors), security(("bearer" = [])))]
pub async fn show(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<Json<GitLink>, ApiError> {
    let link = linked(&app, &slug).await?;
    Ok(Json(link_json(&app, &link)?))
}

/// `DELETE /v1/projects/{slug}/git`: webhooks and deploy hooks stop deploying.
#[utoipa::path(delete, path = "/v1/projects/{slug}/git", tag = "git", params(crate::openapi::SlugPath), responses((status = 204, description = "Unlinked"), crate::openapi::Errors), security(("bearer" = [])))]
pub async fn unlink(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<(StatusCode, axum::Extension<crate::access::AuditDetail>), ApiError> {
    linked(&app, &slug).await?;
    app.store.delete_git_link(&slug).await?;
    let detail = crate::access::AuditDetail(format!("{slug} unlinked from its repository"));
    Ok((StatusCode::NO_CONTENT, axum::Extension(detail)))
}

#[derive(Debug, Deserialize)]
pub struct LimitQuery {
    limit: Option<u32>,
}

fn delivery_json(d: &DeliveryRow) -> Delivery {
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

/// `GET /v1/projects/{slug}/deliveries?limit=N` (1–500, default 50), newest first.
#[utoipa::path(get, path = "/v1/projects/{slug}/deliveries", tag = "git", params(crate::openapi::SlugPath, ("limit" = Option<u32>, Query, description = "How many, newest first (1-500, default 50)")), responses((status = 200, body = Vec<Delivery>), crate::openapi::Errors), security(("bearer" = [])))]
pub async fn deliveries(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Vec<Delivery>>, ApiError> {
    app.project(&slug).await?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=KEEP_DELIVERIES).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: 1 to {KEEP_DELIVERIES}"
        )));
    }
    let rows = app.store.list_deliveries(&slug, limit).await?;
    Ok(Json(rows.iter().map(delivery_json).collect()))
}

/// A delivery as it arrived: whose, from where, which event.
struct Incoming<'a> {
    slug: &'a str,
    forge: &'a str,
    event: &'a str,
    delivery: Option<String>,
    /// SHA-256 of the payload.
    payload: Option<String>,
}

impl Incoming<'_> {
    /// Records what became of it.
    async fn record(
        &self,
        app: &App,
        decision: &str,
        reason: &str,
        deployment: Option<String>,
    ) -> Result<Delivery, ApiError> {
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

/// `POST /v1/webhooks/{forge}/{slug}`: answers `202` with the recorded delivery when it
/// deploys, `200` when it is ignored, `401` when it is refused.
#[utoipa::path(post, path = "/v1/webhooks/{forge}/{slug}", tag = "git", params(("forge" = String, Path, description = "github, gitlab, gitea or forgejo"), crate::openapi::SlugPath), request_body(content = serde_json::Value, content_type = "application/json", description = "The forge's payload"), responses((status = 202, description = "Accepted: a deployment was made", body = Delivery), (status = 200, description = "Ignored, or an alias was removed", body = Delivery), (status = 401, description = "Refused: the signature or token does not match", body = Delivery), (status = 400, description = "Refused: the payload is not what its event needs", body = Delivery), crate::openapi::HookErrors))]
pub async fn receive(
    State(app): State<Arc<App>>,
    Path((forge, slug)): Path<(String, String)>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Delivery>), ApiError> {
    let Some(forge) = Forge::parse(&forge) else {
        return Err(ApiError::not_found(format!(
            "forge {forge:?} (github, gitlab, gitea or forgejo)"
        )));
    };
    if ids::validate_slug(&slug).is_err() {
        return Err(ApiError::not_found(format!("project {slug:?}")));
    }
    // Unlinked or unknown projects record nothing: anyone may call this route.
    let link = match app.store.git_link(&slug).await? {
        Some(l) => l,
        None => {
            return Err(ApiError::not_found(format!(
                "a repository link of project {slug}"
            )))
        }
    };
    let event = forge
        .event(&headers)
        .unwrap_or_else(|| "(no event header)".into());
    let incoming = Incoming {
        slug: &slug,
        forge: forge.as_str(),
        event: &event,
        delivery: forge.delivery(&headers),
        payload: Some(cdeploy_core::sha256_hex(&body)),
    };
    let secret = forge_secret(&open_secret(&app, &link)?, forge, link.per_forge_secrets);
    if let Err(why) = forge.verify(&headers, &body, &secret) {
        // Refusals are recorded, within the limit of failed authentications an address
        // has: past it, a flood of forged deliveries gets 429s and costs no rows.
        let ip = peer
            .map(|Extension(ConnectInfo(a))| a.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if let Err(not_until) = app.auth_failures.check_key(&ip) {
            return Err(crate::api::rate_limited(
                &not_until,
                "too many refused deliveries from this address; check the webhook's secret",
            ));
        }
        let d = incoming.record(&app, "refused", &why, None).await?;
        return Ok((StatusCode::UNAUTHORIZED, Json(d)));
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let why = format!(
                "the payload is not JSON ({e}); set the webhook's content type to application/json"
            );
            let d = incoming.record(&app, "refused", &why, None).await?;
            return Ok((StatusCode::BAD_REQUEST, Json(d)));
        }
    };
    if let Some(id) = &incoming.delivery {
        if let Some(earlier) = app
            .store
            .accepted_delivery(&slug, forge.as_str(), id)
            .await?
        {
            let why = format!(
                "delivery {id} was handled already ({}): a redelivery",
                earlier.id
            );
            let d = incoming
                .record(&app, "ignored", &why, earlier.deployment)
                .await?;
            return Ok((StatusCode::OK, Json(d)));
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
        if let Some(earlier) = app.store.accepted_payload(&slug, hash, since_us).await? {
            let why = format!(
                "this exact payload was accepted before ({}): a replay",
                earlier.id
            );
            let d = incoming
                .record(&app, "ignored", &why, earlier.deployment)
                .await?;
            return Ok((StatusCode::OK, Json(d)));
        }
    }
    let action = match parse(forge, &event, &payload) {
        Ok(request) => decide(request, &link.production_branch),
        Err(why) => {
            let d = incoming.record(&app, "refused", &why, None).await?;
            return Ok((StatusCode::BAD_REQUEST, Json(d)));
        }
    };
    act(&app, &link, &incoming, action).await
}

/// Carries out a decision and records it.
async fn act(
    app: &App,
    link: &GitLinkRow,
    incoming: &Incoming<'_>,
    action: Action,
) -> Result<(StatusCode, Json<Delivery>), ApiError> {
    let slug = &link.slug;
    let forge = incoming.forge;
    match action {
        Action::Ignore(why) => {
            let d = incoming.record(app, "ignored", &why, None).await?;
            Ok((StatusCode::OK, Json(d)))
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
            Ok((StatusCode::OK, Json(d)))
        }
        Action::Deploy {
            preview,
            branch,
            git_ref,
            repo,
            reason,
        } => {
            let req = CreateDeployment {
                git: Some(api::GitSource {
                    url: link.repo.clone(),
                    git_ref: Some(git_ref.clone()),
                }),
                preview,
                branch,
                ..Default::default()
            };
            // A redelivery racing the first gets the same deployment.
            let key = incoming.delivery.as_ref().map(|d| format!("{forge}:{d}"));
            let reports = app
                .lifecycle
                .statuses
                .as_ref()
                .is_some_and(|s| s.reports(forge));
            // Statuses go to the linked repository, with the operator's forge token: never
            // to a repository a payload names that is not the linked one.
            let (commit, reason) = match (reports, status_repo(&link.repo, &repo)) {
                (false, _) => (None, reason),
                (true, Some(linked)) => (Some((forge.to_string(), linked, git_ref)), reason),
                (true, None) => (
                    None,
                    format!(
                        "{reason}; no commit status: the delivery names repository {repo:?}, not the linked {}",
                        // Read tokens see delivery reasons: never a credential of the URL.
                        cdeploy_core::git::redact_url(&link.repo)
                    ),
                ),
            };
            let d = match crate::api::start_deployment_of(app, slug, req, key, commit).await {
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
            let d = incoming
                .record(app, "accepted", &reason, Some(d.id.clone()))
                .await?;
            Ok((StatusCode::ACCEPTED, Json(d)))
        }
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

/// Stops a branch's running builds and removes its alias; answers whether it had one.
async fn remove_alias(app: &App, slug: &str, branch: &str) -> Result<bool, ApiError> {
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
    crate::api::stop_builds(app, &running).await?;
    let had = app.store.delete_alias(slug, &label).await?;
    app.storage.delete(&layout::alias(slug, &label)).await?;
    if let Some(proxy) = &app.lifecycle.proxy {
        proxy.invalidate_alias(slug, &label).await;
    }
    Ok(had)
}

fn hook_json(h: &DeployHookRow, path: Option<String>) -> DeployHook {
    DeployHook {
        id: h.id.clone(),
        name: h.name.clone(),
        branch: h.branch.clone(),
        created_at: h.created_at.clone(),
        path,
    }
}

/// `POST /v1/projects/{slug}/deploy-hooks`: its secret path is in this answer only.
#[utoipa::path(post, path = "/v1/projects/{slug}/deploy-hooks", tag = "git", params(crate::openapi::SlugPath), request_body = CreateDeployHook, responses((status = 201, body = DeployHook), crate::openapi::Errors), security(("bearer" = [])))]
pub async fn create_hook(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    ApiJson(req): ApiJson<CreateDeployHook>,
) -> Result<(StatusCode, Json<DeployHook>), ApiError> {
    let link = linked(&app, &slug).await?;
    let name = req.name.trim();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name: 1 to 64 characters, no control characters",
        ));
    }
    let branch = req.branch.clone().unwrap_or(link.production_branch.clone());
    check_branch(&branch)?;
    if app.store.list_deploy_hooks(&slug).await?.len() >= MAX_HOOKS {
        return Err(ApiError::conflict(format!(
            "project {slug} has {MAX_HOOKS} deploy hooks, the most it may; remove one first"
        )));
    }
    let token = format!("hk_{}", ids::random_id(40));
    let row = DeployHookRow {
        id: format!("hook_{}", ids::random_id(12)),
        slug: slug.clone(),
        name: name.to_string(),
        branch,
        hash: ids::token_hash(&token),
        created_at: cdeploy_core::now_rfc3339(),
    };
    app.store.insert_deploy_hook(&row).await?;
    Ok((
        StatusCode::CREATED,
        Json(hook_json(&row, Some(format!("/v1/hooks/{token}")))),
    ))
}

/// `GET /v1/projects/{slug}/deploy-hooks`.
#[utoipa::path(get, path = "/v1/projects/{slug}/deploy-hooks", tag = "git", params(crate::openapi::SlugPath), responses((status = 200, body = Vec<DeployHook>), crate::openapi::Errors), security(("bearer" = [])))]
pub async fn list_hooks(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<Json<Vec<DeployHook>>, ApiError> {
    app.project(&slug).await?;
    let hooks = app.store.list_deploy_hooks(&slug).await?;
    Ok(Json(hooks.iter().map(|h| hook_json(h, None)).collect()))
}

/// `DELETE /v1/projects/{slug}/deploy-hooks/{id}`.
#[utoipa::path(delete, path = "/v1/projects/{slug}/deploy-hooks/{id}", tag = "git", params(crate::openapi::SlugPath, ("id" = String, Path, description = "A hook id (hook_...)")), responses((status = 204, description = "Removed"), crate::openapi::Errors), security(("bearer" = [])))]
pub async fn delete_hook(
    State(app): State<Arc<App>>,
    Path((slug, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app.project(&slug).await?;
    if !app.store.delete_deploy_hook(&slug, &id).await? {
        return Err(ApiError::not_found(format!("deploy hook {id} of {slug}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/hooks/{token}`: deploys the hook's branch at its newest commit.
#[utoipa::path(post, path = "/v1/hooks/{token}", tag = "git", params(("token" = String, Path, description = "The hook's secret (hk_...)")), responses((status = 202, body = Delivery), crate::openapi::Errors))]
pub async fn call_hook(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
) -> Result<(StatusCode, Json<Delivery>), ApiError> {
    let hook = match app
        .store
        .deploy_hook_by_hash(&ids::token_hash(&token))
        .await?
    {
        Some(h) => h,
        None => return Err(ApiError::not_found("deploy hook")),
    };
    let Some(link) = app.store.git_link(&hook.slug).await? else {
        return Err(ApiError::not_found("deploy hook"));
    };
    let production = hook.branch == link.production_branch;
    let action = Action::Deploy {
        preview: !production,
        branch: (!production).then(|| hook.branch.clone()),
        git_ref: hook.branch.clone(),
        repo: String::new(),
        reason: format!(
            "deploy hook {} ({}): branch {}",
            hook.name, hook.id, hook.branch
        ),
    };
    let incoming = Incoming {
        slug: &link.slug,
        forge: "hook",
        event: "deploy hook",
        delivery: None,
        payload: None,
    };
    act(&app, &link, &incoming, action).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

    fn github_push(branch: &str, after: &str) -> Value {
        serde_json::json!({
            "ref": format!("refs/heads/{branch}"),
            "before": "0000000000000000000000000000000000000000",
            "after": after,
            "created": false, "deleted": zero_sha(after), "forced": false,
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
        assert!(err.contains("ref"), "{err}");
        let bad_sha = serde_json::json!({"ref": "refs/heads/main", "after": "nope", "repository": {"full_name": "o/r"}});
        assert!(parse(Forge::GitHub, "push", &bad_sha).is_err());
        assert!(matches!(
            parse(Forge::GitHub, "issues", &serde_json::json!({})).unwrap(),
            Request::Ignored(_)
        ));
    }

    #[test]
    fn signatures_are_checked_per_forge() {
        let body = br#"{"zen":"hi"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let sig = hex::encode(mac.finalize().into_bytes());
        let mut h = HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            format!("sha256={sig}").parse().unwrap(),
        );
        assert!(Forge::GitHub.verify(&h, body, "s3cret").is_ok());
        assert!(Forge::GitHub.verify(&h, body, "other").is_err());
        assert!(Forge::GitHub.verify(&h, b"{}", "s3cret").is_err());
        let mut g = HeaderMap::new();
        g.insert("x-gitea-signature", sig.parse().unwrap());
        assert!(Forge::Gitea.verify(&g, body, "s3cret").is_ok());
        assert!(Forge::Gitea
            .verify(&HeaderMap::new(), body, "s3cret")
            .unwrap_err()
            .contains("no X-Gitea-Signature"));
        let mut l = HeaderMap::new();
        l.insert("x-gitlab-token", "s3cret".parse().unwrap());
        assert!(Forge::GitLab.verify(&l, body, "s3cret").is_ok());
        assert!(Forge::GitLab.verify(&l, body, "s3cre").is_err());
    }
}
