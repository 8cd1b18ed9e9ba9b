//! Git push deploys: signed deliveries of GitHub, GitLab and Gitea (payloads shaped as
//! their docs show them) for a repository on a loopback git daemon; commit statuses
//! checked against a loopback stand-in for each forge's API; deploy hooks.

use std::path::Path;
use std::time::Duration;

use cdeploy_tests::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

const BUILD: &str = "mkdir -p dist && cp version.txt dist/index.html";

/// A work repository whose build copies `version.txt` to its page, published on the
/// loopback git daemon with one commit on `main`.
struct Repo {
    daemon: GitDaemon,
    work: tempfile::TempDir,
    name: String,
    url: String,
}

impl Repo {
    fn publish(name: &str, first: &str) -> Repo {
        let daemon = GitDaemon::start();
        let work = tempfile::tempdir().unwrap();
        write_build_command(work.path(), BUILD, "");
        std::fs::write(work.path().join("version.txt"), first).unwrap();
        git_commit_all(work.path());
        git(work.path(), &["branch", "-M", "main"]);
        let url = daemon.publish(work.path(), name);
        Repo {
            daemon,
            work,
            name: name.to_string(),
            url,
        }
    }

    /// The daemon's bare repository, pushed to by [`push`].
    fn bare(&self) -> std::path::PathBuf {
        self.daemon.root.path().join(format!("{}.git", self.name))
    }
}

/// A commit on `branch` of the work repository whose page reads `text`, pushed to the
/// daemon's bare repository; returns its id.
fn push(work: &Path, bare: &Path, branch: &str, text: &str) -> String {
    if git(work, &["rev-parse", "--abbrev-ref", "HEAD"]).trim() != branch {
        let exists = std::process::Command::new("git")
            .args(["rev-parse", "--verify", "-q", branch])
            .current_dir(work)
            .output()
            .unwrap()
            .status
            .success();
        if exists {
            git(work, &["checkout", "-q", branch]);
        } else {
            git(work, &["checkout", "-q", "-b", branch]);
        }
    }
    std::fs::write(work.join("version.txt"), text).unwrap();
    git_commit_all(work);
    git(
        work,
        &[
            "push",
            "-q",
            "--force",
            bare.to_str().unwrap(),
            &format!("HEAD:refs/heads/{branch}"),
        ],
    );
    git(work, &["rev-parse", "HEAD"]).trim().to_string()
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A forge, as the test plays it.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum Forge {
    GitHub,
    GitLab,
    Gitea,
}

impl Forge {
    fn name(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::GitLab => "gitlab",
            Forge::Gitea => "gitea",
        }
    }

    /// The event header's value for a push or a pull request.
    pub(super) fn event(self, pr: bool) -> &'static str {
        match (self, pr) {
            (Forge::GitLab, false) => "Push Hook",
            (Forge::GitLab, true) => "Merge Request Hook",
            (_, false) => "push",
            (_, true) => "pull_request",
        }
    }

    pub(super) fn push_payload(self, branch: &str, before: &str, after: &str) -> Value {
        match self {
            // https://docs.gitlab.com/user/project/integrations/webhook_events/#push-events
            Forge::GitLab => json!({
                "object_kind": "push", "event_name": "push",
                "before": before, "after": after, "ref": format!("refs/heads/{branch}"),
                "ref_protected": branch == "main", "checkout_sha": after,
                "user_id": 4, "user_name": "John Smith", "user_username": "jsmith",
                "project_id": 15,
                "project": {"id": 15, "name": "Diaspora", "path_with_namespace": "octo-org/octo-repo",
                            "default_branch": "main", "git_http_url": "http://example.com/octo-org/octo-repo.git"},
                "commits": [{"id": after, "message": "Update version", "author": {"name": "Jordi Mallach"}}],
                "total_commits_count": 1,
                "repository": {"name": "Diaspora", "url": "git@example.com:mike/diaspora.git"}
            }),
            // https://docs.github.com/en/webhooks/webhook-events-and-payloads#push (Gitea
            // sends the same shape, https://docs.gitea.com/usage/webhooks)
            _ => json!({
                "ref": format!("refs/heads/{branch}"), "before": before, "after": after,
                "created": false, "deleted": false, "forced": false,
                "compare": "https://github.com/octo-org/octo-repo/compare/a...b",
                "commits": [{"id": after, "message": "Update version", "distinct": true}],
                "head_commit": {"id": after, "message": "Update version"},
                "repository": {"id": 186853002, "name": "octo-repo", "full_name": "octo-org/octo-repo",
                               "private": false, "clone_url": "https://github.com/octo-org/octo-repo.git",
                               "default_branch": "main"},
                "pusher": {"name": "octocat", "email": "octocat@github.com"},
                "sender": {"login": "octocat", "id": 1}
            }),
        }
    }

    fn pr_payload(self, number: u64, action: &str, branch: &str, sha: &str, fork: bool) -> Value {
        match self {
            // https://docs.gitlab.com/user/project/integrations/webhook_events/#merge-request-events
            Forge::GitLab => json!({
                "object_kind": "merge_request", "event_type": "merge_request",
                "user": {"id": 1, "name": "Administrator", "username": "root"},
                "project": {"id": 15, "name": "Diaspora", "path_with_namespace": "octo-org/octo-repo"},
                "object_attributes": {
                    "id": 99, "iid": number, "target_branch": "main", "source_branch": branch,
                    "source_project_id": if fork { 16 } else { 15 }, "target_project_id": 15,
                    "state": if action == "close" { "closed" } else { "opened" },
                    "title": "MS-Viewport", "action": action,
                    "last_commit": {"id": sha, "message": "fixed readme"},
                    "source": {"path_with_namespace": if fork { "fork/diaspora" } else { "octo-org/octo-repo" }},
                    "target": {"path_with_namespace": "octo-org/octo-repo"}
                },
                "repository": {"name": "Diaspora", "url": "git@example.com:mike/diaspora.git"}
            }),
            _ => json!({
                "action": action, "number": number,
                "pull_request": {
                    "number": number, "state": if action == "closed" { "closed" } else { "open" },
                    "title": "Update the README", "merged": false,
                    "head": {"ref": branch, "sha": sha, "label": format!("octo-org:{branch}"),
                             "repo": {"full_name": if fork { "someone/octo-repo" } else { "octo-org/octo-repo" }}},
                    "base": {"ref": "main", "sha": "0".repeat(40), "repo": {"full_name": "octo-org/octo-repo"}}
                },
                "repository": {"id": 186853002, "full_name": "octo-org/octo-repo", "default_branch": "main"},
                "sender": {"login": "octocat", "id": 1}
            }),
        }
    }

    fn pr_action(self, opened: bool) -> &'static str {
        match (self, opened) {
            (Forge::GitLab, true) => "open",
            (Forge::GitLab, false) => "close",
            (_, true) => "opened",
            (_, false) => "closed",
        }
    }
}

