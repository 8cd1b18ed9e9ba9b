//! Distributed mode against real parts: moto's S3 and ECS APIs, `redis-server`, Postgres,
//! the test ECS agent (what Fargate does), server replicas and a standalone proxy — all
//! separate processes on loopback ports.

use std::time::Duration;

use cdeploy_tests::distributed::*;
use cdeploy_tests::services::{Fault, FaultProxy, Redis};
use cdeploy_tests::*;

/// All the server may put in a task's overrides (readable with ecs:DescribeTasks): the
/// deployment's ids, where the API is, and the one-time claim. No build setting, env
/// value or git URL.
const OVERRIDE_NAMES: &[&str] = &["PROJECT_ID", "DEPLOYMENT_ID", "CDEPLOY_API", "BUILD_CLAIM"];

fn asset(html: &str, ext: &str) -> String {
    html.split('"')
        .find(|s| s.starts_with("/assets/") && s.ends_with(ext))
        .unwrap_or_else(|| panic!("no {ext} asset in {html}"))
        .to_string()
}

/// A repository whose build prints `lines` numbered lines, slowly, then writes a page.
fn slow_repo(daemon: &GitDaemon, name: &str, lines: u32, pause: &str) -> String {
    let work = tempfile::tempdir().unwrap();
    write_build_command(
        work.path(),
        &format!(
            "for i in $(seq 1 {lines}); do echo line $i; sleep {pause}; done; mkdir -p out; echo '<h1>{name}</h1>' > out/index.html"
        ),
        "output = \"out\"\n",
    );
    git_commit_all(work.path());
    daemon.publish(work.path(), name)
}

/// The numbers of the `line N` log lines in `text`, in order.
fn numbered_lines(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| {
            l.rsplit_once("line ")
                .and_then(|(_, n)| n.trim().parse().ok())
        })
        .collect()
}

