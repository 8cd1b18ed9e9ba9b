//! A server killed mid-build: the deployment ends `failed` (never stuck), production is
//! still served, and the build's processes do not outlive it.

use std::time::Duration;

use cdeploy_tests::*;

#[test]
fn kill_mid_build_marks_failed_and_keeps_production() {
    let mut server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    write_files(&good, &[("index.html", "<h1>production</h1>")]);
    server
        .cli(&good, &["deploy", "--slug", "crashy", "--json"])
        .assert_code(0);

    let slow = tmp.path().join("slow");
    let marker = tmp.path().join("still-running");
    let cmd = format!("echo started; sleep 30; touch {}", marker.display());
    write_files(
        &slow,
        &[
            ("cdeploy.toml", &format!("[build]\ncommand = \"{cmd}\"\n")),
            ("index.html", "new"),
        ],
    );
    let id = server.deploy_no_wait(&slow, "crashy");
    wait_until("the build to start", Duration::from_secs(30), || {
        server
            .cli(&slow, &["logs", "crashy", "--no-follow"])
            .stdout
            .contains("started")
    });

    server.kill9();
    server.start_again();
    let d = server.wait_status(&id, Duration::from_secs(10), |s| {
        s != "building" && s != "queued"
    });
    assert_eq!(d["status"], "failed", "{d}");
    assert!(
        d["error"].as_str().unwrap().contains("server stopped"),
        "{d}"
    );
    assert_eq!(server.site("crashy", "/").body, "<h1>production</h1>");

    // The log ends with the terminal event, and the build's `sleep` was killed.
    let logs = server.cli(&slow, &["logs", "crashy", "--deployment", &id]);
    assert!(logs.stdout.contains("started"), "{}", logs.stdout);
    assert!(
        logs.stdout
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .contains("failed"),
        "{}",
        logs.stdout
    );
    // The restarted server killed it before it answered; a killed process may take a
    // moment to be gone from the process table.
    let running = || {
        let out = std::process::Command::new("pgrep")
            .args(["-f", &marker.display().to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !running().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        running().is_empty(),
        "the orphaned build is still running: {}",
        running()
    );

    // A graceful stop during a build also ends it `failed`, with a reason — and a client
    // following the log neither holds the shutdown open nor misses the end.
    let id = server.deploy_no_wait(&slow, "crashy");
    server.wait_status(&id, Duration::from_secs(20), |s| s == "building");
    let follower = server.cli_spawn(&slow, &["logs", "crashy", "--deployment", &id]);
    wait_until(
        "the follower to print the log",
        Duration::from_secs(20),
        || {
            server
                .cli(&slow, &["logs", "crashy", "--no-follow"])
                .stdout
                .contains("started")
        },
    );
    let stopping = std::time::Instant::now();
    server.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "graceful stop took {:?}",
        stopping.elapsed()
    );
    server.start_again();
    let d = server.deployment(&id);
    assert_eq!(d["status"], "failed", "{d}");
    assert!(d["error"].as_str().unwrap().contains("shut down"), "{d}");
    assert_eq!(server.site("crashy", "/").body, "<h1>production</h1>");
    let out = CliOutput::from(follower.wait_with_output().unwrap());
    out.assert_code(1);
    assert!(out.stdout.contains("started"), "{}", out.stdout);
    assert!(out.stdout.contains("shut down"), "{}", out.stdout);
}
