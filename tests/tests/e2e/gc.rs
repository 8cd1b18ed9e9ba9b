//! Retention and garbage collection: exactly the unreferenced blobs go, rollback to any
//! kept deployment still works, and GC racing deploys never deletes a blob in use.

use std::process::Command;
use std::time::Duration;

use cdeploy_tests::*;

/// Uploads what storage lacks (as the CLI does) and deploys the files prebuilt.
fn deploy_files(server: &Server, slug: &str, files: &[(&str, Vec<u8>)]) -> String {
    let api = server.client();
    let hashes: Vec<String> = files.iter().map(|(_, b)| sha256_hex(b)).collect();
    let missing = api.post(
        "/v1/files/missing",
        &serde_json::json!({ "hashes": hashes }),
    );
    assert_eq!(missing.status, 200, "{}", missing.text);
    let missing: Vec<String> = serde_json::from_value(missing.json()["missing"].clone()).unwrap();
    for ((_, body), hash) in files.iter().zip(&hashes) {
        if missing.contains(hash) {
            let r = api.put_bytes(&format!("/v1/files/{hash}"), body.clone());
            assert!(r.status == 201 || r.status == 200, "{}", r.text);
        }
    }
    let map: serde_json::Map<String, serde_json::Value> = files
        .iter()
        .zip(&hashes)
        .map(|((path, _), h)| (path.to_string(), serde_json::Value::from(h.clone())))
        .collect();
    let created = api.post(
        &format!("/v1/projects/{slug}/deployments"),
        &serde_json::json!({ "files": map }),
    );
    assert_eq!(created.status, 202, "{}", created.text);
    let id = created.json()["id"].as_str().unwrap().to_string();
    let d = server.wait_status(&id, Duration::from_secs(30), |s| {
        s == "ready" || s == "failed"
    });
    assert_eq!(d["status"], "ready", "{d}");
    id
}