#[test]
fn ecs_build_through_s3_and_redis_served_by_a_standalone_proxy() {
    let d = Distributed::start(false);
    let server = d.server();
    let proxy = ProxyProcess::start(Some(&format!("s3://{BUCKET}")), &d.moto.aws_env());
    let daemon = GitDaemon::start();
    let tmp = fixture("vite-app");
    let app = tmp.path().join("vite-app");
    write_files(
        &app,
        &[(
            "cdeploy.toml",
            "[env]\nVITE_GREETING = \"hello from ECS\"\n",
        )],
    );
    git_commit_all(&app);
    let url = daemon.publish(&app, "vite");

    let out = server.cli(
        tmp.path(),
        &["deploy", "--git", &url, "--slug", "vite-ecs", "--json"],
    );
    out.assert_code(0);
    let first = out.json();
    assert_eq!(first["status"], "ready", "{first}");
    assert!(out.stderr.contains("vite"), "{}", out.stderr);

    // The build ran as an ECS task whose overrides carry only per-deployment values.
    let reports = d.agent.reports();
    let started: Vec<_> = reports
        .iter()
        .filter(|r| r.get("overrides").is_some())
        .collect();
    assert_eq!(started.len(), 1, "{reports:?}");
    let overrides = started[0]["overrides"].as_array().unwrap();
    for kv in overrides {
        let (name, value) = (kv["name"].as_str().unwrap(), kv["value"].as_str().unwrap());
        assert!(OVERRIDE_NAMES.contains(&name), "{name} in the overrides");
        assert!(
            !value.contains("test-secret") && !value.contains("test-key"),
            "a credential in the overrides: {name}={value}"
        );
    }
    let names: Vec<&str> = overrides
        .iter()
        .map(|kv| kv["name"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["BUILD_CLAIM", "CDEPLOY_API", "DEPLOYMENT_ID", "PROJECT_ID"],
        "{names:?}"
    );
    let all = serde_json::to_string(overrides).unwrap();
    assert!(
        !all.contains("hello from ECS") && !all.contains(&url),
        "{all}"
    );
    let task = server.deployment(first["id"].as_str().unwrap());
    assert_eq!(task["status"], "ready");

    // The standalone proxy serves the site from S3.
    let index = proxy.get("vite-ecs", "/");
    assert_eq!(index.status, 200, "{}", index.body);
    assert!(
        index.body.contains("<div id=\"app\"></div>"),
        "{}",
        index.body
    );
    let js = proxy.get("vite-ecs", &asset(&index.body, ".js"));
    assert_eq!(js.status, 200);
    assert!(js.body.contains("hello from ECS"));
    let page = format!("http://vite-ecs.localhost:{}/", proxy.port);
    let dom = chromium_dom(&page);
    assert!(
        dom.contains("Home page rendered by JavaScript"),
        "Chromium DOM: {dom}"
    );

    // The build log travelled through Redis and is archived in the bucket.
    let logs = server.cli(tmp.path(), &["logs", "vite-ecs"]);
    logs.assert_code(0);
    assert!(logs.stdout.contains("vite"), "{}", logs.stdout);
    assert!(logs.stdout.contains("built in"), "{}", logs.stdout);
    let id1 = first["id"].as_str().unwrap();
    wait_until("the log archive", Duration::from_secs(10), || {
        d.keys(&format!("deployments/{id1}/"))
            .iter()
            .any(|k| k.ends_with("log.jsonl"))
    });

    // A redeploy of the same commit is not built: the builder sends its inputs through
    // the builder API, and the control plane finds the first deployment had the same
    // (docs/skipping.md). No blob is uploaded: the bucket holds the same objects.
    let blobs_before = d.keys("blobs/");
    let out = server.cli(
        tmp.path(),
        &["deploy", "--git", &url, "--slug", "vite-ecs", "--json"],
    );
    out.assert_code(0);
    let second = out.json();
    assert_ne!(second["id"], first["id"]);
    assert_eq!(
        d.keys("blobs/"),
        blobs_before,
        "the redeploy uploaded blobs"
    );
    let id2 = second["id"].as_str().unwrap();
    assert_eq!(server.deployment(id2)["reused_from"], first["id"]);
    assert!(d
        .keys(&format!("deployments/{id2}/"))
        .iter()
        .any(|k| k.ends_with("manifest.json")));

    // Rollback through the API reaches the separate proxy within its route TTL.
    let rolled = server.cli(tmp.path(), &["rollback", "vite-ecs", "--json"]);
    rolled.assert_code(0);
    let route = format!("routes/{}.json", "vite-ecs");
    assert!(d.keys(&route).contains(&route));
    let preview = proxy.get(&format!("vite-ecs--{id2}"), "/");
    assert_eq!(preview.status, 200);

    // An uploaded source (not git) goes through S3 to the builder too.
    let src = tempfile::tempdir().unwrap();
    write_files(
        src.path(),
        &[("web/index.html", "<h1>uploaded source</h1>")],
    );
    write_build_command(
        src.path(),
        "mkdir -p out && cp web/index.html out/",
        "output = \"out\"\n",
    );
    let out = server.cli(src.path(), &["deploy", "--slug", "uploaded", "--json"]);
    out.assert_code(0);
    let page = proxy.get("uploaded", "/");
    assert_eq!(
        (page.status, page.body.trim()),
        (200, "<h1>uploaded source</h1>")
    );

    // A new version, then a rollback: the separate proxy follows each within its route
    // TTL (1 s here), with nobody telling it.
    write_files(src.path(), &[("web/index.html", "<h1>second</h1>")]);
    let out = server.cli(src.path(), &["deploy", "--slug", "uploaded", "--json"]);
    out.assert_code(0);
    let shows = |body: &str| {
        wait_until(
            &format!("the proxy to serve {body}"),
            Duration::from_secs(5),
            || proxy.get("uploaded", "/").body.trim() == body,
        )
    };
    shows("<h1>second</h1>");
    server
        .cli(src.path(), &["rollback", "uploaded", "--json"])
        .assert_code(0);
    shows("<h1>uploaded source</h1>");

    // Removing the project takes the site off every proxy.
    server
        .cli(src.path(), &["rm", "uploaded", "--yes"])
        .assert_code(0);
    wait_until("the site to go", Duration::from_secs(5), || {
        proxy.get("uploaded", "/").status == 404
    });

    // The seed's POST /project builds through ECS too.
    let seeded = server.client().post(
        "/project",
        &serde_json::json!({ "gitURL": url, "slug": "seeded" }),
    );
    assert_eq!(seeded.status, 200, "{}", seeded.text);
    let v = seeded.json();
    assert_eq!(v["status"], "queued");
    let id = v["data"]["deploymentId"].as_str().unwrap();
    let done = server.wait_status(id, Duration::from_secs(120), |s| {
        ["ready", "failed", "canceled"].contains(&s)
    });
    assert_eq!(done["status"], "ready", "{done}");
    assert_eq!(proxy.get("seeded", "/").status, 200);
}

#[test]
fn ecs_faults_fail_deployments_with_the_reason() {
    let d = Distributed::start(false);
    let daemon = GitDaemon::start();
    let url = slow_repo(&daemon, "slow", 200, "0.1");
    let tmp = tempfile::tempdir().unwrap();

    // A bucket that does not exist stops the server at start, naming it.
    let aws = d.moto.aws_env();
    let env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let stderr = refused_start(&["--storage", "s3://no-such-bucket"], &env);
    assert!(
        stderr.contains("S3 bucket \"no-such-bucket\" is not reachable"),
        "{stderr}"
    );

    // RunTask with a task definition ECS does not know: failed with ECS's message, exit 1.
    {
        let server = d.server_with(&[], &[("TASK", "no-such-builder")]);
        let out = server.cli(
            tmp.path(),
            &["deploy", "--git", &url, "--slug", "baddef", "--json"],
        );
        out.assert_code(1);
        let v = out.json();
        assert_eq!(v["status"], "failed", "{v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("Unable to describe task definition"), "{v}");
    }

    let server = d.server();
    // A task stopped by ECS before the builder finishes: failed with the stop reason.
    let out = server.cli(
        tmp.path(),
        &[
            "deploy",
            "--git",
            &url,
            "--slug",
            "stopped",
            "--no-wait",
            "--json",
        ],
    );
    out.assert_code(0);
    let id = out.json()["id"].as_str().unwrap().to_string();
    let task = wait_for_task(&d, &id);
    server.wait_status(&id, Duration::from_secs(60), |s| s == "building");
    let metrics = server.client().get("/metrics").text;
    assert!(
        metrics.contains("\ncdeploy_ecs_builds_watched 1\n"),
        "{metrics}"
    );
    std::thread::sleep(Duration::from_secs(1));
    d.moto
        .stop_task(CLUSTER, &task, "Spot capacity reclaimed (test)");
    let end = server.wait_status(&id, Duration::from_secs(30), |s| {
        s != "building" && s != "queued"
    });
    assert_eq!(end["status"], "failed", "{end}");
    assert!(
        end["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Spot capacity reclaimed (test)"),
        "{end}"
    );

    // Cancel stops the task; the deployment ends canceled.
    let out = server.cli(
        tmp.path(),
        &[
            "deploy",
            "--git",
            &url,
            "--slug",
            "canceled",
            "--no-wait",
            "--json",
        ],
    );
    let id = out.json()["id"].as_str().unwrap().to_string();
    let task = wait_for_task(&d, &id);
    server.wait_status(&id, Duration::from_secs(60), |s| s == "building");
    let r = server.client().post(
        &format!("/v1/deployments/{id}/cancel"),
        &serde_json::json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let end = server.wait_status(&id, Duration::from_secs(30), |s| s != "building");
    assert_eq!(end["status"], "canceled", "{end}");
    assert_eq!(
        d.moto.describe_task(CLUSTER, &task)["desiredStatus"],
        "STOPPED"
    );
}

/// The ECS task the agent runs for a deployment (its ARN).
fn wait_for_task(d: &Distributed, id: &str) -> String {
    let mut arn = String::new();
    wait_until("the build task", Duration::from_secs(30), || {
        arn = d
            .agent
            .reports()
            .iter()
            .find(|r| {
                r["overrides"].as_array().is_some_and(|kv| {
                    kv.iter()
                        .any(|e| e["name"] == "DEPLOYMENT_ID" && e["value"] == id)
                })
            })
            .and_then(|r| r["task"].as_str().map(String::from))
            .unwrap_or_default();
        !arn.is_empty()
    });
    arn
}

#[test]
fn redis_restart_mid_build_loses_no_event() {
    let d = Distributed::start(false);
    let server = d.server();
    let daemon = GitDaemon::start();
    let url = slow_repo(&daemon, "chatty", 60, "0.1");
    let tmp = tempfile::tempdir().unwrap();
    let mut child = server.cli_spawn(tmp.path(), &["deploy", "--git", &url, "--slug", "chatty"]);
    // Restart Redis (empty: no persistence) while the build prints.
    let mut redis = d.redis;
    wait_until("the build to start", Duration::from_secs(60), || {
        let list = server
            .client()
            .get("/v1/projects/chatty/deployments")
            .json();
        list[0]["status"] == "building"
    });
    std::thread::sleep(Duration::from_secs(2));
    redis.restart();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert_eq!(
        numbered_lines(&stderr),
        (1..=60).collect::<Vec<_>>(),
        "{stderr}"
    );
    // The archived log is whole too: Redis had lost the first half, the builder put it back.
    let logs = server.cli(tmp.path(), &["logs", "chatty"]);
    assert_eq!(
        numbered_lines(&logs.stdout),
        (1..=60).collect::<Vec<_>>(),
        "{}",
        logs.stdout
    );
}

#[test]
fn s3_errors_are_retried_then_fail_clearly() {
    // The server alone writes S3 (builders upload through it): faults between it and S3.
    let d = Distributed::start(false);
    let faulty = FaultProxy::start(&d.moto.endpoint());
    let endpoint = faulty.endpoint();
    let server = d.server_with(&[], &[("S3_ENDPOINT", &endpoint), ("S3_MAX_ATTEMPTS", "3")]);
    let daemon = GitDaemon::start();
    let tmp = tempfile::tempdir().unwrap();
    let site = tempfile::tempdir().unwrap();
    write_files(
        site.path(),
        &[
            ("web/index.html", "<h1>retried</h1>"),
            ("web/app.js", "console.log(1)"),
        ],
    );
    write_build_command(
        site.path(),
        "mkdir -p out && cp web/* out/",
        "output = \"out\"\n",
    );
    git_commit_all(site.path());
    let url = daemon.publish(site.path(), "retried");

    // A few failures: the SDK retries with backoff and the deployment is ready.
    faulty.fail_next_writes(2);
    let out = server.cli(
        tmp.path(),
        &["deploy", "--git", &url, "--slug", "retried", "--json"],
    );
    out.assert_code(0);
    assert_eq!(faulty.failed_writes(), 2);

    // Failures that persist: failed, naming S3 and its error.
    write_files(site.path(), &[("web/index.html", "<h1>never stored</h1>")]);
    git_commit_all(site.path());
    let url = daemon.publish(site.path(), "retried");
    faulty.set(Fault::FailWrites);
    let out = server.cli(
        tmp.path(),
        &["deploy", "--git", &url, "--slug", "retried", "--json"],
    );
    out.assert_code(1);
    let v = out.json();
    let msg = v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains("S3") && msg.contains("InternalError"), "{v}");
    assert!(
        faulty.failed_writes() > 4,
        "retried: {}",
        faulty.failed_writes()
    );
}

#[test]
fn proxy_answers_502_while_s3_is_unreachable_and_recovers() {
    let d = Distributed::start(false);
    // Public, for the BASE_PATH origin below (moto applies this to objects written later).
    d.moto.make_public(BUCKET);
    let server = d.server();
    let faulty = FaultProxy::start(&d.moto.endpoint());
    let mut env = d.moto.aws_env();
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL".into(), faulty.endpoint()));
    env.push(("S3_MAX_ATTEMPTS".into(), "2".into()));
    env.push(("S3_ATTEMPT_TIMEOUT".into(), "2".into()));
    let proxy = ProxyProcess::start(Some(&format!("s3://{BUCKET}")), &env);
    let site = tempfile::tempdir().unwrap();
    write_files(
        site.path(),
        &[
            ("index.html", "<h1>cached</h1>"),
            ("other.html", "<h1>other</h1>"),
        ],
    );
    let out = server.cli(
        site.path(),
        &["deploy", "--prebuilt", ".", "--slug", "flaky", "--json"],
    );
    out.assert_code(0);
    assert_eq!(proxy.get("flaky", "/").status, 200);

    faulty.set(Fault::Down);
    assert_eq!(
        proxy.get("flaky", "/").status,
        200,
        "a cached file is still served"
    );
    let down = proxy.get("flaky", "/other.html");
    assert_eq!(down.status, 502, "{}", down.body);

    faulty.set(Fault::None);
    let back = proxy.get("flaky", "/other.html");
    assert_eq!((back.status, back.body.as_str()), (200, "<h1>other</h1>"));

    // The seed's BASE_PATH: a public bucket URL, read with plain GETs.
    let public = ProxyProcess::start(
        None,
        &[(
            "BASE_PATH".to_string(),
            format!("{}/{BUCKET}", d.moto.endpoint()),
        )],
    );
    let page = public.get("flaky", "/other.html");
    assert_eq!((page.status, page.body.as_str()), (200, "<h1>other</h1>"));
    assert_eq!(public.get("nothing-here", "/").status, 404);
}

/// A public bucket URL as the proxies' origin publishes every object, preview protection
/// records included: with a protection key they are sealed, so the record anyone can
/// download gives away neither the cookie key nor the password hash, while proxies given
/// the key enforce it and a proxy without it keeps the previews closed.
#[test]
fn a_public_bucket_holds_only_sealed_protection_records() {
    let d = Distributed::start(false);
    d.moto.make_public(BUCKET);
    let key = "c2VhbGVkLXByb3RlY3Rpb24ta2V5LWZvci10ZXN0cyE=";
    let server = d.server_with(&[], &[("CDEPLOY_PROTECTION_KEY", key)]);
    let site = tempfile::tempdir().unwrap();
    write_files(site.path(), &[("index.html", "production page")]);
    server
        .cli(
            site.path(),
            &["deploy", "--prebuilt", ".", "--slug", "sealed"],
        )
        .assert_code(0);
    write_files(site.path(), &[("index.html", "preview page")]);
    server
        .cli(
            site.path(),
            &[
                "deploy",
                "--prebuilt",
                ".",
                "--slug",
                "sealed",
                "--preview",
                "--branch",
                "feat",
            ],
        )
        .assert_code(0);
    let out = server.cli_input(
        site.path(),
        &[
            "protection",
            "on",
            "--password",
            "--project",
            "sealed",
            "--json",
        ],
        "correct horse battery\n",
    );
    out.assert_code(0);
    let token = out.json()["bypass_token"].as_str().unwrap().to_string();

    // What anyone downloads from the bucket.
    let public = reqwest::blocking::get(format!(
        "{}/{BUCKET}/protection/sealed.json",
        d.moto.endpoint()
    ))
    .unwrap();
    assert_eq!(public.status(), 200);
    let record = public.text().unwrap();
    assert!(
        record.contains("\"sealed\"")
            && !record.contains("argon2")
            && !record.contains("cookie_key")
            && !record.contains("bypass"),
        "{record}"
    );

    let origin = format!("{}/{BUCKET}", d.moto.endpoint());
    let keyed = ProxyProcess::start(
        None,
        &[
            ("BASE_PATH".to_string(), origin.clone()),
            ("CDEPLOY_PROTECTION_KEY".to_string(), key.to_string()),
        ],
    );
    assert_eq!(keyed.get("sealed", "/").body, "production page");
    let closed = keyed.get("feat--sealed", "/");
    assert_eq!(closed.status, 401, "{}", closed.body);
    assert!(closed.body.contains("<form") && !closed.body.contains("preview page"));
    let open = keyed.get_with("feat--sealed", "/", &[("x-cdeploy-bypass", &token)]);
    assert_eq!((open.status, open.body.as_str()), (200, "preview page"));

    // A proxy without the key can't tell who may see the previews: closed, saying why.
    let keyless = ProxyProcess::start(None, &[("BASE_PATH".to_string(), origin)]);
    assert_eq!(keyless.get("sealed", "/").body, "production page");
    for headers in [vec![], vec![("x-cdeploy-bypass", token.as_str())]] {
        let page = keyless.get_with("feat--sealed", "/", &headers);
        assert_eq!(page.status, 503, "{}", page.body);
        assert!(!page.body.contains("preview page"), "{}", page.body);
    }
    // A sealed record copied onto another project does not open there: its previews stay
    // closed, the server says why, and turning protection off (no key needed) mends it.
    server
        .cli(
            site.path(),
            &["deploy", "--prebuilt", ".", "--slug", "copied"],
        )
        .assert_code(0);
    server
        .cli(
            site.path(),
            &[
                "deploy",
                "--prebuilt",
                ".",
                "--slug",
                "copied",
                "--preview",
                "--branch",
                "feat",
            ],
        )
        .assert_code(0);
    let put = reqwest::blocking::Client::new()
        .put(format!(
            "{}/{BUCKET}/protection/copied.json",
            d.moto.endpoint()
        ))
        .body(record.clone())
        .send()
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let closed = keyed.get("feat--copied", "/");
    assert_eq!(closed.status, 503, "{}", closed.body);
    let status = server.cli(
        site.path(),
        &["protection", "status", "--project", "copied"],
    );
    assert_ne!(status.code, 0);
    assert!(status.stderr.contains("does not open"), "{}", status.stderr);
    server
        .cli(site.path(), &["protection", "off", "--project", "copied"])
        .assert_code(0);
    // Within the proxy's cache time (its route TTL, 2 s).
    wait_until(
        "the preview to be public again",
        Duration::from_secs(15),
        || keyed.get("feat--copied", "/").status == 200,
    );
    assert_eq!(keyed.get("feat--copied", "/").body, "preview page");

    // The server reads its own sealed record.
    let shown = server.cli(
        site.path(),
        &["protection", "status", "--project", "sealed", "--json"],
    );
    shown.assert_code(0);
    assert_eq!(shown.json()["password"], true, "{}", shown.stdout);
}

/// Runs `cdeploy-server` with settings that must stop it at start-up; returns stderr.
fn refused_start(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("cdeploy-server"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--proxy-listen", "none"])
        .args(args)
        .env("XDG_CONFIG_HOME", dir.path())
        .env_remove("REDIS_URL")
        .env_remove("REDIS_HOST")
        .env_remove("S3_BUCKET_NAME")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the server started: {stderr}");
    stderr
}

#[test]
fn bad_distributed_settings_are_clear_start_up_errors() {
    let redis = Redis::start();
    let dead = format!("redis://127.0.0.1:{}/", free_port());
    // (flags, environment, what stderr must say)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--bus", &dead],
            vec![],
            "the log bus (Redis) is unreachable",
        ),
        (
            vec!["--bus", "kafka://x"],
            vec![],
            "expected `memory`, `redis`",
        ),
        (
            vec!["--bus", "redis"],
            vec![],
            "set REDIS_URL or REDIS_HOST",
        ),
        (
            vec![],
            vec![("REDIS_HOST", "h"), ("REDIS_PORT", "http")],
            "REDIS_PORT",
        ),
        (
            vec!["--storage", "s3://Not_A_Bucket"],
            vec![],
            "not a valid bucket name",
        ),
        (
            vec!["--storage", "ftp://x/y"],
            vec![],
            "expected a directory or s3://",
        ),
        (
            vec!["--database", "mysql://x"],
            vec![],
            "expected sqlite://PATH or postgres://",
        ),
        (
            vec!["--dispatcher", "k8s"],
            vec![],
            "expected `local` or `ecs`",
        ),
        (vec!["--dispatcher", "ecs"], vec![], "needs --storage s3://"),
        (
            vec!["--dispatcher", "ecs", "--storage", "s3://b-1"],
            vec![],
            "needs the Redis log bus",
        ),
    ];
    for (args, env, expected) in cases {
        let stderr = refused_start(&args, &env);
        assert!(stderr.contains(expected), "{args:?} {env:?}: {stderr}");
    }
    // ECS settings by the seed's names, each named when missing.
    let url = redis.url();
    let ecs = [
        "--dispatcher",
        "ecs",
        "--storage",
        "s3://b-1",
        "--bus",
        &url,
    ];
    let aws = [
        ("AWS_ACCESS_KEY_ID", "k"),
        ("AWS_SECRET_ACCESS_KEY", "s"),
        ("AWS_REGION", "us-east-1"),
    ];
    let stderr = refused_start(&ecs, &aws);
    assert!(stderr.contains("set CLUSTER"), "{stderr}");
    let mut env = aws.to_vec();
    env.extend([("CLUSTER", "c"), ("TASK", "t")]);
    let stderr = refused_start(&ecs, &env);
    assert!(stderr.contains("set ECS_SUBNETS"), "{stderr}");
    env.push(("ECS_SUBNETS", "subnet-1"));
    let stderr = refused_start(&ecs, &env);
    assert!(stderr.contains("set --builder-api"), "{stderr}");
    let mut with_api = ecs.to_vec();
    with_api.extend(["--builder-api", "ftp://x"]);
    let stderr = refused_start(&with_api, &env);
    assert!(stderr.contains("expected http(s)://"), "{stderr}");
    let mut with_api = ecs.to_vec();
    with_api.extend(["--builder-api", "http://api.internal"]);
    for (k, v, expected) in [
        ("ECS_CLAIM_FROM", "nowhere", "expected `task`"),
        ("ECS_CLAIM_PROXIES", "many", "is not an address range"),
    ] {
        let mut env = env.clone();
        env.push((k, v));
        let stderr = refused_start(&with_api, &env);
        assert!(stderr.contains(expected), "{k}={v}: {stderr}");
    }
    // A protection key that is not one.
    let stderr = refused_start(&[], &[("CDEPLOY_PROTECTION_KEY", "short")]);
    assert!(
        stderr.contains("CDEPLOY_PROTECTION_KEY") && stderr.contains("32 random bytes"),
        "{stderr}"
    );
    env.push(("ECS_ACCESS_KEY", "only-half"));
    let stderr = refused_start(&ecs, &env);
    assert!(stderr.contains("ECS_SECRET_ACCESS_KEY"), "{stderr}");
}

#[test]
fn a_dead_redis_refuses_new_deployments_and_loses_nothing() {
    // The local dispatcher with the Redis bus: one server, builds in process.
    let mut redis = Redis::start();
    let url = redis.url();
    let server = Server::start_with(&["--bus", &url], &[]);
    let site = tempfile::tempdir().unwrap();
    write_files(site.path(), &[("index.html", "<h1>one</h1>")]);
    let out = server.cli(
        site.path(),
        &["deploy", "--prebuilt", ".", "--slug", "bus", "--json"],
    );
    out.assert_code(0);
    let first = out.json()["id"].as_str().unwrap().to_string();

    redis.stop();
    let before = server.client().get("/v1/projects/bus/deployments").json();
    let out = server.cli(
        site.path(),
        &["deploy", "--prebuilt", ".", "--slug", "bus", "--json"],
    );
    out.assert_code(3);
    let v = out.json();
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("Redis"),
        "{v}"
    );
    let after = server.client().get("/v1/projects/bus/deployments").json();
    assert_eq!(before, after, "nothing was recorded");
    assert_eq!(server.site("bus", "/").status, 200, "the site stays up");

    redis.restart();
    let out = server.cli(
        site.path(),
        &["deploy", "--prebuilt", ".", "--slug", "bus", "--json"],
    );
    out.assert_code(0);
    // The first log is in the bucket's archive even though Redis forgot it.
    let logs = server.cli(site.path(), &["logs", "bus", "--deployment", &first]);
    logs.assert_code(0);
    assert!(logs.stdout.contains("prebuilt"), "{}", logs.stdout);
}

