//! Big sites: a deployment of many files goes up in a few batch requests, with the
//! default settings, under the default per-token rate limit; a broken batch archive is
//! refused whole, with a reason, and leaves nothing in storage; the CLI waits out a
//! `429`.

use std::path::Path;
use std::time::Duration;

use cdeploy_tests::*;

/// `n` distinct pages of about 1 KiB each under `dir`, 100 to a folder.
fn write_site(dir: &Path, n: usize) {
    for i in 0..n {
        let folder = dir.join(format!("p{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&folder).unwrap();
        }
        let body = format!(
            "<!doctype html><title>Page {i}</title><h1>Page {i}</h1><p>{}</p>\n",
            format!("Lorem ipsum dolor sit amet, page {i}. ").repeat(25)
        );
        std::fs::write(folder.join(format!("{i}.html")), body).unwrap();
    }
    std::fs::write(dir.join("index.html"), "<!doctype html><h1>Home</h1>\n").unwrap();
}

/// The deployment holds every file of `dir` (counted in its manifest), and a sample of
/// them is served with the right bytes.
fn assert_serves_all(server: &Server, slug: &str, id: &str, dir: &Path, count: usize) {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            server
                .data_dir()
                .join(format!("storage/deployments/{id}/manifest.json")),
        )
        .unwrap(),
    )
    .unwrap();
    let files = manifest["files"].as_object().unwrap();
    assert_eq!(files.len(), count, "the manifest lists every file");
    for i in (0..count - 1).step_by(397) {
        let path = format!("/p{:03}/{i}.html", i / 100);
        let page = server.site(slug, &path);
        assert_eq!(page.status, 200, "{path}");
        let local = std::fs::read(dir.join(&path[1..])).unwrap();
        assert_eq!(
            sha256_hex(page.body.as_bytes()),
            sha256_hex(&local),
            "{path} is served with its bytes"
        );
        assert_eq!(files[&path]["hash"], sha256_hex(&local));
    }
}

fn deployed_id(out: &CliOutput) -> String {
    out.assert_code(0);
    let doc = out.json();
    assert_eq!(doc["status"], "ready", "{doc}");
    assert!(
        doc.get("rate_limited").is_none(),
        "no 429 with the default settings: {doc}"
    );
    doc["id"].as_str().unwrap().to_string()
}

#[test]
fn ten_thousand_files_deploy_prebuilt_and_from_source_with_the_default_settings() {
    let server = Server::start();
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("out");
    write_site(&out_dir, 10_000);
    let count = 10_001;

    let out = server.cli(
        work.path(),
        &["deploy", "--prebuilt", "out", "--slug", "bigsite", "--json"],
    );
    let id = deployed_id(&out);
    assert_serves_all(&server, "bigsite", &id, &out_dir, count);
    // A few batch requests, not one request per file.
    let metrics = server.client().get("/metrics").text;
    let uploads = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cdeploy_blobs_uploaded_total "))
        .unwrap();
    assert_eq!(uploads, count.to_string(), "{metrics}");

    // One file changed: only it goes up.
    let blobs = server.blob_count();
    std::fs::write(out_dir.join("p042/4242.html"), "<h1>changed</h1>\n").unwrap();
    let out = server.cli(
        work.path(),
        &["deploy", "--prebuilt", "out", "--slug", "bigsite", "--json"],
    );
    let id = deployed_id(&out);
    assert_eq!(server.blob_count(), blobs + 1);
    assert_eq!(
        server.site("bigsite", "/p042/4242.html").body,
        "<h1>changed</h1>\n"
    );
    assert_serves_all(&server, "bigsite", &id, &out_dir, count);

    // A repository of 10,000 files, uploaded as source and built by the server.
    let repo = tempfile::tempdir().unwrap();
    write_site(&repo.path().join("pages"), 10_000);
    write_build_command(
        repo.path(),
        "mkdir -p out && cp -r pages/. out/",
        "output = \"out\"\n",
    );
    let out = server.cli(repo.path(), &["deploy", "--slug", "bigsource", "--json"]);
    let id = deployed_id(&out);
    assert_serves_all(&server, "bigsource", &id, &repo.path().join("pages"), count);
}

#[test]
fn a_deployment_over_the_file_count_limit_is_refused_naming_it() {
    let server = Server::start();
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("out");
    for folder in 0..=100 {
        let d = out_dir.join(format!("d{folder}"));
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..1000 {
            if folder == 100 && i > 0 {
                break;
            }
            std::fs::write(d.join(format!("{i}.txt")), format!("{folder}/{i}")).unwrap();
        }
    }
    let out = server.cli(
        work.path(),
        &["deploy", "--prebuilt", "out", "--slug", "toomany", "--json"],
    );
    out.assert_code(3);
    let err = &out.json()["error"];
    assert_eq!(err["code"], "payload_too_large", "{err}");
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("100001") && message.contains("100000") && message.contains("max_files"),
        "{message}"
    );
    assert_eq!(server.blob_count(), 0, "nothing was uploaded");
}