fn gc(server: &Server, extra: &[&str]) -> serde_json::Value {
    let out = run_gc(server.admin_command(), extra);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `cdeploy-server … <extra>` (policy flags, then `gc`), asserting it succeeds.
fn run_gc(mut cmd: Command, extra: &[&str]) -> std::process::Output {
    let out = cmd.args(extra).output().unwrap();
    assert!(
        out.status.success(),
        "gc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn blob_exists(server: &Server, data: &[u8]) -> bool {
    server
        .data_dir()
        .join("storage/blobs")
        .join(sha256_hex(data))
        .exists()
}

#[test]
fn gc_deletes_exactly_the_unreferenced_blobs_and_rollback_still_works() {
    let server = Server::start_with(&["--gc-interval-mins", "0"], &[]);
    let shared = b"body{color:teal}".to_vec();
    let pages: Vec<Vec<u8>> = (1..=4)
        .map(|v| format!("<h1>v{v}</h1>").into_bytes())
        .collect();
    let mut ids = Vec::new();
    for page in &pages {
        ids.push(deploy_files(
            &server,
            "kept",
            &[("/index.html", page.clone()), ("/site.css", shared.clone())],
        ));
    }
    // Uploaded, never deployed.
    let stray = b"nobody uses me".to_vec();
    assert_eq!(
        server
            .client()
            .put_bytes(&format!("/v1/files/{}", sha256_hex(&stray)), stray.clone())
            .status,
        201
    );
    let policy = [
        "--keep-deployments",
        "2",
        "--keep-days",
        "0",
        "--gc-grace-secs",
        "0",
    ];

    let dry = gc(&server, &[&policy[..], &["gc", "--dry-run"]].concat());
    assert_eq!(
        dry["deployments_deleted"].as_array().unwrap().len(),
        2,
        "{dry}"
    );
    assert_eq!(dry["blobs_deleted"], 3, "{dry}");
    assert!(blob_exists(&server, &pages[0]), "a dry run deletes nothing");

    let report = gc(&server, &[&policy[..], &["gc"]].concat());
    let mut deleted: Vec<String> =
        serde_json::from_value(report["deployments_deleted"].clone()).unwrap();
    deleted.sort();
    let mut expected = vec![ids[0].clone(), ids[1].clone()];
    expected.sort();
    assert_eq!(deleted, expected, "{report}");
    assert_eq!(report["blobs_deleted"], 3, "{report}");
    assert!(!blob_exists(&server, &pages[0]));
    assert!(!blob_exists(&server, &pages[1]));
    assert!(!blob_exists(&server, &stray));
    assert!(blob_exists(&server, &pages[2]));
    assert!(blob_exists(&server, &pages[3]));
    assert!(blob_exists(&server, &shared));
    assert_eq!(
        server
            .client()
            .get(&format!("/v1/deployments/{}", ids[0]))
            .status,
        404
    );

    // Rollback reaches the newest kept older deployment, whole.
    let dir = tempfile::tempdir().unwrap();
    server.cli(dir.path(), &["rollback", "kept"]).assert_code(0);
    assert!(server.site("kept", "/").body.contains("<h1>v3</h1>"));
    assert_eq!(server.site("kept", "/site.css").body, "body{color:teal}");
    // A second run finds nothing more to do.
    let again = gc(&server, &[&policy[..], &["gc"]].concat());
    assert_eq!(again["blobs_deleted"], 0, "{again}");
}

/// GC runs back to back while deploys reuse blobs GC would otherwise collect: every
/// deployment serves every file afterwards.
#[test]
fn gc_racing_deploys_never_deletes_a_blob_in_use() {
    let server = Server::start_with(&["--gc-interval-mins", "0"], &[]);
    let policy = [
        "--keep-deployments",
        "1",
        "--keep-days",
        "0",
        "--gc-grace-secs",
        "1",
    ];
    // Blobs that become unreferenced: deployed once, then that deployment deleted.
    let rounds = 6;
    let payloads: Vec<Vec<u8>> = (0..rounds)
        .map(|i| format!("reused payload {i} ").repeat(50).into_bytes())
        .collect();
    for (i, p) in payloads.iter().enumerate() {
        let slug = format!("old{i}");
        deploy_files(&server, &slug, &[("/p.txt", p.clone())]);
        server
            .cli(tempfile::tempdir().unwrap().path(), &["rm", &slug, "--yes"])
            .assert_code(0);
    }

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let (data_dir, args, env) = (
        server.data_dir(),
        server.extra_args.clone(),
        server.extra_env.clone(),
    );
    let collector = std::thread::spawn(move || {
        let mut runs = 0;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            let cmd = admin_command(&data_dir, &args, &env);
            run_gc(cmd, &[&policy[..], &["gc"]].concat());
            runs += 1;
        }
        runs
    });
    let mut deployed = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let slug = format!("new{i}");
        deploy_files(&server, &slug, &[("/p.txt", p.clone())]);
        deployed.push((slug, p.clone()));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let runs = collector.join().unwrap();
    assert!(runs >= 1);
    // One more run after the dust settles, then everything deployed is whole.
    gc(&server, &[&policy[..], &["gc"]].concat());
    for (slug, p) in deployed {
        let page = server.site(&slug, "/p.txt");
        assert_eq!(page.status, 200, "{slug}");
        assert_eq!(page.body.as_bytes(), &p[..], "{slug}");
    }
}

/// The same collection on S3 (listing and deleting through the S3 API).
#[test]
fn gc_collects_on_s3() {
    use cdeploy_tests::distributed::Distributed;
    let d = Distributed::start(false);
    let server = d.server_with(&["--gc-interval-mins", "0"], &[]);
    let old = b"<h1>old</h1>".to_vec();
    let new = b"<h1>new</h1>".to_vec();
    deploy_files(&server, "s3gc", &[("/index.html", old.clone())]);
    deploy_files(&server, "s3gc", &[("/index.html", new.clone())]);
    let stray = b"stray on s3".to_vec();
    assert_eq!(
        server
            .client()
            .put_bytes(&format!("/v1/files/{}", sha256_hex(&stray)), stray.clone())
            .status,
        201
    );
    let report = gc(
        &server,
        &[
            "--keep-deployments",
            "1",
            "--keep-days",
            "0",
            "--gc-grace-secs",
            "0",
            "gc",
        ],
    );
    assert_eq!(report["blobs_deleted"], 2, "{report}");
    let blobs = d.keys("blobs/");
    assert!(
        !blobs.contains(&format!("blobs/{}", sha256_hex(&old))),
        "{blobs:?}"
    );
    assert!(
        !blobs.contains(&format!("blobs/{}", sha256_hex(&stray))),
        "{blobs:?}"
    );
    assert!(
        blobs.contains(&format!("blobs/{}", sha256_hex(&new))),
        "{blobs:?}"
    );
    assert_eq!(server.site("s3gc", "/").body, "<h1>new</h1>");
}

#[test]
fn gc_keeps_the_preview_a_branch_alias_serves() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("aliased");
    let page = |text: &str| write_files(&dir, &[("index.html", &format!("<h1>{text}</h1>"))]);
    page("the feature preview");
    let out = server.cli(&dir, &["deploy", "--preview", "--branch", "feat", "--json"]);
    out.assert_code(0);
    let preview = out.json()["id"].as_str().unwrap().to_string();
    for v in 1..=3 {
        page(&format!("production v{v}"));
        server.cli(&dir, &["deploy"]).assert_code(0);
    }
    let policy = [
        "--keep-deployments",
        "1",
        "--keep-days",
        "0",
        "--gc-grace-secs",
        "0",
    ];
    let report = gc(&server, &[&policy[..], &["gc"]].concat());
    let deleted: Vec<String> =
        serde_json::from_value(report["deployments_deleted"].clone()).unwrap();
    assert_eq!(deleted.len(), 2, "the two older productions: {report}");
    assert!(!deleted.contains(&preview), "{report}");
    assert!(server
        .site("feat--aliased", "/")
        .body
        .contains("the feature preview"));
    assert!(server.site("aliased", "/").body.contains("production v3"));
}