#[test]
fn two_replicas_share_postgres_and_redis() {
    let d = Distributed::start(true);
    let mut replicas = d.replicas(2);
    let b = replicas.pop().unwrap();
    let mut a = replicas.pop().unwrap();
    let daemon = GitDaemon::start();
    let url = slow_repo(&daemon, "shared", 30, "0.1");
    let tmp = tempfile::tempdir().unwrap();

    // Deploy through A; follow and inspect through B, with A's token (one database).
    let out = a.cli(
        tmp.path(),
        &[
            "deploy",
            "--git",
            &url,
            "--slug",
            "shared",
            "--no-wait",
            "--json",
        ],
    );
    out.assert_code(0);
    let id = out.json()["id"].as_str().unwrap().to_string();
    let token = a.token();
    // A dies mid-build: the build task goes on, and B takes over watching it.
    a.kill9();
    let follow = b.cli_env(
        tmp.path(),
        &["logs", "shared"],
        &[("CDEPLOY_TOKEN", &token)],
    );
    follow.assert_code(0);
    assert_eq!(
        numbered_lines(&follow.stdout),
        (1..=30).collect::<Vec<_>>(),
        "{}",
        follow.stdout
    );
    let inspect = b.cli_env(
        tmp.path(),
        &["inspect", &id, "--wait", "--json"],
        &[("CDEPLOY_TOKEN", &token)],
    );
    inspect.assert_code(0);
    assert_eq!(inspect.json()["status"], "ready", "{}", inspect.stdout);
    let via_b = Api {
        base: b.api(),
        token: Some(token),
        http: reqwest::blocking::Client::new(),
    };
    let listed = via_b.get("/v1/projects/shared/deployments").json();
    assert_eq!(listed[0]["id"], id.as_str());
}