#[test]
fn a_token_flooding_plain_requests_still_gets_429_with_the_default_settings() {
    let server = Server::start();
    let api = server.client();
    // More than the default burst (2,000) from four clients at once.
    let limited: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let api = server.client();
                    (0..800)
                        .filter(|_| {
                            let r = api.get("/v1/projects");
                            if r.status == 429 {
                                assert_eq!(r.error_code(), "rate_limited");
                                assert!(r.headers.contains_key("retry-after"));
                            }
                            r.status == 429
                        })
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert!(limited > 0, "3,200 requests at once got no 429");
    // The bucket refills: the same token is served again, without a restart.
    wait_until(
        "the token's bucket to refill",
        Duration::from_secs(10),
        || api.get("/v1/projects").status == 200,
    );
}

#[test]
fn the_cli_waits_out_a_429_and_says_so() {
    let server = Server::start_with(&["--token-rate", "1", "--token-burst", "2"], &[]);
    let site = tempfile::tempdir().unwrap();
    write_files(
        site.path(),
        &[("out/index.html", "<h1>patient</h1>"), ("out/a.css", "a{}")],
    );
    // missing, batch, create, follow and the final read: five requests on a burst of two.
    let out = server.cli(
        site.path(),
        &["deploy", "--prebuilt", "out", "--slug", "patient", "--json"],
    );
    out.assert_code(0);
    let doc = out.json();
    assert_eq!(doc["status"], "ready", "{doc}");
    let waited = &doc["rate_limited"];
    assert!(waited["retries"].as_u64().unwrap() >= 1, "{doc}");
    assert!(waited["waited_s"].as_f64().unwrap() > 0.0, "{doc}");
    assert!(
        out.stderr.contains("too many requests with this token") && out.stderr.contains("waiting"),
        "{}",
        out.stderr
    );
    assert_eq!(server.site("patient", "/").body, "<h1>patient</h1>");

    // A limit that would outlast --max-wait fails at once, naming the setting to raise.
    let out = server.cli_env(
        site.path(),
        &["deploy", "--prebuilt", "out", "--slug", "patient", "--json"],
        &[
            ("CDEPLOY_TOKEN", &server.token()),
            ("CDEPLOY_MAX_WAIT", "0"),
        ],
    );
    let out = if out.code == 0 {
        // The burst had refilled: spend it, then try again.
        let api = server.client();
        for _ in 0..3 {
            api.get("/v1/projects");
        }
        server.cli_env(
            site.path(),
            &[
                "deploy",
                "--prebuilt",
                "out",
                "--slug",
                "patient",
                "--json",
                "--max-wait",
                "0",
            ],
            &[("CDEPLOY_TOKEN", &server.token())],
        )
    } else {
        out
    };
    out.assert_code(3);
    let err = &out.json()["error"];
    assert_eq!(err["code"], "rate_limited", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("token_rate"),
        "{err}"
    );
    assert!(
        err["hint"].as_str().unwrap().contains("--max-wait"),
        "{err}"
    );
}

/// A tar archive of `(name, bytes)` members, names written as given (a hostile client's
/// `../x` included).
fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn post_batch(server: &Server, body: Vec<u8>) -> ApiResponse {
    let api = server.client();
    let r = api
        .http
        .post(format!("{}/v1/files/batch", server.api()))
        .bearer_auth(server.token())
        .header("content-type", "application/x-tar")
        .body(body)
        .send()
        .unwrap();
    ApiResponse {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        text: r.text().unwrap(),
    }
}

