//! Builds skipped by content: a two-app npm-workspaces monorepo (a shared package) on
//! the loopback git daemon, one project per app, deployed by signed GitHub push
//! deliveries. A push touching only one app leaves the other skipped; the shared
//! package builds both; a new branch reuses the preview of the same content; a
//! three-commit push whose first commit touches an app builds it; a changed stored
//! variable, a deploy hook and `--force` build.

use std::path::Path;
use std::time::Duration;

use cdeploy_tests::*;
use serde_json::Value;

use super::webhooks::{deliver, page, wait_ready, Forge};

/// The work repository (the fixture, committed on `main`) and its bare copy.
struct Mono {
    _daemon: GitDaemon,
    _tmp: tempfile::TempDir,
    work: std::path::PathBuf,
    bare: std::path::PathBuf,
    url: String,
}

impl Mono {
    fn publish() -> Mono {
        let daemon = GitDaemon::start();
        let tmp = fixture("two-app-monorepo");
        let work = tmp.path().join("two-app-monorepo");
        git_commit_all(&work);
        git(&work, &["branch", "-M", "main"]);
        // Named as the payloads name it: commit statuses go to the linked repository.
        let url = daemon.publish(&work, "octo-org/octo-repo");
        let bare = daemon.root.path().join("octo-org/octo-repo.git");
        Mono {
            _daemon: daemon,
            _tmp: tmp,
            work,
            bare,
            url,
        }
    }