#[test]
fn the_log_bus_works_over_tls() {
    let redis = Redis::start_tls();
    let url = redis.url();
    assert!(url.starts_with("rediss://"));
    let ca = redis.ca_file().unwrap();
    let ca = ca.to_str().unwrap();
    // Without the CA the certificate is refused: a clear start-up error.
    let stderr = refused_start(&["--bus", &url], &[]);
    assert!(
        stderr.contains("the log bus (Redis) is unreachable"),
        "{stderr}"
    );
    // With it, builds log through Redis over TLS (the seed's variables this time).
    let port = redis.port.to_string();
    let server = Server::start_with(
        &[],
        &[
            ("REDIS_HOST", "localhost"),
            ("REDIS_PORT", &port),
            ("REDIS_TLS", "1"),
            ("REDIS_CA_CERT", ca),
        ],
    );
    let site = tempfile::tempdir().unwrap();
    write_build_command(
        site.path(),
        "echo over tls; mkdir -p out && echo '<h1>tls</h1>' > out/index.html",
        "output = \"out\"\n",
    );
    let out = server.cli(site.path(), &["deploy", "--slug", "tls", "--json"]);
    out.assert_code(0);
    let logs = server.cli(site.path(), &["logs", "tls"]);
    assert!(logs.stdout.contains("over tls"), "{}", logs.stdout);
    assert_eq!(server.site("tls", "/").body.trim(), "<h1>tls</h1>");
}