#[test]
fn bad_batch_archives_are_refused_whole_and_store_nothing() {
    let server = Server::start_with(&["--max-file-mb", "1", "--max-deployment-mb", "2"], &[]);
    let one = b"first member".to_vec();
    let two = vec![b'x'; 700 * 1024];
    let (h1, h2) = (sha256_hex(&one), sha256_hex(&two));
    let good = archive(&[(&h1, &one), (&h2, &two)]);
    let big = vec![b'y'; 1536 * 1024];
    let h_big = sha256_hex(&big);
    let parts: Vec<Vec<u8>> = (0..3).map(|i| vec![b'0' + i; 900 * 1024]).collect();
    let part_hashes: Vec<String> = parts.iter().map(|p| sha256_hex(p)).collect();

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "cut inside a member",
            good[..good.len() - 2048].to_vec(),
            400,
            "truncated",
        ),
        (
            "cut before the end marker",
            good[..good.len() - 1024].to_vec(),
            400,
            "truncated",
        ),
        (
            "bytes that do not match their name",
            archive(&[(&h1, &one), (&h2, &two[1..])]),
            422,
            "hash",
        ),
        (
            "a path outside the root",
            archive(&[(&h1, &one), (&format!("../{h2}"), &two)]),
            400,
            "SHA-256",
        ),
        (
            "an absolute path",
            archive(&[(&format!("/srv/{h1}"), &one)]),
            400,
            "SHA-256",
        ),
        (
            "a member over the per-file limit",
            archive(&[(&h1, &one), (&h_big, &big)]),
            413,
            "max_file_mb",
        ),
        (
            "members over the per-deployment limit",
            archive(&[
                (&h1, &one),
                (&part_hashes[0], &parts[0]),
                (&part_hashes[1], &parts[1]),
                (&part_hashes[2], &parts[2]),
            ]),
            413,
            "max_deployment_mb",
        ),
        (
            "not an archive",
            b"{\"hello\": 1}".repeat(100),
            400,
            "checksum",
        ),
    ];
    for (what, body, status, needle) in cases {
        let r = post_batch(&server, body);
        assert_eq!(r.status, status, "{what}: {}", r.text);
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(needle), "{what}: {message}");
        assert_eq!(server.blob_count(), 0, "{what}: nothing stored");
    }
    let leftovers: Vec<_> = std::fs::read_dir(server.data_dir().join("tmp"))
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "spool files left: {leftovers:?}");
    let tmp = server.data_dir().join("storage/tmp");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "storage temp files left"
    );

    // A compressed body is named as such, not taken for a damaged archive.
    let r = server
        .client()
        .http
        .post(format!("{}/v1/files/batch", server.api()))
        .bearer_auth(server.token())
        .header("content-encoding", "gzip")
        .body(good.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 415);
    assert!(r.text().unwrap().contains("uncompressed"));

    // The sound archive is stored whole, and again is a no-op.
    let r = post_batch(&server, good.clone());
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["stored"], 2);
    assert_eq!(server.blob_count(), 2);
    let r = post_batch(&server, good);
    assert_eq!(
        (r.json()["received"].as_u64(), r.json()["stored"].as_u64()),
        (Some(2), Some(0))
    );

    // A read token may not upload.
    let read = server.create_token(&["--name", "r", "--role", "read", "--project", "x"]);
    let r = server
        .client()
        .http
        .post(format!("{}/v1/files/batch", server.api()))
        .bearer_auth(read)
        .body(archive(&[(&h1, &one)]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// A file between 64 KiB and 1 MiB is sent from its blob file (`sendfile`) once a serving
/// thread keeps it: repeated GETs, ranges across the 64 KiB mark, and a reader slow
/// enough to fill the socket (the send stops part-way and resumes) all get exactly the
/// bytes deployed.
#[test]
fn large_files_sent_from_their_file_arrive_byte_for_byte() {
    use std::io::{Read, Write};
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // Bytes that differ at every offset, so a wrong offset cannot pass.
    let bundle: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761) >> 7).to_le_bytes())
        .take(300_000)
        .collect();
    std::fs::write(dir.path().join("index.html"), "page").unwrap();
    std::fs::write(dir.path().join("bundle.bin"), &bundle).unwrap();
    server
        .cli(dir.path(), &["deploy", "--prebuilt", ".", "--slug", "big"])
        .assert_code(0);
    let client = reqwest::blocking::Client::builder()
        .resolve("big.localhost", ([127, 0, 0, 1], server.proxy_port).into())
        .build()
        .unwrap();
    let url = server.site_url("big", "/bundle.bin");
    for round in 0..20 {
        let body = client.get(&url).send().unwrap().bytes().unwrap();
        assert!(body[..] == bundle[..], "GET {round}");
        let (a, b) = (1_000 + round * 997, 70_000 + round * 9_001);
        let part = client
            .get(&url)
            .header("range", format!("bytes={a}-{b}"))
            .send()
            .unwrap();
        assert_eq!(part.status(), 206);
        assert!(part.bytes().unwrap()[..] == bundle[a..=b], "range {a}-{b}");
    }
    // A slow reader: the socket fills, the send stops part-way and resumes.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", server.proxy_port)).unwrap();
    for _ in 0..2 {
        write!(
            conn,
            "GET /bundle.bin HTTP/1.1\r\nHost: big.localhost:{}\r\n\r\n",
            server.proxy_port
        )
        .unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            std::thread::sleep(Duration::from_millis(2));
            let n = conn.read(&mut chunk).unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&chunk[..n]);
            let head = got.windows(4).position(|w| w == b"\r\n\r\n");
            if let Some(body) = head
                .map(|h| h + 4)
                .filter(|b| got.len() - b >= bundle.len())
            {
                assert!(got[body..] == bundle[..], "the slow read");
                break;
            }
        }
    }
}