    fn head(&self) -> String {
        git(&self.work, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Commits `files` (path, text) on the checked-out branch.
    fn commit(&self, files: &[(&str, &str)]) -> String {
        write_files(&self.work, files);
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", "change"],
        );
        self.head()
    }

    /// Pushes the checked-out HEAD to `branch` of the bare repository.
    fn push(&self, branch: &str) {
        let to = format!("HEAD:refs/heads/{branch}");
        git(
            &self.work,
            &["push", "-q", "--force", self.bare.to_str().unwrap(), &to],
        );
    }
}

/// A project linked to the monorepo's app folder `root`; its GitHub webhook secret.
fn link(server: &Server, dir: &Path, url: &str, slug: &str, root: &str) -> String {
    let out = server.cli(
        dir,
        &[
            "git",
            "link",
            url,
            "--root",
            root,
            "--project",
            slug,
            "--json",
        ],
    );
    out.assert_code(0);
    assert_eq!(out.json()["root"], root, "{}", out.stdout);
    out.json()["webhook_secrets"]["github"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Delivers a GitHub push of `before..after` on `branch` to each project; the ids of
/// the deployments made, each ready.
fn push_to(
    server: &Server,
    projects: &[(&str, &str)],
    branch: &str,
    (before, after): (&str, &str),
    n: &mut u32,
) -> Vec<String> {
    projects
        .iter()
        .map(|(slug, secret)| {
            *n += 1;
            let payload = Forge::GitHub.push_payload(branch, before, after);
            let (status, answer) = deliver(
                server,
                Forge::GitHub,
                slug,
                "push",
                &payload,
                secret,
                &format!("mono-{n}"),
            );
            assert_eq!(status, 202, "{answer}");
            wait_ready(server, &answer)
        })
        .collect()
}

/// Adds a deploy hook to `slug` and calls it: its answer (the delivery).
fn call_new_hook(server: &Server, dir: &Path, slug: &str) -> Value {
    let hook = server.cli(
        dir,
        &["git", "hook", "add", "cms", "--project", slug, "--json"],
    );
    hook.assert_code(0);
    let url = hook.json()["url"].as_str().unwrap().to_string();
    reqwest::blocking::Client::new()
        .post(&url)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn reused_from(server: &Server, id: &str) -> Option<String> {
    server.deployment(id)["reused_from"]
        .as_str()
        .map(String::from)
}

/// Seconds since midnight of an RFC 3339 UTC timestamp (`…T12:34:56.789Z`).
fn seconds(ts: &str) -> f64 {
    let time = ts.split('T').nth(1).unwrap().trim_end_matches('Z');
    let mut parts = time.split(':').map(|p| p.parse::<f64>().unwrap());
    let (h, m, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    h * 3600.0 + m * 60.0 + s
}

/// The deployment's log as events, and how long the decision to skip took: from the
/// event before the "Unchanged since" line to it.
fn decision_seconds(server: &Server, dir: &Path, slug: &str, id: &str) -> (Vec<Value>, f64) {
    let out = server.cli(dir, &["logs", slug, "--deployment", id, "--json"]);
    out.assert_code(0);
    let events: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = events
        .iter()
        .position(|e| {
            e["line"]
                .as_str()
                .is_some_and(|l| l.starts_with("Unchanged since"))
        })
        .unwrap_or_else(|| panic!("no decision in {}", out.stdout));
    let took = seconds(events[at]["ts"].as_str().unwrap())
        - seconds(events[at - 1]["ts"].as_str().unwrap());
    (events, took)
}

fn why(server: &Server, dir: &Path, id: &str) -> Value {
    let out = server.cli(dir, &["inspect", id, "--why", "--json"]);
    out.assert_code(0);
    out.json()
}

#[test]
fn a_monorepo_builds_only_the_apps_a_push_changed() {
    let forge_api = HttpRecorder::start();
    let server = Server::start_with(
        &["--github-api", &forge_api.url("/github")],
        &[("CDEPLOY_GITHUB_TOKEN", "ghp_token")],
    );
    let repo = Mono::publish();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let a_secret = link(&server, dir, &repo.url, "mono-a", "apps/a");
    let b_secret = link(&server, dir, &repo.url, "mono-b", "apps/b");
    let (a, b) = (("mono-a", a_secret.as_str()), ("mono-b", b_secret.as_str()));
    let zero = "0".repeat(40);
    let mut n = 0;

    // The first push builds both.
    let c1 = repo.head();
    repo.push("main");
    let first = push_to(&server, &[a, b], "main", (&zero, &c1), &mut n);
    assert_eq!(reused_from(&server, &first[0]), None);
    assert_eq!(
        page(&server, "mono-a"),
        (200, "app a v1 | shared v1".into())
    );
    let a1 = server.deployment(&first[0]);
    assert_eq!(a1["commit"], c1.as_str(), "{a1}");

    // Only app B changes: A is ready at once with A's first output, and still serves it.
    let c2 = repo.commit(&[("apps/b/page.txt", "app b v2\n")]);
    repo.push("main");
    let second = push_to(&server, &[a, b], "main", (&c1, &c2), &mut n);
    assert_eq!(reused_from(&server, &second[0]), Some(first[0].clone()));
    assert_eq!(reused_from(&server, &second[1]), None);
    assert_eq!(
        page(&server, "mono-a"),
        (200, "app a v1 | shared v1".into())
    );
    let (_, b_page) = page(&server, "mono-b");
    assert!(b_page.starts_with("app b v2 | shared v1"), "{b_page}");
    let a2 = server.deployment(&second[0]);
    assert_eq!(
        (a2["production"].as_bool(), a2["commit"].as_str()),
        (Some(true), Some(c2.as_str()))
    );
    let (events, took) = decision_seconds(&server, dir, "mono-a", &second[0]);
    assert!(took < 1.0, "the decision took {took} s");
    assert!(
        !events
            .iter()
            .any(|e| e["step"] == "build" || e["step"] == "upload"),
        "a skipped deployment ran a build step: {events:?}"
    );
    // The delivery says it was skipped, and why; the commit status too.
    let deliveries = server.cli(dir, &["git", "deliveries", "--project", "mono-a", "--json"]);
    let newest = &deliveries.json()[0];
    assert_eq!(newest["decision"], "skipped", "{newest}");
    assert!(
        newest["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("unchanged since {}", first[0])),
        "{newest}"
    );
    wait_until(
        "the commit status of the skipped deployment",
        Duration::from_secs(20),
        || {
            forge_api.requests().iter().any(|r| {
                r.path.ends_with(&format!("/statuses/{c2}"))
                    && r.json()["description"]
                        .as_str()
                        .is_some_and(|d| d.starts_with(&format!("Unchanged since {}", first[0])))
            })
        },
    );
    let w = why(&server, dir, &second[0]);
    assert_eq!(w["reused_from"], first[0].as_str(), "{w}");
    let parts = w["parts"].as_array().unwrap();
    for name in [
        "apps/a/",
        "packages/shared/",
        "package-lock.json",
        "stored variables",
    ] {
        assert!(parts.iter().any(|p| p == name), "{name} in {w}");
    }
    // Names, never a hash: a hash of the settings or variables would let a reader
    // test guesses of a value.
    let hexlike = |s: &str| s.len() >= 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(!parts.iter().any(|p| hexlike(p.as_str().unwrap())), "{w}");
    assert_eq!(w["commit"], c2.as_str());
    assert_eq!(w["differing"], serde_json::json!([]), "{w}");
    let human = server.cli(dir, &["inspect", &second[0], "--why"]);
    assert!(human.stdout.contains("unchanged since"), "{}", human.stdout);

    // The shared package changes: both build, and `--why` names it.
    let c3 = repo.commit(&[(
        "packages/shared/index.js",
        "module.exports = { footer: \"shared v2\" };\n",
    )]);
    repo.push("main");
    let third = push_to(&server, &[a, b], "main", (&c2, &c3), &mut n);
    assert_eq!(reused_from(&server, &third[0]), None);
    assert_eq!(reused_from(&server, &third[1]), None);
    assert_eq!(
        page(&server, "mono-a"),
        (200, "app a v1 | shared v2".into())
    );
    let w = why(&server, dir, &third[0]);
    assert_eq!(
        w["differing"],
        serde_json::json!(["packages/shared/"]),
        "{w}"
    );

    // A new branch: its first preview builds; another branch of the same content is
    // skipped (any branch, any commit) with its own alias. B's preview names its own
    // URL in its page, so B's is never reused.
    repo.push("feat-x");
    let x = push_to(&server, &[a, b], "feat-x", (&zero, &c3), &mut n);
    assert_eq!(
        reused_from(&server, &x[0]),
        None,
        "a preview does not reuse production"
    );
    repo.push("feat-y");
    let y = push_to(&server, &[a, b], "feat-y", (&zero, &c3), &mut n);
    assert_eq!(reused_from(&server, &y[0]), Some(x[0].clone()));
    assert_eq!(
        reused_from(&server, &y[1]),
        None,
        "B's preview names its own URL"
    );
    assert_eq!(
        page(&server, "feat-y--mono-a"),
        (200, "app a v1 | shared v2".into())
    );
    let (_, y_page) = page(&server, "feat-y--mono-b");
    assert!(
        y_page.contains(&y[1]),
        "B's page names its own deployment: {y_page}"
    );

    // Outputs cross branches only from a branch's first build: a later one may have read
    // what that branch's earlier builds left in its caches (a bundler cache a branch
    // anyone may push to planted). feat-x's second build is not taken for feat-z.
    let cx = repo.commit(&[("apps/a/page.txt", "app a on feat-x\n")]);
    repo.push("feat-x");
    let x2 = push_to(&server, &[a], "feat-x", (&c3, &cx), &mut n);
    assert_eq!(reused_from(&server, &x2[0]), None);
    repo.push("feat-z");
    let z = push_to(&server, &[a], "feat-z", (&zero, &cx), &mut n);
    assert_eq!(
        reused_from(&server, &z[0]),
        None,
        "it took feat-x's second build"
    );
    // feat-z's own first build may serve a later branch of the same tree.
    repo.push("feat-w");
    let w = push_to(&server, &[a], "feat-w", (&zero, &cx), &mut n);
    assert_eq!(reused_from(&server, &w[0]), Some(z[0].clone()));

    // Three commits in one push, only the first touching A: A builds (the pushed state
    // is what is compared, not the tip commit's change).
    let c4 = repo.commit(&[("apps/a/page.txt", "app a v4\n")]);
    repo.commit(&[("apps/b/page.txt", "app b v5\n")]);
    let c6 = repo.commit(&[("docs/README.md", "# Docs v6\n")]);
    assert_ne!(c4, c6);
    repo.push("main");
    let fourth = push_to(&server, &[a], "main", (&c3, &c6), &mut n);
    assert_eq!(reused_from(&server, &fourth[0]), None);
    assert_eq!(
        page(&server, "mono-a"),
        (200, "app a v4 | shared v2".into())
    );

    // A docs-only push is skipped, until a stored variable of production changes.
    let c7 = repo.commit(&[("docs/README.md", "# Docs v7\n")]);
    repo.push("main");
    let fifth = push_to(&server, &[a], "main", (&c6, &c7), &mut n);
    assert_eq!(reused_from(&server, &fifth[0]), Some(fourth[0].clone()));
    server
        .cli_input(
            dir,
            &["env", "add", "API_KEY", "--project", "mono-a"],
            "k-1\n",
        )
        .assert_code(0);
    let c8 = repo.commit(&[("docs/README.md", "# Docs v8\n")]);
    repo.push("main");
    let sixth = push_to(&server, &[a], "main", (&c7, &c8), &mut n);
    assert_eq!(reused_from(&server, &sixth[0]), None);
    let w = why(&server, dir, &sixth[0]);
    assert_eq!(
        w["differing"],
        serde_json::json!(["stored variables"]),
        "{w}"
    );
    assert!(
        !w.to_string().contains("k-1"),
        "the inputs show no variable's value: {w}"
    );

    // A deploy hook always builds (what it deploys changed outside the repository).
    let hooked = wait_ready(&server, &call_new_hook(&server, dir, "mono-a"));
    assert_eq!(reused_from(&server, &hooked), None);
}

/// A CLI deploy of an unchanged folder is skipped; `--force` builds.
#[test]
fn an_unchanged_upload_is_skipped_and_force_builds() {
    let server = Server::start();
    let tmp = fixture("two-app-monorepo");
    let dir = tmp.path().join("two-app-monorepo");
    write_files(&dir, &[("cdeploy.toml", "[build]\nroot = \"apps/a\"\n")]);
    let first = server.deploy_id(&dir, "up-a");
    let second = server.deploy_id(&dir, "up-a");
    assert_eq!(reused_from(&server, &second), Some(first.clone()));
    assert_eq!(page(&server, "up-a"), (200, "app a v1 | shared v1".into()));
    assert_eq!(server.deployment(&second)["production"], true);
    let out = server.cli(&dir, &["deploy", "--slug", "up-a", "--force", "--json"]);
    out.assert_code(0);
    let forced = out.json()["id"].as_str().unwrap().to_string();
    assert_eq!(reused_from(&server, &forced), None);
    // A change under the app builds again; one outside it does not.
    write_files(&dir, &[("docs/README.md", "other\n")]);
    let third = server.deploy_id(&dir, "up-a");
    assert!(reused_from(&server, &third).is_some());
    write_files(&dir, &[("apps/a/page.txt", "app a v2\n")]);
    let fourth = server.deploy_id(&dir, "up-a");
    assert_eq!(reused_from(&server, &fourth), None);
    assert_eq!(page(&server, "up-a"), (200, "app a v2 | shared v1".into()));
}

/// A deploy hook's build (forced: what it deploys changed outside the repository) still
/// running when a push of the same tree comes: the push builds too, rather than put
/// the last ready output in front of the hook's newer one. Once both are ready, the
/// next such push is skipped, taking the newest.
#[test]
fn a_push_during_a_forced_build_of_the_same_inputs_builds() {
    let server = Server::start();
    let daemon = GitDaemon::start();
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    // Each build's page is its own (the time it ran): which output is served shows.
    write_build_command(
        work,
        "sleep 3; mkdir -p dist; date +%s%N > dist/index.html",
        "output = \"dist\"\n",
    );
    git_commit_all(work);
    git(work, &["branch", "-M", "main"]);
    let url = daemon.publish(work, "octo-org/octo-repo");
    let bare = daemon.root.path().join("octo-org/octo-repo.git");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = server.cli(dir, &["git", "link", &url, "--project", "hooked", "--json"]);
    out.assert_code(0);
    let secret = out.json()["webhook_secrets"]["github"]
        .as_str()
        .unwrap()
        .to_string();
    let project = [("hooked", secret.as_str())];
    let mut n = 0;
    let empty_commit = || {
        git(work, &["commit", "-q", "--allow-empty", "-m", "retrigger"]);
        let to = "HEAD:refs/heads/main";
        git(work, &["push", "-q", "--force", bare.to_str().unwrap(), to]);
        git(work, &["rev-parse", "HEAD"]).trim().to_string()
    };
    let c1 = git(work, &["rev-parse", "HEAD"]).trim().to_string();
    let first = push_to(&server, &project, "main", (&"0".repeat(40), &c1), &mut n);

    let answer = call_new_hook(&server, dir, "hooked");
    let hooked = answer["deployment"].as_str().unwrap().to_string();
    server.wait_status(&hooked, Duration::from_secs(30), |s| s == "building");
    // The hook's build records its inputs before it runs its command (3 s).
    wait_until(
        "the hook's inputs recorded",
        Duration::from_secs(20),
        || {
            server
                .client()
                .get(&format!("/v1/deployments/{hooked}/inputs"))
                .json()["recorded"]
                == true
        },
    );
    let c2 = empty_commit();
    let during = push_to(&server, &project, "main", (&c1, &c2), &mut n);
    assert_eq!(
        reused_from(&server, &during[0]),
        None,
        "it took {first:?}'s output"
    );
    let log = server.cli(dir, &["logs", "hooked", "--deployment", &during[0]]);
    assert!(log.stdout.contains("still building"), "{}", log.stdout);
    server.wait_status(&hooked, Duration::from_secs(30), |s| s == "ready");
    let served = page(&server, "hooked").1;

    // Nothing under way now: the same tree again takes the newest ready output.
    let c3 = empty_commit();
    let after = push_to(&server, &project, "main", (&c2, &c3), &mut n);
    assert_eq!(reused_from(&server, &after[0]), Some(during[0].clone()));
    assert_eq!(page(&server, "hooked").1, served);
}