#[test]
fn an_ecs_build_restores_its_dependency_cache_from_storage() {
    let d = Distributed::start(false);
    let server = d.server();
    let daemon = GitDaemon::start();
    // Astro: a real dependency tree (~190 packages), and Node 22.12 from its .nvmrc.
    let tmp = fixture("astro-app");
    let app = tmp.path().join("astro-app");
    git_commit_all(&app);
    let url = daemon.publish(&app, "astro-cache");
    let slug = fresh_slug("ecs-cache");
    let deploy = |extra: &[&str]| {
        let mut args = vec![
            "deploy",
            "--git",
            url.as_str(),
            "--slug",
            slug.as_str(),
            "--json",
        ];
        args.extend_from_slice(extra);
        // For bench/ecs-cache.sh, each build starts on a settled disk, as a Fargate
        // task starts on a disk of its own: the previous task's files deleted and
        // everything written so far flushed. (Else the warm build's unpack queues behind
        // the writeback of the cold build's ~10,000 files, which Fargate never sees.)
        if std::env::var_os("CDEPLOY_BENCH").is_some() {
            let builds = d
                .agent
                .reports()
                .iter()
                .filter(|r| r["task"].is_string() && r["overrides"].is_array())
                .count();
            wait_until(
                "the last task's disk deleted",
                Duration::from_secs(60),
                || {
                    d.agent
                        .reports()
                        .iter()
                        .filter(|r| r["deleted"] == true)
                        .count()
                        == builds
                },
            );
            // SAFETY: sync(2) takes no arguments and cannot fail.
            unsafe { libc::sync() };
        }
        let started = std::time::Instant::now();
        let out = server.cli(tmp.path(), &args);
        out.assert_code(0);
        (out.stderr, started.elapsed().as_secs_f64())
    };

    // A fresh task, a cold cache: install, then save node_modules to storage.
    let (cold, cold_secs) = deploy(&[]);
    assert!(cold.contains("Build cache: miss"), "{cold}");
    assert!(cold.contains("$ npm ci"), "{cold}");
    assert!(cold.contains("Build cache: saved node_modules"), "{cold}");
    let entries = d.keys(&format!("cache/{slug}/"));
    assert_eq!(entries.len(), 1, "{entries:?}");

    // A new commit with the same lockfile, in another fresh task: restored from storage,
    // no install. (The same commit again would not be built at all: docs/skipping.md.)
    write_files(
        &app,
        &[("NOTES.md", "a change the install does not read\n")],
    );
    git_commit_all(&app);
    daemon.publish(&app, "astro-cache");
    let (warm, warm_secs) = deploy(&[]);
    assert!(
        warm.contains("Build cache: restored node_modules from storage"),
        "{warm}"
    );
    assert!(!warm.contains("$ npm ci"), "{warm}");
    assert!(server.site(&slug, "/").body.contains("Hello from Astro"));

    // --force: a clean install, and the cache left as it was.
    let (forced, forced_secs) = deploy(&["--force"]);
    // Figures for bench/ecs-cache.sh (printed, never asserted: speed is benchmarked).
    let restore = warm
        .lines()
        .find_map(|l| l.split_once("from storage (").map(|(_, rest)| rest))
        .and_then(|rest| rest.split(';').next())
        .unwrap_or("");
    println!(
        "ecs build cache: cold {cold_secs:.1}s, warm {warm_secs:.1}s ({restore}), forced {forced_secs:.1}s; warm/cold {:.2}",
        warm_secs / cold_secs
    );
    assert!(
        forced.contains("Build cache: skipped for this build"),
        "{forced}"
    );
    assert!(forced.contains("$ npm ci"), "{forced}");
    assert!(!forced.contains("Build cache: saved"), "{forced}");
}