/// Delivers `payload` as `forge` would, signed with `secret`; `(status, answer)`.
pub(super) fn deliver(
    server: &Server,
    forge: Forge,
    slug: &str,
    event: &str,
    payload: &Value,
    secret: &str,
    delivery: &str,
) -> (u16, Value) {
    let body = serde_json::to_vec(payload).unwrap();
    let mut req = reqwest::blocking::Client::new()
        .post(format!(
            "{}/v1/webhooks/{}/{slug}",
            server.api(),
            forge.name()
        ))
        .header("content-type", "application/json");
    req = match forge {
        Forge::GitHub => req
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header(
                "x-hub-signature-256",
                format!("sha256={}", hmac_hex(secret, &body)),
            ),
        Forge::Gitea => req
            .header("x-gitea-event", event)
            .header("x-gitea-delivery", delivery)
            .header("x-gitea-signature", hmac_hex(secret, &body)),
        Forge::GitLab => req
            .header("x-gitlab-event", event)
            .header("x-gitlab-event-uuid", delivery)
            .header("x-gitlab-token", secret),
    };
    let resp = req.body(body).send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

pub(super) fn wait_ready(server: &Server, answer: &Value) -> String {
    let id = answer["deployment"]
        .as_str()
        .unwrap_or_else(|| panic!("no deployment in {answer}"))
        .to_string();
    let d = server.wait_status(&id, Duration::from_secs(60), |s| {
        ["ready", "failed", "canceled"].contains(&s)
    });
    assert_eq!(d["status"], "ready", "{d}");
    id
}

pub(super) fn page(server: &Server, host: &str) -> (u16, String) {
    let p = server.site(host, "/");
    (p.status, p.body.trim().to_string())
}

/// The pull request's comment (PR 5 of octo-org/octo-repo): created once by the first
/// deployment's reports, then edited in place until it shows the second one ready.
fn pr_comment_kept_up_to_date(
    forge_api: &HttpRecorder,
    forge: Forge,
    (first, second): (&str, &str),
) {
    let (create, edit, edit_method) = match forge {
        Forge::GitLab => (
            "/gitlab/api/v4/projects/octo-org%2Focto-repo/merge_requests/5/notes",
            "/gitlab/api/v4/projects/octo-org%2Focto-repo/merge_requests/5/notes/",
            "PUT",
        ),
        Forge::GitHub => (
            "/github/repos/octo-org/octo-repo/issues/5/comments",
            "/github/repos/octo-org/octo-repo/issues/comments/",
            "PATCH",
        ),
        Forge::Gitea => (
            "/gitea/api/v1/repos/octo-org/octo-repo/issues/5/comments",
            "/gitea/api/v1/repos/octo-org/octo-repo/issues/comments/",
            "PATCH",
        ),
    };
    wait_until(
        "the comment to show the second push",
        Duration::from_secs(20),
        || {
            forge_api.requests().iter().any(|r| {
                r.path.starts_with(edit) && r.body.contains(second) && r.body.contains("Ready")
            })
        },
    );
    let requests = forge_api.requests();
    let created: Vec<usize> = (0..requests.len())
        .filter(|&i| requests[i].path == create)
        .collect();
    assert_eq!(created.len(), 1, "{requests:?}");
    let first_body = &requests[created[0]];
    assert_eq!(first_body.method, "POST");
    assert!(first_body.body.contains(first), "{first_body:?}");
    // The recorder answers its n-th request with `{"id": n}`.
    let id = created[0] + 1;
    let edits: Vec<_> = requests
        .iter()
        .filter(|r| r.path.starts_with(edit))
        .collect();
    assert!(
        edits
            .iter()
            .all(|r| r.path == format!("{edit}{id}") && r.method == edit_method),
        "{edits:?}"
    );
}

#[test]
fn pushes_and_pull_requests_of_each_forge_deploy() {
    let forge_api = HttpRecorder::start();
    let server = Server::start_with(
        &[
            "--github-api",
            &forge_api.url("/github"),
            "--gitlab-api",
            &forge_api.url("/gitlab/api/v4"),
            "--gitea-api",
            &forge_api.url("/gitea/api/v1"),
        ],
        &[
            ("CDEPLOY_GITHUB_TOKEN", "ghp_token"),
            ("CDEPLOY_GITLAB_TOKEN", "glpat-token"),
            ("CDEPLOY_GITEA_TOKEN", "gitea-token"),
        ],
    );
    // Named as on the forge: statuses go to the linked repository, by its own path.
    let repo = Repo::publish("octo-org/octo-repo", "first");
    let (work, bare, url) = (repo.work.path(), repo.bare(), repo.url.clone());
    let tmp = tempfile::tempdir().unwrap();

    for forge in [Forge::GitHub, Forge::GitLab, Forge::Gitea] {
        let slug = format!("{}-site", forge.name());
        let out = server.cli(
            tmp.path(),
            &[
                "git",
                "link",
                &url,
                "--branch",
                "main",
                "--project",
                &slug,
                "--json",
            ],
        );
        out.assert_code(0);
        let link = out.json();
        let secret = link["webhook_secrets"][forge.name()]
            .as_str()
            .unwrap()
            .to_string();
        assert!(secret.len() >= 32, "{link}");
        assert_eq!(
            link["webhooks"][forge.name()],
            format!("{}/v1/webhooks/{}/{slug}", server.api(), forge.name())
        );
        // Delivers as this forge, to this project: a push, or a pull request event.
        let send = |pr: bool, payload: &Value, secret: &str, delivery: &str| {
            deliver(
                &server,
                forge,
                &slug,
                forge.event(pr),
                payload,
                secret,
                delivery,
            )
        };
        let mut n = 0;
        let mut next_delivery = || {
            n += 1;
            format!("{}-delivery-{n}", forge.name())
        };

        // A push to the production branch: production.
        let main_sha = push(work, &bare, "main", &format!("{slug} main v1"));
        let payload = forge.push_payload("main", &"0".repeat(40), &main_sha);
        let (status, answer) = send(false, &payload, &secret, &next_delivery());
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["decision"], "accepted");
        let production = wait_ready(&server, &answer);
        assert_eq!(page(&server, &slug), (200, format!("{slug} main v1")));
        // The same signed payload under another delivery id (a replay): nothing twice.
        let (status, replay) = send(false, &payload, &secret, &next_delivery());
        assert_eq!(status, 200, "{replay}");
        assert_eq!(replay["decision"], "ignored");
        assert!(
            replay["reason"].as_str().unwrap().contains("replay"),
            "{replay}"
        );
        assert_eq!(replay["deployment"], answer["deployment"]);

        // A push to another branch: its preview, production unchanged.
        let feat_sha = push(work, &bare, "feature", &format!("{slug} feature v1"));
        let payload = forge.push_payload("feature", &main_sha, &feat_sha);
        let (status, answer) = send(false, &payload, &secret, &next_delivery());
        assert_eq!(status, 202, "{answer}");
        let feature = wait_ready(&server, &answer);
        assert_eq!(
            page(&server, &format!("feature--{slug}")),
            (200, format!("{slug} feature v1"))
        );
        assert_eq!(page(&server, &slug), (200, format!("{slug} main v1")));

        // A pull request opened: pr-<n>--<slug>; closed: the alias is gone.
        let payload = forge.pr_payload(5, forge.pr_action(true), "feature", &feat_sha, false);
        let (status, answer) = send(true, &payload, &secret, &next_delivery());
        assert_eq!(status, 202, "{answer}");
        let pr_deployment = wait_ready(&server, &answer);
        assert_eq!(
            page(&server, &format!("pr-5--{slug}")),
            (200, format!("{slug} feature v1"))
        );
        // The branch's commit was built as its preview already: not built again
        // (docs/skipping.md), and its delivery says so below.
        assert_eq!(
            server.deployment(&pr_deployment)["reused_from"],
            feature.as_str()
        );
        // A second push to the pull request: its one comment is edited, never doubled.
        let second_sha = push(work, &bare, "feature", &format!("{slug} feature v2"));
        let payload = forge.pr_payload(5, forge.pr_action(true), "feature", &second_sha, false);
        let (status, answer) = send(true, &payload, &secret, &next_delivery());
        assert_eq!(status, 202, "{answer}");
        let second = wait_ready(&server, &answer);
        pr_comment_kept_up_to_date(&forge_api, forge, (&pr_deployment, &second));
        let payload = forge.pr_payload(5, forge.pr_action(false), "feature", &feat_sha, false);
        let delivery = next_delivery();
        let (status, answer) = send(true, &payload, &secret, &delivery);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["decision"], "accepted", "{answer}");
        assert_eq!(page(&server, &format!("pr-5--{slug}")).0, 404);
        // Its deployment stays at its own URL; the branch preview and production stay.
        assert_eq!(page(&server, &format!("{slug}--{pr_deployment}")).0, 200);
        assert_eq!(page(&server, &format!("feature--{slug}")).0, 200);
        // A redelivery of the same delivery changes nothing.
        let (status, answer) = send(true, &payload, &secret, &delivery);
        assert_eq!(status, 200);
        assert_eq!(answer["decision"], "ignored", "{answer}");
        assert!(
            answer["reason"].as_str().unwrap().contains("redelivery"),
            "{answer}"
        );

        // A pull request from a fork is not built.
        let payload = forge.pr_payload(6, forge.pr_action(true), "feature", &feat_sha, true);
        let (status, answer) = send(true, &payload, &secret, &next_delivery());
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["decision"], "ignored");
        assert!(
            answer["reason"].as_str().unwrap().contains("fork"),
            "{answer}"
        );

        // A wrong secret: refused, recorded, nothing deployed.
        let before = server
            .client()
            .get(&format!("/v1/projects/{slug}/deployments"))
            .json();
        let payload = forge.push_payload("main", &main_sha, &feat_sha);
        let (status, answer) = send(false, &payload, "not-the-secret", &next_delivery());
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["decision"], "refused");
        let after = server
            .client()
            .get(&format!("/v1/projects/{slug}/deployments"))
            .json();
        assert_eq!(before, after);
        assert_eq!(page(&server, &slug), (200, format!("{slug} main v1")));

        // Every delivery is readable, newest first, with its decision and reason.
        let out = server.cli(
            tmp.path(),
            &["git", "deliveries", "--project", &slug, "--json"],
        );
        out.assert_code(0);
        let decisions: Vec<String> = out
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["decision"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            decisions,
            [
                "refused", "ignored", "ignored", "accepted", "accepted", "skipped", "accepted",
                "ignored", "accepted"
            ],
            "{}",
            out.stdout
        );
        let text = server.cli(tmp.path(), &["git", "deliveries", "--project", &slug]);
        assert!(
            text.stdout.contains("signature") || text.stdout.contains("X-Gitlab-Token"),
            "{}",
            text.stdout
        );

        // Commit statuses on the forge's API: pending, then success with the URL.
        let (path, auth) = match forge {
            Forge::GitHub => (
                format!("/github/repos/octo-org/octo-repo/statuses/{main_sha}"),
                ("authorization", "Bearer ghp_token"),
            ),
            Forge::GitLab => (
                format!("/gitlab/api/v4/projects/octo-org%2Focto-repo/statuses/{main_sha}"),
                ("private-token", "glpat-token"),
            ),
            Forge::Gitea => (
                format!("/gitea/api/v1/repos/octo-org/octo-repo/statuses/{main_sha}"),
                ("authorization", "token gitea-token"),
            ),
        };
        let mut states = Vec::new();
        wait_until("the success status", Duration::from_secs(20), || {
            states = forge_api
                .requests()
                .iter()
                .filter(|r| r.path == path)
                .map(|r| {
                    assert_eq!(r.method, "POST");
                    assert_eq!(r.header(auth.0), Some(auth.1), "{r:?}");
                    r.json()
                })
                .collect::<Vec<_>>();
            states.last().is_some_and(|s| s["state"] == "success")
        });
        assert!(states.iter().any(|s| s["state"] == "pending"), "{states:?}");
        let success = states.last().unwrap();
        let context = if forge == Forge::GitLab {
            "name"
        } else {
            "context"
        };
        assert_eq!(success[context], "cdeploy");
        // Production's status links the site; a pending one, the deployment's own URL.
        assert_eq!(
            success["target_url"],
            server.site_url(&slug, "").trim_end_matches('/'),
            "{success}"
        );
        assert!(
            states[0]["target_url"]
                .as_str()
                .unwrap()
                .contains(&production),
            "{states:?}"
        );

        // A signed delivery that names another repository (a leaked secret, an org-wide
        // hook, `../` to walk the forge's API): statuses never leave the linked one.
        for named in ["../../../escape", "someone/else"] {
            let sha = push(work, &bare, "feature", &format!("{slug} {named}"));
            let mut payload = forge.push_payload("feature", &feat_sha, &sha);
            payload["repository"]["full_name"] = json!(named);
            payload["project"]["path_with_namespace"] = json!(named);
            let (status, answer) = send(false, &payload, &secret, &next_delivery());
            assert_eq!(status, 202, "{answer}");
            assert!(
                answer["reason"]
                    .as_str()
                    .unwrap()
                    .contains("no commit status"),
                "{answer}"
            );
            wait_ready(&server, &answer);
        }
        let stray: Vec<String> = forge_api
            .requests()
            .iter()
            .map(|r| r.path.clone())
            .filter(|p| !p.contains("octo-org") || p.contains("escape") || p.contains("else"))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
    }
}

