//! Untrusted builds: a hostile repository (a real npm dependency installed from the
//! registry, then install and build scripts that try every way out) touches nothing but
//! its own deployment; fork bombs, memory hogs and disk fillers fail their own build
//! with a message naming the limit while other projects deploy.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cdeploy_tests::services::Redis;
use cdeploy_tests::*;

/// What every attack line must report, in each phase (install and build).
const ATTACKS: &[&str] = &[
    "proc-environ",
    "see-processes",
    "read-admin-token",
    "read-cli-credentials",
    "read-database",
    "read-etc-shadow",
    "read-data-dir",
    "write-victim-blob",
    "write-victim-route",
    "pgid-file",
    "signal-server",
    "signal-innocent",
    "linger",
    "registry-blocked",
];

/// A secret of the server's environment the build must never see.
const SERVER_SECRET: &str = "srv-secret-7d1f0c9a";

/// Addresses of this host's interfaces other than loopback.
fn host_ips() -> Vec<String> {
    let out = Command::new("hostname").arg("-I").output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

/// Ports something listens on right now on 127.0.0.1 among `candidates`.
fn listening(candidates: &[u16]) -> Vec<u16> {
    candidates
        .iter()
        .copied()
        .filter(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        .collect()
}

/// A process that belongs to nobody on the platform: nothing may kill it.
fn innocent() -> Child {
    Command::new("sleep")
        .arg("600")
        .stdin(Stdio::null())
        .spawn()
        .expect("start sleep")
}

fn alive(pid: u32) -> bool {
    rustix::process::Pid::from_raw(pid as i32)
        .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok())
}

/// Waits until no process matches `marker`, or `deadline`: the check after it then
/// fails only for a process still alive at the deadline.
fn gone_by(marker: &str, deadline: std::time::Instant) {
    while !pgrep(marker).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pgrep(marker: &str) -> String {
    let out = Command::new("pgrep")
        .args(["-a", "-f", marker])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("pgrep"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Files of a deployed site in storage: its route, manifest and blobs, byte for byte.
fn site_files(storage: &Path, slug: &str) -> Vec<(String, Vec<u8>)> {
    let route = storage.join(format!("routes/{slug}.json"));
    let route_bytes = std::fs::read(&route).expect("route");
    let route_json: serde_json::Value = serde_json::from_slice(&route_bytes).unwrap();
    let id = route_json["production"].as_str().unwrap();
    let manifest_path = storage.join(format!("deployments/{id}/manifest.json"));
    let manifest_bytes = std::fs::read(&manifest_path).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let mut files = vec![
        (route.display().to_string(), route_bytes),
        (manifest_path.display().to_string(), manifest_bytes),
    ];
    for entry in manifest["files"].as_object().unwrap().values() {
        let blob = storage.join(format!("blobs/{}", entry["hash"].as_str().unwrap()));
        files.push((blob.display().to_string(), std::fs::read(&blob).unwrap()));
    }
    files
}

/// Checks the attack report in a build log: every attack ran in each of `phases`, and
/// none succeeded.
fn assert_all_blocked(log: &str, phases: &[&str]) {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("ATTACK ")).collect();
    let succeeded: Vec<&&str> = lines.iter().filter(|l| l.contains(" SUCCEEDED ")).collect();
    assert!(
        succeeded.is_empty(),
        "attacks succeeded:\n{succeeded:#?}\n\nfull log:\n{log}"
    );
    let mut seen = BTreeSet::new();
    for l in &lines {
        let mut words = l.split("ATTACK ").nth(1).unwrap_or("").split_whitespace();
        if let (Some(phase), Some(name)) = (words.next(), words.next()) {
            seen.insert(format!("{phase} {name}"));
        }
    }
    for phase in phases {
        for a in ATTACKS {
            assert!(
                seen.contains(&format!("{phase} {a}")),
                "no report of {phase} {a}:\n{log}"
            );
        }
        assert!(
            seen.iter()
                .any(|s| s.starts_with(&format!("{phase} connect-169.254.169.254"))),
            "{log}"
        );
    }
}

/// Deploys the malicious repository: the build ends `ready`, and its log (returned)
/// reports every attack of both phases blocked.
fn deploy_hostile(server: &Server, cwd: &Path, url: &str, slug: &str) -> String {
    let out = server.cli(cwd, &["deploy", "--git", url, "--slug", slug, "--json"]);
    out.assert_code(0);
    assert_eq!(out.json()["status"], "ready", "{}", out.stderr);
    let log = server.cli(cwd, &["logs", slug]).stdout;
    assert_all_blocked(&log, &["install", "build"]);
    log
}

/// The malicious fixture as a git repository aimed at `server`.
fn malicious_repo(
    server: &Server,
    daemon: &GitDaemon,
    extra_ports: &[u16],
    victim_blob: &str,
    innocent_pid: u32,
    marker: &str,
) -> String {
    let tmp = fixture("malicious-app");
    let app = tmp.path().join("malicious-app");
    let data = server.data_dir();
    let mut ports = vec![server.api_port, server.proxy_port];
    ports.extend(extra_ports);
    ports.extend(listening(&[5432, 6379, 9000, 8000]));
    let targets = serde_json::json!({
        "server_pid": server.pid(),
        "innocent_pid": innocent_pid,
        "data_dir": data,
        "build_dir": data.join("builds"),
        "admin_token": data.join("admin-token"),
        "credentials": server.config_home().join("cdeploy/credentials.json"),
        "database": data.join("cdeploy.db"),
        "victim_blob": data.join("storage/blobs").join(victim_blob),
        "victim_route": data.join("storage/routes/victim.json"),
        "ports": ports,
        "host_ips": host_ips(),
        "secrets": [SERVER_SECRET, server.token()],
        "linger_marker": format!("{marker}-linger"),
        "hang_marker": format!("{marker}-hang"),
    });
    // Every deploy of it runs its attacks: none takes an earlier deployment's output.
    write_files(
        &app,
        &[
            ("targets.json", &targets.to_string()),
            ("cdeploy.toml", "[build]\nskip_unchanged = false\n"),
        ],
    );
    git_commit_all(&app);
    daemon.publish(&app, "evil")
}

#[test]
fn a_hostile_build_touches_nothing_but_its_own_deployment() {
    let redis = Redis::start();
    let evil = fresh_slug("evil");
    let mut server = Server::start_with(&[], &[("AWS_SECRET_ACCESS_KEY", SERVER_SECRET)]);
    let daemon = GitDaemon::start();
    let tmp = tempfile::tempdir().unwrap();

    // Another project's site, the target of defacement.
    let victim = tmp.path().join("victim");
    write_files(
        &victim,
        &[
            ("index.html", "<h1>victim</h1>"),
            ("app.js", "console.log('victim')"),
        ],
    );
    server
        .cli(
            &victim,
            &["deploy", "--prebuilt", ".", "--slug", "victim", "--json"],
        )
        .assert_code(0);
    let storage = server.data_dir().join("storage");
    let before = site_files(&storage, "victim");
    let victim_blob = sha256_hex(b"<h1>victim</h1>");
    let page_before = server.site("victim", "/").body;

    let mut bystander = innocent();
    let marker = format!("cdeploy-evil-{}", std::process::id());
    let url = malicious_repo(
        &server,
        &daemon,
        &[redis.port],
        &victim_blob,
        bystander.id(),
        &marker,
    );

    let log = deploy_hostile(&server, tmp.path(), &url, &evil);
    let ended = std::time::Instant::now();
    // Its caches: the package manager's (visible to its builds) and the kept
    // node_modules (never visible to builds).
    let cache = shared_cache_dir();
    let project_cache = cache.join("projects").join(&evil);
    let kept = |slug: &str| {
        std::fs::read_dir(cache.join("modules/node_modules"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{slug}--"))
            })
    };
    assert!(kept(&evil));
    assert!(
        log.contains("added 1 package"),
        "the dependency came from the registry: {log}"
    );

    // The victim's files are byte for byte what they were; its site serves the same.
    assert_eq!(site_files(&storage, "victim"), before);
    assert_eq!(server.site("victim", "/").body, page_before);
    assert!(server.site(&evil, "/").body.contains("evil but contained"));

    // The build did leave a process behind (the check below is not vacuous)...
    assert!(
        log.contains("ATTACK build linger BLOCKED started setsid"),
        "{log}"
    );
    // ...and nothing the build started is alive 3 s after it ended; the server is.
    gone_by(&marker, ended + Duration::from_secs(3));
    assert_eq!(pgrep(&marker), "", "a process of the build outlived it");
    assert!(server.is_running());
    assert!(alive(bystander.id()));

    // A build still running when the server is killed: after a restart, its processes
    // are gone, the deployment failed, and the process outside the platform (whose pid
    // the build wrote into every pid file it could) lives.
    let d = server.client().post(
        &format!("/v1/projects/{evil}/deployments"),
        &serde_json::json!({ "git": { "url": url }, "env": { "ATTACK_HANG": "1" } }),
    );
    assert_eq!(d.status, 202, "{}", d.text);
    let id = d.json()["id"].as_str().unwrap().to_string();
    wait_until(
        "the hostile build to hang",
        Duration::from_secs(120),
        || {
            server
                .cli(
                    tmp.path(),
                    &["logs", &evil, "--deployment", &id, "--no-follow"],
                )
                .stdout
                .contains("ATTACK hang: waiting")
        },
    );
    wait_until("the hanging build's sleep", Duration::from_secs(10), || {
        !pgrep(&format!("{marker}-hang")).is_empty()
    });
    server.kill9();
    server.start_again();
    let d = server.wait_status(&id, Duration::from_secs(20), |s| s == "failed");
    assert!(
        d["error"].as_str().unwrap().contains("server stopped"),
        "{d}"
    );
    wait_until(
        "the crashed build's processes to be gone",
        Duration::from_secs(5),
        || pgrep(&marker).is_empty(),
    );
    assert!(
        alive(bystander.id()),
        "crash recovery killed a process outside the platform"
    );
    assert_eq!(site_files(&storage, "victim"), before);
    let log = server
        .cli(tmp.path(), &["logs", &evil, "--deployment", &id])
        .stdout;
    // (The install is a cache hit this time: only the build's scripts ran.)
    assert_all_blocked(&log, &["build"]);
    let _ = bystander.kill();
    let _ = bystander.wait();

    // Deleting the project drops its caches: a project made later under the same name
    // starts clean, with nothing a hostile build left there. (The crashed build had
    // taken the kept node_modules; one more build keeps them again.)
    server
        .cli(
            tmp.path(),
            &["deploy", "--git", &url, "--slug", &evil, "--json"],
        )
        .assert_code(0);
    assert!(kept(&evil));
    // The package managers' store is the production scope's own.
    assert!(
        project_cache.join("production/npm").exists(),
        "{}",
        project_cache.display()
    );
    server
        .cli(tmp.path(), &["rm", &evil, "--yes"])
        .assert_code(0);
    assert!(!project_cache.exists());
    assert!(!kept(&evil));
}

#[test]
fn resource_hogs_fail_their_own_build_naming_the_limit() {
    let server = Server::start_with(
        &[
            "--build-memory-mb",
            "256",
            "--build-pids",
            "64",
            "--build-disk-mb",
            "64",
            "--concurrency",
            "4",
        ],
        &[],
    );
    let root = tempfile::tempdir().unwrap();
    let project = |name: &str, command: &str| {
        let dir = root.path().join(name);
        write_build_command(&dir, command, "output = \"out\"\n");
        dir
    };
    let hogs = [
        (
            "forkbomb",
            project("forkbomb", "bomb() { bomb | bomb & }; bomb; sleep 60"),
            "process limit of 64",
        ),
        (
            "memhog",
            project(
                "memhog",
                "node -e 'const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1))'",
            ),
            "memory limit of 256 MiB",
        ),
        (
            "diskfill",
            project(
                "diskfill",
                "mkdir -p out; i=0; while [ $i -lt 200 ]; do head -c 1048576 /dev/zero > out/f$i; i=$((i+1)); done",
            ),
            "disk limit of 64 MiB",
        ),
        (
            "bigfile",
            project("bigfile", "mkdir -p out; head -c 200000000 /dev/zero > out/big"),
            "disk limit of 64 MiB",
        ),
    ];
    let fine = project(
        "fine",
        "sleep 2; mkdir -p out; echo '<h1>fine</h1>' > out/index.html",
    );
    let mut running: Vec<(&str, Child, &str)> = hogs
        .iter()
        .map(|(slug, dir, msg)| {
            (
                *slug,
                server.cli_spawn(dir, &["deploy", "--slug", slug, "--json"]),
                *msg,
            )
        })
        .collect();
    // Another project deploys in parallel, and the server answers meanwhile.
    let ok = server.cli(&fine, &["deploy", "--slug", "fine", "--json"]);
    ok.assert_code(0);
    assert_eq!(server.site("fine", "/").body.trim(), "<h1>fine</h1>");
    let health = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .get(format!("{}/healthz", server.api()))
        .send()
        .unwrap();
    assert!(health.status().is_success());
    for (slug, child, message) in running.drain(..) {
        let out = CliOutput::from(child.wait_with_output().unwrap());
        out.assert_code(1);
        let v = out.json();
        assert_eq!(v["status"], "failed", "{slug}: {v}");
        let error = v["error"]["message"].as_str().unwrap_or_default();
        assert!(error.contains(message), "{slug}: {error}");
    }
    // The limits bounded what was written: nothing of the hogs is left on disk (work
    // dirs are deleted just after the outcome is reported).
    let builds = server.data_dir().join("builds");
    wait_until("the work dirs deleted", Duration::from_secs(30), || {
        std::fs::read_dir(&builds)
            .unwrap()
            .flatten()
            .all(|e| e.file_name().to_string_lossy().starts_with('.'))
    });
}

#[test]
fn git_credentials_appear_nowhere() {
    let server = Server::start();
    let daemon = GitDaemon::start();
    let work = tempfile::tempdir().unwrap();
    write_files(work.path(), &[("index.html", "<h1>private</h1>")]);
    git_commit_all(work.path());
    daemon.publish(work.path(), "private");
    // An https URL with a token; the host does not answer, so git reports an error
    // that names the URL.
    let port = free_port();
    let token = "ghp_SuperSecretToken123";
    let url = format!("https://ci-bot:{token}@127.0.0.1:{port}/team/private.git");
    let tmp = tempfile::tempdir().unwrap();
    let out = server.cli(
        tmp.path(),
        &["deploy", "--git", &url, "--slug", "private", "--json"],
    );
    out.assert_code(1);
    let id = out.json()["id"].as_str().unwrap().to_string();
    let logs = server.cli(tmp.path(), &["logs", "private", "--deployment", &id]);
    let api = [
        server.client().get(&format!("/v1/deployments/{id}")).text,
        server.client().get("/v1/projects/private").text,
        server.client().get("/v1/projects/private/deployments").text,
        server.client().get("/v1/projects").text,
    ];
    for text in [&out.stdout, &out.stderr, &logs.stdout, &logs.stderr]
        .into_iter()
        .chain(api.iter())
    {
        assert!(!text.contains(token), "the token leaked: {text}");
        assert!(!text.contains("ci-bot"), "the user name leaked: {text}");
    }
    assert!(
        logs.stdout.contains("https://***:***@127.0.0.1"),
        "{}",
        logs.stdout
    );
    assert!(api[0].contains("***"), "{}", api[0]);
}

#[test]
fn the_data_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[("index.html", "x")]);
    server
        .cli(
            tmp.path(),
            &["deploy", "--prebuilt", ".", "--slug", "perm", "--json"],
        )
        .assert_code(0);
    let data = server.data_dir();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // Others may pass through to the build directories, and read or list nothing.
    assert_eq!(mode(&data) & 0o077, 0o011, "{:o}", mode(&data));
    for f in ["cdeploy.db", "admin-token", "secrets.key"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    for entry in std::fs::read_dir(data.join("logs")).unwrap().flatten() {
        assert_eq!(mode(&entry.path()) & 0o077, 0, "{}", entry.path().display());
    }
    for dir in ["storage", "logs"] {
        assert_eq!(mode(&data.join(dir)) & 0o077, 0, "{dir}");
    }
}

#[test]
fn an_ecs_builder_holds_no_secret_and_its_build_reaches_none() {
    use cdeploy_tests::distributed::Distributed;
    let d = Distributed::start(false);
    let evil = fresh_slug("evil-ecs");
    let s3_key = "AKIAECSMARKER0001";
    let s3_secret = "s3-secret-ecs-marker-42";
    let server = d.server_with(
        &[],
        &[
            ("S3_ACCESS_KEY", s3_key),
            ("S3_SECRET_ACCESS_KEY", s3_secret),
            ("AWS_SECRET_ACCESS_KEY", SERVER_SECRET),
        ],
    );
    let daemon = GitDaemon::start();
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    write_files(&victim, &[("index.html", "<h1>victim</h1>")]);
    server
        .cli(
            &victim,
            &["deploy", "--prebuilt", ".", "--slug", "victim", "--json"],
        )
        .assert_code(0);
    let page_before = server.site("victim", "/").body;

    let mut bystander = innocent();
    let marker = format!("cdeploy-ecs-evil-{}", std::process::id());
    let redis = d.redis.url();
    let moto_port: u16 = d
        .moto
        .endpoint()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let url = malicious_repo(
        &server,
        &daemon,
        &[d.redis.port, moto_port],
        &sha256_hex(b"<h1>victim</h1>"),
        bystander.id(),
        &marker,
    );
    let log = deploy_hostile(&server, tmp.path(), &url, &evil);
    assert_eq!(server.site("victim", "/").body, page_before);
    assert!(server.site(&evil, "/").body.contains("evil but contained"));

    // What the builder was given (task definition + overrides) holds no secret of the
    // server, S3 or Redis, and neither does anything the build printed.
    let secrets = [
        s3_key,
        s3_secret,
        SERVER_SECRET,
        "test-secret",
        &server.token(),
        &redis,
    ];
    let reports = serde_json::to_string(&d.agent.reports()).unwrap();
    let task_def = serde_json::to_string(&cdeploy_tests::distributed::builder_env()).unwrap();
    for secret in secrets {
        for (what, text) in [
            ("overrides", &reports),
            ("task definition", &task_def),
            ("log", &log),
        ] {
            assert!(!text.contains(secret), "{secret} in the {what}: {text}");
        }
    }
    gone_by(&marker, std::time::Instant::now() + Duration::from_secs(3));
    assert_eq!(pgrep(&marker), "", "a process of the build outlived it");
    assert!(alive(bystander.id()));

    // Credentials in a git URL reach neither the overrides nor the log nor the API.
    let token = "ghp_EcsSecretToken456";
    let port = free_port();
    let private = format!("https://ci-bot:{token}@127.0.0.1:{port}/team/private.git");
    let out = server.cli(
        tmp.path(),
        &["deploy", "--git", &private, "--slug", "private", "--json"],
    );
    out.assert_code(1);
    let id = out.json()["id"].as_str().unwrap().to_string();
    let logs = server.cli(tmp.path(), &["logs", "private", "--deployment", &id]);
    let answers = [
        server.client().get(&format!("/v1/deployments/{id}")).text,
        server.client().get("/v1/projects/private").text,
    ];
    let reports = serde_json::to_string(&d.agent.reports()).unwrap();
    for text in [&out.stdout, &out.stderr, &logs.stdout, &reports]
        .into_iter()
        .chain(answers.iter())
    {
        assert!(!text.contains(token), "the token leaked: {text}");
    }
    assert!(
        logs.stdout.contains("https://***:***@127.0.0.1"),
        "{}",
        logs.stdout
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
    server
        .cli(tmp.path(), &["rm", &evil, "--yes"])
        .assert_code(0);
}

#[test]
fn wrong_bytes_never_land_under_a_blobs_hash() {
    let server = Server::start();
    let good = b"<h1>the real page</h1>".to_vec();
    let hash = sha256_hex(&good);
    let blob = server.data_dir().join("storage/blobs").join(&hash);
    // Wrong bytes under the hash: refused, nothing stored.
    let r = server
        .client()
        .put_bytes(&format!("/v1/files/{hash}"), b"<h1>defaced</h1>".to_vec());
    assert_eq!(
        (r.status, r.error_code()),
        (422, "hash_mismatch".to_string()),
        "{}",
        r.text
    );
    assert!(!blob.exists());
    // A hostile uploader racing honest ones for the same blob, many times over: only
    // the right bytes are ever there.
    let threads: Vec<_> = (0..24)
        .map(|i| {
            let api = server.client();
            let (hash, good) = (hash.clone(), good.clone());
            std::thread::spawn(move || {
                let body = if i % 2 == 0 {
                    good
                } else {
                    format!("evil {i}").into_bytes()
                };
                let r = api.put_bytes(&format!("/v1/files/{hash}"), body);
                (i % 2 == 0, r.status)
            })
        })
        .collect();
    for t in threads {
        let (honest, status) = t.join().unwrap();
        if honest {
            assert!(status == 200 || status == 201, "{status}");
        } else {
            assert_eq!(status, 422);
        }
    }
    assert_eq!(std::fs::read(&blob).unwrap(), good);
}

#[test]
fn the_builder_api_takes_only_the_builds_own_capability() {
    use cdeploy_tests::distributed::Distributed;
    let d = Distributed::start(false);
    let server = d.server();
    let daemon = GitDaemon::start();
    let work = tempfile::tempdir().unwrap();
    write_build_command(
        work.path(),
        "sleep 20; mkdir -p out; echo ok > out/index.html",
        "output = \"out\"\n",
    );
    git_commit_all(work.path());
    let url = daemon.publish(work.path(), "slow");
    let tmp = tempfile::tempdir().unwrap();
    let out = server.cli(
        tmp.path(),
        &[
            "deploy",
            "--git",
            &url,
            "--slug",
            "slow",
            "--no-wait",
            "--json",
        ],
    );
    out.assert_code(0);
    let id = out.json()["id"].as_str().unwrap().to_string();
    server.wait_status(&id, Duration::from_secs(60), |s| s == "building");

    let api = server.client().without_token();
    // No capability, or the admin token (which is not a build's capability): refused.
    for token in [None, Some(server.token())] {
        let client = match &token {
            Some(t) => server.client().with_token(t),
            None => server.client().without_token(),
        };
        for path in ["state", "source", "cache/0123abcd"] {
            let r = client.get(&format!("/v1/builds/{id}/{path}"));
            assert_eq!(r.status, 401, "{path} with {token:?}: {}", r.text);
        }
        // Neither a file nor the project's dependency cache can be planted.
        for path in [
            format!("files/{}", sha256_hex(b"x")),
            "cache/0123abcd".into(),
        ] {
            let r = client.put_bytes(&format!("/v1/builds/{id}/{path}"), b"x".to_vec());
            assert_eq!(r.status, 401, "{path}: {}", r.text);
        }
    }
    // Someone who read the task's overrides (ecs:DescribeTasks) and presents the claim
    // after the builder spent it: refused, and the build fails loudly.
    let claim = d
        .agent
        .reports()
        .iter()
        .filter_map(|r| r["overrides"].as_array().cloned())
        .flatten()
        .find(|kv| kv["name"] == "BUILD_CLAIM")
        .and_then(|kv| kv["value"].as_str().map(String::from))
        .expect("the claim in the overrides");
    // Deployment ids are public (preview URLs): a guessed claim is refused and stops
    // nothing.
    let r = api.post(
        &format!("/v1/builds/{id}/claim"),
        &serde_json::json!({ "claim": "cdp_a_guess" }),
    );
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(server.deployment(&id)["status"], "building");
    let r = api.post(
        &format!("/v1/builds/{id}/claim"),
        &serde_json::json!({ "claim": claim }),
    );
    assert_eq!(r.status, 401, "{}", r.text);
    let d2 = server.wait_status(&id, Duration::from_secs(30), |s| s == "failed");
    assert!(
        d2["error"].as_str().unwrap().contains("presented twice"),
        "{d2}"
    );
}

/// Someone allowed `ecs:DescribeTasks` reads a build's claim in its task's overrides and
/// presents it before the builder has started: from anywhere but the task's own address
/// it yields neither the build's spec (its stored secrets) nor a capability, it spends
/// nothing, and the real builder then claims, builds and activates as usual.
#[test]
fn a_claim_read_from_the_task_overrides_is_useless_outside_the_task() {
    use cdeploy_tests::distributed::{Distributed, CLUSTER};
    // Fargate takes its time to start a container: the thief does not.
    let d = Distributed::start_with_task_start(false, Duration::from_secs(5));
    let server = d.server();
    let work = tempfile::tempdir().unwrap();
    write_build_command(
        work.path(),
        "mkdir -p out; printf 'built %s' \"${#PROD_SECRET}\" > out/index.html",
        "output = \"out\"\n",
    );
    let deploy = |wait: bool| {
        let mut args = vec!["deploy", "--slug", "stolen", "--json"];
        if !wait {
            args.push("--no-wait");
        }
        let out = server.cli(work.path(), &args);
        out.assert_code(0);
        out.json()
    };
    assert_eq!(deploy(true)["status"], "ready");
    let secret = "prod-secret-never-to-a-thief-8812";
    server
        .cli_input(
            work.path(),
            &[
                "env",
                "add",
                "PROD_SECRET",
                "--project",
                "stolen",
                "--target",
                "production",
            ],
            secret,
        )
        .assert_code(0);
    let id = deploy(false)["id"].as_str().unwrap().to_string();
    // The thief's read: DescribeTasks on the running task of this deployment.
    let claim = d
        .moto
        .tasks(CLUSTER, "RUNNING")
        .iter()
        .map(|t| d.moto.describe_task(CLUSTER, t))
        .find_map(|t| {
            let env = t["overrides"]["containerOverrides"][0]["environment"]
                .as_array()?
                .clone();
            let of = |k: &str| {
                env.iter()
                    .find(|kv| kv["name"] == k)
                    .and_then(|kv| kv["value"].as_str().map(String::from))
            };
            (of("DEPLOYMENT_ID")? == id).then(|| of("BUILD_CLAIM"))?
        })
        .expect("the claim in the task's overrides");
    let started = serde_json::to_string(&d.agent.reports()).unwrap();
    assert!(
        !started.contains(&id),
        "the builder must not have started yet: {started}"
    );
    // From another address of this machine (the task's is the loopback), with and without
    // a forged X-Forwarded-For naming the task's address: no load balancer is trusted.
    let thief = reqwest::blocking::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    for forged in [None, Some("127.0.0.1"), Some("10.9.9.9, 127.0.0.1")] {
        let mut req = thief
            .post(format!("{}/v1/builds/{id}/claim", server.api()))
            .json(&serde_json::json!({ "claim": claim }));
        if let Some(xff) = forged {
            req = req.header("x-forwarded-for", xff);
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        assert_eq!(status, 403, "{forged:?}: {text}");
        assert!(
            text.contains("not an address of the build's task") && !text.contains(secret),
            "{text}"
        );
    }
    // Nothing was spent or stopped: the builder claims, builds with the secret and
    // activates its own output.
    let done = server.wait_status(&id, Duration::from_secs(120), |s| {
        s == "ready" || s == "failed"
    });
    assert_eq!(done["status"], "ready", "{done}");
    let page = server.site("stolen", "/");
    assert_eq!(page.body, format!("built {}", secret.len()));
}

/// Caches follow trust: a branch anyone may push to plants a file in node_modules and its
/// build reads what production's left; production's next build must not see the plant,
/// and the branch must not see production's build cache (where bundlers keep inlined
/// environment values). The package managers' store is per scope too.
#[test]
fn caches_never_cross_from_a_branch_to_production_or_back() {
    let server = Server::start();
    let daemon = GitDaemon::start();
    // The server's cache folder is shared by the suite's servers: a name of its own.
    let slug = fresh_slug("trust");
    let slug = slug.as_str();
    let tmp = fixture("malicious-app");
    let work = tmp.path().join("malicious-app");
    std::fs::remove_file(work.join("attack.js")).unwrap();
    // The fixture's lockfile (is-number 7.0.0); no install scripts, a reporting build.
    let package = serde_json::json!({
        "name": "malicious-app", "version": "1.0.0", "private": true,
        "scripts": { "build": "node report.js" },
        "dependencies": { "is-number": "7.0.0" }
    });
    std::fs::write(work.join("package.json"), package.to_string()).unwrap();
    // Each deploy of a ref must build (it is the caches that are watched), not take an
    // earlier deployment's output for the same inputs (docs/skipping.md).
    write_files(
        &work,
        &[("cdeploy.toml", "[build]\nskip_unchanged = false\n")],
    );
    let report = |extra: &str| {
        format!(
            r#"const fs = require('fs');
const planted = fs.existsSync('node_modules/.bin/planted');
const seen = fs.existsSync('node_modules/.cache/prod-env.txt');
{extra}
fs.mkdirSync('dist', {{ recursive: true }});
fs.writeFileSync('dist/index.html', `planted=${{planted}} seen=${{seen}}`);
"#
        )
    };
    // main: production's build leaves its environment in the bundler's cache.
    std::fs::write(
        work.join("report.js"),
        report("fs.mkdirSync('node_modules/.cache', { recursive: true }); fs.writeFileSync('node_modules/.cache/prod-env.txt', process.env.PROD_ONLY || '');"),
    )
    .unwrap();
    git_commit_all(&work);
    git(&work, &["branch", "-M", "main"]);
    let url = daemon.publish(&work, "trust");
    // evil: a branch whose build plants an executable for whoever restores the cache.
    git(&work, &["checkout", "-q", "-b", "evil"]);
    std::fs::write(
        work.join("report.js"),
        report("fs.mkdirSync('node_modules/.bin', { recursive: true }); fs.writeFileSync('node_modules/.bin/planted', 'echo pwned', { mode: 0o755 });"),
    )
    .unwrap();
    git_commit_all(&work);
    let bare = daemon.root.path().join("trust.git");
    git(&work, &["push", "-q", bare.to_str().unwrap(), "evil"]);

    let dir = tempfile::tempdir().unwrap();
    server
        .cli_input(
            dir.path(),
            &[
                "env",
                "add",
                "PROD_ONLY",
                "--project",
                slug,
                "--target",
                "production",
            ],
            "prod-value-123",
        )
        .assert_code(0);
    let deploy = |args: &[&str]| {
        let mut all = vec!["deploy", "--git", &url, "--slug", slug, "--json"];
        all.extend_from_slice(args);
        let out = server.cli(dir.path(), &all);
        out.assert_code(0);
        let id = out.json()["id"].as_str().unwrap().to_string();
        let log = server
            .cli(dir.path(), &["logs", slug, "--deployment", &id])
            .stdout;
        (id, log)
    };
    let page = |host: &str| server.site(host, "/").body;

    // Production, twice: the second restores production's own entry.
    let (_, log) = deploy(&["--ref", "main"]);
    assert!(log.contains("no production's entry"), "{log}");
    assert_eq!(page(slug), "planted=false seen=false");
    let (_, log) = deploy(&["--ref", "main"]);
    assert!(
        log.contains("Restored node_modules from the build cache, production's entry"),
        "{log}"
    );
    assert_eq!(page(slug), "planted=false seen=true", "its own cache, kept");

    // The branch: its build finds nothing of production's, and plants. What a build
    // changes beyond tools' cache folders is not kept, even for its own scope.
    let (id, log) = deploy(&["--ref", "evil", "--preview", "--branch", "evil"]);
    assert!(log.contains("no this branch's entry"), "{log}");
    assert!(
        log.contains("node_modules not kept: the build changed what the install made"),
        "{log}"
    );
    assert_eq!(page(&format!("{slug}--{id}")), "planted=false seen=false");
    let (id, log) = deploy(&["--ref", "evil", "--preview", "--branch", "evil"]);
    assert!(log.contains("no this branch's entry"), "{log}");
    assert_eq!(
        page(&format!("{slug}--{id}")),
        "planted=false seen=false",
        "neither production's entry nor its own planted one"
    );

    // Production again: the plant is not there.
    let (_, log) = deploy(&["--ref", "main"]);
    assert!(
        log.contains("Restored node_modules from the build cache, production's entry"),
        "{log}"
    );
    assert_eq!(page(slug), "planted=false seen=true");

    // The package managers' store: one per scope.
    let projects = shared_cache_dir().join("projects").join(slug);
    let scopes: Vec<String> = std::fs::read_dir(&projects)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(scopes.contains(&"production".to_string()), "{scopes:?}");
    assert!(
        scopes.iter().any(|s| s.starts_with("branch-")),
        "{scopes:?}"
    );
    server
        .cli(dir.path(), &["rm", slug, "--yes"])
        .assert_code(0);
    assert!(!projects.exists());
}