#[test]
fn an_ecs_preview_is_served_at_its_alias_and_production_stays() {
    let d = Distributed::start(false);
    let server = d.server();
    let proxy = ProxyProcess::start(Some(&format!("s3://{BUCKET}")), &d.moto.aws_env());
    let daemon = GitDaemon::start();
    let work = tempfile::tempdir().unwrap();
    // The page says which environment built it, and the branch URL the build was given.
    write_build_command(
        work.path(),
        "echo \"secret: $PREVIEW_SECRET\"; mkdir -p out && echo \"built for $CDEPLOY_ENV $CDEPLOY_BRANCH_URL\" > out/index.html && printf %s \"${#PREVIEW_SECRET}\" > out/secret-length.txt",
        "output = \"out\"\n",
    );
    git_commit_all(work.path());
    let url = daemon.publish(work.path(), "previews");
    let tmp = tempfile::tempdir().unwrap();
    let deploy = |extra: &[&str]| {
        let mut args = vec![
            "deploy",
            "--git",
            url.as_str(),
            "--slug",
            "ecs-prev",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = server.cli(tmp.path(), &args);
        out.assert_code(0);
        out.json()
    };
    deploy(&[]);
    // A stored preview secret: the ECS build gets it in the spec it claims (never in
    // the task's overrides), and its log shows a mask.
    let secret = "ecs-preview-secret-4711";
    server
        .cli_input(
            tmp.path(),
            &[
                "env",
                "add",
                "PREVIEW_SECRET",
                "--project",
                "ecs-prev",
                "--target",
                "preview",
            ],
            secret,
        )
        .assert_code(0);
    let preview = deploy(&["--preview", "--branch", "feat"]);
    assert_eq!(preview["status"], "ready", "{preview}");
    let page = proxy.get("feat--ecs-prev", "/secret-length.txt");
    assert_eq!(page.body, secret.len().to_string());
    assert_eq!(proxy.get("ecs-prev", "/secret-length.txt").body, "0");
    let reports = serde_json::to_string(&d.agent.reports()).unwrap();
    assert!(
        reports.contains("overrides") && !reports.contains(secret),
        "{reports}"
    );
    let log = server.cli(tmp.path(), &["logs", "ecs-prev"]);
    assert!(
        log.stdout.contains("secret: ***") && !log.stdout.contains(secret),
        "{}",
        log.stdout
    );
    let branch_url = preview["branch_url"].as_str().unwrap();
    let page = proxy.get("feat--ecs-prev", "/");
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.body.trim(), format!("built for preview {branch_url}"));
    let page = proxy.get("ecs-prev", "/");
    assert_eq!(page.body.trim(), "built for production");
}