#[test]
fn deploy_hooks_and_what_a_narrow_token_may_see() {
    let server = Server::start();
    let repo = Repo::publish("hooked", "v1");
    let (work, bare, url) = (repo.work.path(), repo.bare(), repo.url.clone());
    let tmp = tempfile::tempdir().unwrap();
    let slug = "hooked";

    // Not linked: webhooks and hooks have nothing to deploy.
    let (status, _) = deliver(&server, Forge::GitHub, slug, "push", &json!({}), "x", "d0");
    assert_eq!(status, 404);
    let out = server.cli(
        tmp.path(),
        &["git", "hook", "add", "cms", "--project", slug],
    );
    out.assert_code(3);

    server
        .cli(tmp.path(), &["git", "link", &url, "--project", slug])
        .assert_code(0);
    let out = server.cli(
        tmp.path(),
        &["git", "hook", "add", "cms", "--project", slug, "--json"],
    );
    out.assert_code(0);
    let hook_url = out.json()["url"].as_str().unwrap().to_string();
    let hook_id = out.json()["id"].as_str().unwrap().to_string();
    let listed = server.cli(
        tmp.path(),
        &["git", "hook", "ls", "--project", slug, "--json"],
    );
    assert!(
        listed.stdout.contains(&hook_id) && !listed.stdout.contains(&hook_url),
        "{}",
        listed.stdout
    );

    // POSTing the hook deploys the branch's newest commit, no token needed.
    push(work, &bare, "main", "v2 from the CMS");
    let resp = reqwest::blocking::Client::new()
        .post(&hook_url)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 202);
    let answer: Value = resp.json().unwrap();
    assert_eq!(answer["forge"], "hook");
    wait_ready(&server, &answer);
    assert_eq!(page(&server, slug), (200, "v2 from the CMS".to_string()));
    // A wrong hook URL deploys nothing.
    let wrong = format!("{}/v1/hooks/hk_{}", server.api(), "x".repeat(40));
    let resp = reqwest::blocking::Client::new()
        .post(&wrong)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);

    // A deploy token may read deliveries, never the link's secret or the hooks.
    let api = server.client().with_token(&server.deploy_token(slug));
    assert_eq!(
        api.get(&format!("/v1/projects/{slug}/deliveries")).status,
        200
    );
    for (what, r) in [
        ("the link", api.get(&format!("/v1/projects/{slug}/git"))),
        (
            "the hooks",
            api.get(&format!("/v1/projects/{slug}/deploy-hooks")),
        ),
        (
            "relinking",
            api.put(
                &format!("/v1/projects/{slug}/git"),
                &json!({"repo": "https://evil.example/r.git"}),
            ),
        ),
    ] {
        assert_eq!(r.status, 403, "{what}: {}", r.text);
    }

    // A new secret: the old one is refused from then on.
    let old = server
        .client()
        .get(&format!("/v1/projects/{slug}/git"))
        .json()["webhook_secrets"]["github"]
        .as_str()
        .unwrap()
        .to_string();
    server
        .cli(
            tmp.path(),
            &["git", "link", &url, "--project", slug, "--new-secret"],
        )
        .assert_code(0);
    let (status, _) = deliver(
        &server,
        Forge::GitHub,
        slug,
        "ping",
        &json!({"zen": "hi"}),
        &old,
        "d1",
    );
    assert_eq!(status, 401);

    // Removing the hook and unlinking: nothing deploys any more.
    server
        .cli(
            tmp.path(),
            &["git", "hook", "rm", &hook_id, "--project", slug],
        )
        .assert_code(0);
    let resp = reqwest::blocking::Client::new()
        .post(&hook_url)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);
    server
        .cli(tmp.path(), &["git", "unlink", "--project", slug])
        .assert_code(0);
    let (status, _) = deliver(&server, Forge::GitHub, slug, "ping", &json!({}), &old, "d2");
    assert_eq!(status, 404);
    // A bad repository URL or branch is refused when linking.
    let out = server.cli(
        tmp.path(),
        &["git", "link", "file:///etc", "--project", slug],
    );
    out.assert_code(3);
    let out = server.cli(
        tmp.path(),
        &["git", "link", &url, "--branch", "a..b", "--project", slug],
    );
    out.assert_code(3);
}

/// A delivery captured on one route replays on none: not on another forge's route (each
/// forge has its own secret, and GitLab's clear-text token signs nothing else), not under
/// a new delivery id, and not after a flood of forged deliveries from many addresses.
#[test]
fn deliveries_cannot_be_replayed_on_any_route_or_after_a_flood() {
    let server = Server::start();
    let repo = Repo::publish("octo-org/octo-repo", "first");
    let (work, bare, url) = (repo.work.path(), repo.bare(), repo.url.clone());
    let tmp = tempfile::tempdir().unwrap();
    let slug = "replayed";
    let out = server.cli(
        tmp.path(),
        &["git", "link", &url, "--project", slug, "--json"],
    );
    out.assert_code(0);
    let secrets = out.json()["webhook_secrets"].clone();
    let secret = |f: Forge| secrets[f.name()].as_str().unwrap().to_string();
    let mut distinct: Vec<String> = [Forge::GitHub, Forge::GitLab, Forge::Gitea]
        .into_iter()
        .map(secret)
        .collect();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "one secret per forge: {secrets}");
    // The plain output holds each forge's URL and secret.
    let text = server.cli(tmp.path(), &["git", "link", &url, "--project", slug]);
    for f in [Forge::GitHub, Forge::GitLab, Forge::Gitea] {
        assert!(text.stdout.contains(&secret(f)), "{}", text.stdout);
    }

    // An old commit, then production moves on: the old push is what an attacker replays.
    let old_sha = push(work, &bare, "main", "old release");
    let old = Forge::GitHub.push_payload("main", &"0".repeat(40), &old_sha);
    let (status, first) = deliver(
        &server,
        Forge::GitHub,
        slug,
        "push",
        &old,
        &secret(Forge::GitHub),
        "gh-1",
    );
    assert_eq!(status, 202, "{first}");
    wait_ready(&server, &first);
    let new_sha = push(work, &bare, "main", "new release");
    let new = Forge::GitHub.push_payload("main", &old_sha, &new_sha);
    let (status, second) = deliver(
        &server,
        Forge::GitHub,
        slug,
        "push",
        &new,
        &secret(Forge::GitHub),
        "gh-2",
    );
    assert_eq!(status, 202, "{second}");
    wait_ready(&server, &second);
    assert_eq!(page(&server, slug), (200, "new release".into()));
    let deployments = || {
        server
            .client()
            .get(&format!("/v1/projects/{slug}/deployments"))
            .json()
            .as_array()
            .unwrap()
            .len()
    };
    let made = deployments();

    // The captured GitHub delivery on the Gitea route (Gitea signs the same way), and a
    // GitHub delivery signed with GitLab's clear-text token: refused.
    let (status, answer) = deliver(
        &server,
        Forge::Gitea,
        slug,
        "push",
        &old,
        &secret(Forge::GitHub),
        "gt-1",
    );
    assert_eq!(
        (status, answer["decision"].as_str()),
        (401, Some("refused")),
        "{answer}"
    );
    let (status, _) = deliver(
        &server,
        Forge::GitHub,
        slug,
        "push",
        &old,
        &secret(Forge::GitLab),
        "gh-3",
    );
    assert_eq!(status, 401);
    // Even signed right for another forge's route, the same payload is a replay.
    let (status, answer) = deliver(
        &server,
        Forge::Gitea,
        slug,
        "push",
        &old,
        &secret(Forge::Gitea),
        "gt-2",
    );
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("replay"),
        "{answer}"
    );

    // 600 forged deliveries from 30 addresses, each within its own limit of refusals...
    let mut refused = 0;
    for a in 0..30u8 {
        let from = std::net::IpAddr::from([127, 0, 1, a + 1]);
        let client = reqwest::blocking::Client::builder()
            .local_address(from)
            .build()
            .unwrap();
        for i in 0..20 {
            let resp = client
                .post(format!("{}/v1/webhooks/github/{slug}", server.api()))
                .header("content-type", "application/json")
                .header("x-github-event", "push")
                .header("x-github-delivery", format!("forged-{a}-{i}"))
                .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
                .body("{}")
                .send()
                .unwrap();
            if resp.status() == 401 {
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 600, "every forged delivery recorded as refused");
    // ...then the old push again, under a new id, on every route: production stays.
    for (forge, id) in [
        (Forge::GitHub, "gh-4"),
        (Forge::Gitea, "gt-3"),
        (Forge::GitLab, "gl-1"),
    ] {
        let mut payload = old.clone();
        if forge == Forge::GitLab {
            // GitLab's own shape of the same push: a different body, so a different
            // payload; its clear-text token is GitLab's alone, which the attacker lacks.
            payload = Forge::GitLab.push_payload("main", &"0".repeat(40), &old_sha);
            let (status, _) = deliver(
                &server,
                forge,
                slug,
                "Push Hook",
                &payload,
                &secret(Forge::GitHub),
                id,
            );
            assert_eq!(status, 401);
            continue;
        }
        let (status, answer) = deliver(&server, forge, slug, "push", &payload, &secret(forge), id);
        assert_eq!(status, 200, "{forge:?}: {answer}");
        assert_eq!(answer["decision"], "ignored");
        assert!(
            answer["reason"].as_str().unwrap().contains("replay"),
            "{answer}"
        );
    }
    assert_eq!(deployments(), made, "no replay made a deployment");
    assert_eq!(page(&server, slug), (200, "new release".into()));
    // Every refused replay is on record with its reason.
    let out = server.cli(
        tmp.path(),
        &[
            "git",
            "deliveries",
            "--project",
            slug,
            "--limit",
            "5",
            "--json",
        ],
    );
    out.assert_code(0);
    let reasons: Vec<String> = out
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(
        reasons.iter().filter(|r| r.contains("replay")).count() >= 2,
        "{reasons:?}"
    );
}