#[test]
fn a_server_app_built_on_ecs_runs_on_a_proxy_replica() {
    let d = Distributed::start(false);
    // The protection key the servers and the proxies share seals the project's runtime
    // variables in storage for the replica.
    let key = "cnVudGltZS12YXJpYWJsZXMta2V5LWZvci10ZXN0cyE=";
    let server = d.server_with(&[], &[("CDEPLOY_PROTECTION_KEY", key)]);
    // The servers' uid passes through to the runtime folder.
    let runtimes = traversable_tempdir();
    let dir = runtimes.path().join("runtimes");
    let mut env = d.moto.aws_env();
    env.push(("CDEPLOY_PROTECTION_KEY".to_string(), key.to_string()));
    let proxy = ProxyProcess::start_with(
        Some(&format!("s3://{BUCKET}")),
        &env,
        &[
            "--runtime-dir",
            dir.to_str().unwrap(),
            "--runtime-idle-secs",
            "2",
        ],
    );
    let daemon = GitDaemon::start();
    let tmp = fixture("node-server-app");
    let app = tmp.path().join("node-server-app");
    git_commit_all(&app);
    let url = daemon.publish(&app, "node-ecs");
    let set_secret = |value: &str| {
        let args = [
            "env",
            "add",
            "RUNTIME_SECRET",
            "--runtime",
            "--project",
            "node-ecs",
        ];
        server.cli_input(tmp.path(), &args, value).assert_code(0);
    };
    set_secret("replica-value-5d1e");
    let out = server.cli(
        tmp.path(),
        &["deploy", "--git", &url, "--slug", "node-ecs", "--json"],
    );
    out.assert_code(0);
    assert!(out.stderr.contains("GET / answered 200"), "{}", out.stderr);

    // The replica wakes it from S3: a value per request, the static file its own.
    let (a, b) = (proxy.get("node-ecs", "/"), proxy.get("node-ecs", "/"));
    assert_eq!((a.status, b.status), (200, 200), "{}", a.body);
    assert_ne!(a.body, b.body);
    assert!(a.body.contains("node-ecs.localhost"), "{}", a.body);
    let css = proxy.get("node-ecs", "/style.css");
    assert_eq!((css.status, css.body.trim()), (200, "h1 { color: teal; }"));
    let bundles: Vec<_> = std::fs::read_dir(dir.join("bundles"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(bundles.len(), 1, "the deployment's folder on this replica");
    let secret = |page: Page| {
        let json: serde_json::Value = serde_json::from_str(&page.body).expect("JSON");
        json["runtime"].as_str().map(String::from)
    };
    assert_eq!(
        secret(proxy.get("node-ecs", "/api/time")).as_deref(),
        Some("replica-value-5d1e")
    );
    // Storage holds the value sealed, never plain.
    let stored = d
        .moto
        .object(BUCKET, "runtime-env/node-ecs/production.json");
    assert!(
        stored.contains("\"sealed\"") && !stored.contains("replica-value"),
        "{stored}"
    );
    // It sleeps when idle and wakes again on the next request, with the value as it is
    // now.
    set_secret("changed-value-0b9c");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        secret(proxy.get("node-ecs", "/api/time")).as_deref(),
        Some("changed-value-0b9c")
    );
}
