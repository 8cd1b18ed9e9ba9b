//! Hostile load: connection floods, large files, unknown hosts. Figures are asserted
//! against the real binaries (bench/load.sh prints the same figures).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cdeploy_tests::origin::Origin;
use cdeploy_tests::*;

const MB: u64 = 1024 * 1024;

fn connect(port: u16) -> TcpStream {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )
    .expect("connect")
}

/// Whether the server closed the connection (EOF or reset); data it sent is skipped.
fn closed(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

fn timed_get(url: &str, host: Option<&str>, token: Option<&str>) -> (u16, Duration) {
    // A fresh client: a new connection, as a new visitor makes.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut req = client.get(url);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let start = Instant::now();
    let status = req.send().map(|r| r.status().as_u16()).unwrap_or(0);
    (status, start.elapsed())
}

/// The header timeout the flood test gives the server: every hostile connection must be
/// closed within it plus [`FLOOD_GRACE`] of its connect.
const FLOOD_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const FLOOD_GRACE: Duration = Duration::from_secs(15);

/// 1,000 silent and 200 slow ("slowloris") connections on the API, the proxy and the
/// proxy's TLS port, against a server whose soft open-file limit is 1,024 (more than
/// its connection cap): real visitors over all three are answered within 2 s, and the
/// server closes every hostile connection within the header timeout plus 15 s of its
/// connect (those that waited in the kernel's accept queue too), without flooding its
/// log.
#[test]
fn a_connection_flood_is_closed_within_the_header_timeout_and_visitors_are_served() {
    raise_nofile();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) =
        cdeploy_tests::services::make_test_certs(certs.path(), "leaf", "DNS:localhost");
    let tls = free_port();
    let timeout = FLOOD_HEADER_TIMEOUT.as_secs().to_string();
    let server = Server::start_with_nofile(
        &[
            "--header-timeout",
            &timeout,
            "--tls-listen",
            &format!("127.0.0.1:{tls}"),
            "--acme-directory",
            "none",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        1024,
    );
    let site = tempfile::tempdir().unwrap();
    write_files(site.path(), &[("index.html", "<h1>alive</h1>")]);
    server
        .cli(site.path(), &["deploy", "--slug", "alive", "--json"])
        .assert_code(0);
    let ports = [server.api_port, server.proxy_port, tls];

    // Each hostile connection with the time it connected.
    let flood_start = Instant::now();
    let mut hostile: Vec<(TcpStream, Instant)> = (0..1000)
        .map(|i| (connect(ports[i % 3]), Instant::now()))
        .collect();
    let slow: Vec<(TcpStream, Instant)> = (0..200)
        .map(|i| {
            let mut s = connect(ports[i % 2]);
            s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            (s, Instant::now())
        })
        .collect();
    eprintln!(
        "flood: 1,200 connections made in {:?}",
        flood_start.elapsed()
    );
    // The slow ones send a header byte every 2 s and never finish.
    let trickle: Vec<TcpStream> = slow.iter().map(|(s, _)| s.try_clone().unwrap()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let trickler = std::thread::spawn(move || {
        let mut trickle = trickle;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            for s in &mut trickle {
                let _ = s.write_all(b"x");
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    });
    hostile.extend(slow);
    std::thread::sleep(Duration::from_millis(500));

    // Real requests, each on a new connection, to the API, the proxy and over HTTPS.
    let token = server.token();
    let host = format!("alive.localhost:{}", server.proxy_port);
    let visit_tls = || {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            // The flood is the point here, not the certificate.
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let start = Instant::now();
        let status = client
            .get(format!("https://localhost:{tls}/"))
            .header("host", &host)
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        (status, start.elapsed())
    };
    for _ in 0..5 {
        let (status, took) =
            timed_get(&format!("{}/v1/projects", server.api()), None, Some(&token));
        assert_eq!(status, 200, "the API answers during the flood");
        assert!(took < Duration::from_secs(2), "API took {took:?}");
        let (status, took) = timed_get(
            &format!("http://127.0.0.1:{}/", server.proxy_port),
            Some(&host),
            None,
        );
        assert_eq!(status, 200, "the proxy answers during the flood");
        assert!(took < Duration::from_secs(2), "proxy took {took:?}");
        let (status, took) = visit_tls();
        assert_eq!(status, 200, "the proxy answers HTTPS during the flood");
        assert!(took < Duration::from_secs(2), "HTTPS took {took:?}");
    }

    // Every one is closed within the header timeout plus the grace of its connect.
    let total = hostile.len();
    let last_connect = hostile.iter().map(|(_, at)| *at).max().unwrap();
    let limit = FLOOD_HEADER_TIMEOUT + FLOOD_GRACE;
    let mut open = hostile;
    let late = loop {
        open.retain_mut(|(s, _)| !closed(s));
        let late = open.iter().filter(|(_, at)| at.elapsed() > limit).count();
        if open.is_empty() || late > 0 || last_connect.elapsed() > limit {
            break late;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "flood: {} of {total} hostile connections still open {:?} after the flood began",
        open.len(),
        flood_start.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = trickler.join();
    assert!(
        open.is_empty() && late == 0,
        "{} hostile connections were still open past the header timeout plus {FLOOD_GRACE:?}",
        open.len()
    );
    // Still serving, and the log did not flood.
    let (status, _) = timed_get(
        &format!("http://127.0.0.1:{}/", server.proxy_port),
        Some(&host),
        None,
    );
    assert_eq!(status, 200);
    // The shedding shows in the metrics.
    let metrics = server.client().get("/metrics").text;
    let shed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cdeploy_connections_shed_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(shed > 0, "{metrics}");
    let log = server.log();
    let pressure = log.matches("connection pressure").count();
    assert!(pressure <= 10, "{pressure} pressure warnings:\n{log}");
    assert!(
        log.lines().count() < 400,
        "the log flooded: {} lines",
        log.lines().count()
    );
}

/// A 100 MB file: uploading it, 20 one-byte ranges, 20 HEADs and 5 full GETs add under
/// 150 MB to the server's peak memory; ranges get exactly their byte, GETs the whole file.
#[test]
fn a_large_file_streams_in_bounded_memory() {
    let server = Server::start();
    let api = server.client();
    // Not compressible by type, and no two MiB alike.
    let size = 100_000_000usize;
    let mut big = vec![0u8; size];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    let hash = sha256_hex(&big);
    let index = b"<a href=/big.bin>big</a>".to_vec();
    let index_hash = sha256_hex(&index);
    // And a large compressible file: its variants are made file to file, streamed.
    let text: Vec<u8> = (0..400_000u32)
        .flat_map(|i| format!("line {i}: {}\n", i.wrapping_mul(2_654_435_761)).into_bytes())
        .collect();
    let text_hash = sha256_hex(&text);
    let (rss_before, _) = server.rss();

    assert_eq!(
        api.put_bytes(&format!("/v1/files/{hash}"), big.clone())
            .status,
        201
    );
    assert_eq!(
        api.put_bytes(&format!("/v1/files/{index_hash}"), index)
            .status,
        201
    );
    assert_eq!(
        api.put_bytes(&format!("/v1/files/{text_hash}"), text.clone())
            .status,
        201
    );
    let created = api.post(
        "/v1/projects/big/deployments",
        &serde_json::json!({"files": {
            "/big.bin": hash, "/index.html": index_hash, "/big.txt": text_hash,
        }}),
    );
    assert_eq!(created.status, 202, "{}", created.text);
    let id = created.json()["id"].as_str().unwrap().to_string();
    server.wait_status(&id, Duration::from_secs(60), |s| s == "ready");

    let url = format!("http://127.0.0.1:{}/big.bin", server.proxy_port);
    let host = format!("big.localhost:{}", server.proxy_port);
    // It has a brotli variant (decoding is checked in core's tests).
    let br = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{}/big.txt", server.proxy_port))
        .header("host", &host)
        .header("accept-encoding", "br")
        .send()
        .unwrap();
    assert_eq!(br.status(), 200);
    assert_eq!(br.headers()["content-encoding"], "br");
    let compressed = br.bytes().unwrap().len();
    assert!(
        compressed * 2 < text.len(),
        "{compressed} of {}",
        text.len()
    );
    let mut threads = Vec::new();
    for i in 0..20u64 {
        let at = i * 4_999_999;
        let (u, h) = (url.clone(), host.clone());
        threads.push(std::thread::spawn(move || {
            let (url, host) = (u, h);
            let r = reqwest::blocking::Client::new()
                .get(&url)
                .header("host", &host)
                .header("range", format!("bytes={at}-{at}"))
                .send()
                .unwrap();
            assert_eq!(r.status(), 206);
            (at, r.bytes().unwrap().to_vec(), None)
        }));
        let (u, h) = (url.clone(), host.clone());
        threads.push(std::thread::spawn(move || {
            let (url, host) = (u, h);
            let r = reqwest::blocking::Client::new()
                .head(&url)
                .header("host", &host)
                .send()
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-length"], "100000000");
            (u64::MAX, Vec::new(), None)
        }));
    }
    for _ in 0..5 {
        let (u, h) = (url.clone(), host.clone());
        threads.push(std::thread::spawn(move || {
            let (url, host) = (u, h);
            let mut r = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap()
                .get(&url)
                .header("host", &host)
                .send()
                .unwrap();
            assert_eq!(r.status(), 200);
            let mut sum = Command::new("sha256sum")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let n = std::io::copy(&mut r, sum.stdin.as_mut().unwrap()).unwrap();
            drop(sum.stdin.take());
            let out = sum.wait_with_output().unwrap();
            let got = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
            (n, Vec::new(), Some(got))
        }));
    }
    for t in threads {
        let (at, body, full_hash) = t.join().unwrap();
        match full_hash {
            Some(h) => {
                assert_eq!(at, size as u64, "a full GET is the whole file");
                assert_eq!(h, hash, "a full GET hashes right");
            }
            None if at != u64::MAX => {
                assert_eq!(body, vec![big[at as usize]], "the range at {at}")
            }
            None => {}
        }
    }
    let (_, peak) = server.rss();
    let added = peak.saturating_sub(rss_before);
    eprintln!(
        "large file: server RSS before {} MiB, peak {} MiB, added {} MiB",
        rss_before / MB,
        peak / MB,
        added / MB
    );
    assert!(
        added < 150 * MB,
        "the server's peak memory grew by {} MiB",
        added / MB
    );
}

/// Behind an HTTP origin, unknown sites cost one origin GET per name (misses are cached
/// and shared by concurrent requests), and a range of a large file reads only that range.
#[test]
fn unknown_hosts_and_ranges_are_cheap_behind_an_http_origin() {
    let server = Server::start();
    let api = server.client();
    let big: Vec<u8> = (0..6 * MB).map(|i| (i * 7 % 251) as u8).collect();
    let hash = sha256_hex(&big);
    assert_eq!(
        api.put_bytes(&format!("/v1/files/{hash}"), big.clone())
            .status,
        201
    );
    let created = api.post(
        "/v1/projects/known/deployments",
        &serde_json::json!({"files": {"/big.bin": hash}}),
    );
    assert_eq!(created.status, 202, "{}", created.text);
    let id = created.json()["id"].as_str().unwrap().to_string();
    server.wait_status(&id, Duration::from_secs(60), |s| s == "ready");

    let origin = Origin::start(&server.data_dir().join("storage"));
    let port = free_port();
    let mut proxy = Command::new(bin("cdeploy-proxy"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--domain", &format!("sites.test:{port}")])
        .args(["--storage", &origin.url()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, Duration::from_secs(10));

    // 200 requests for 10 unknown sites, as `<slug>` and as `<slug>--<id>`, 20 at once.
    let mut threads = Vec::new();
    for t in 0..20 {
        threads.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            for i in 0..10 {
                let n = (t + i) % 10;
                let label = if i % 2 == 0 {
                    format!("nosuch{n}")
                } else {
                    format!("nosuch{n}--{:0>16}", n)
                };
                let r = client
                    .get(format!("http://127.0.0.1:{port}/x"))
                    .header("host", format!("{label}.sites.test:{port}"))
                    .send()
                    .unwrap();
                assert_eq!(r.status(), 404);
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let gets = origin.total_gets();
    eprintln!("unknown hosts: 200 requests cost {gets} origin GETs");
    assert!(
        gets <= 20,
        "{gets} origin GETs for 200 unknown-host requests"
    );

    // A one-byte range of the 6 MiB file: the origin sends a range, not the file.
    let r = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}/big.bin"))
        .header("host", format!("known.sites.test:{port}"))
        .header("range", "bytes=5000000-5000000")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().to_vec(), vec![big[5_000_000]]);
    let sent = origin
        .counts
        .bytes_sent
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sent < MB,
        "the origin sent {sent} bytes for a one-byte range"
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
}

/// A build printing 2,000,000 lines (and one 5 MB line without a newline): the server
/// stays under +300 MB, the log ends with an explicit truncation notice and the
/// deployment's terminal status.
#[test]
fn a_log_flood_is_cut_and_the_deployment_still_ends() {
    let server = Server::start();
    let app = tempfile::tempdir().unwrap();
    write_build_command(
        app.path(),
        "head -c 5000000 /dev/zero | tr '\\0' x; echo; seq 1 2000000; mkdir -p out; echo '<h1>loud</h1>' > out/index.html",
        "output = \"out\"\n",
    );
    let (rss_before, _) = server.rss();
    let out = server.cli(app.path(), &["deploy", "--slug", "loud", "--json"]);
    out.assert_code(0);
    let (_, peak) = server.rss();
    let added = peak.saturating_sub(rss_before);
    eprintln!(
        "log flood: server RSS before {} MiB, peak {} MiB, added {} MiB",
        rss_before / MB,
        peak / MB,
        added / MB
    );
    assert!(added < 300 * MB, "the server grew by {} MiB", added / MB);
    assert!(server.site("loud", "/").body.contains("<h1>loud</h1>"));

    let id = out.json()["id"].as_str().unwrap().to_string();
    let logs = server.cli(app.path(), &["logs", "loud", "--deployment", &id]);
    logs.assert_code(0);
    let text = &logs.stdout;
    assert!(text.contains("[log truncated]"), "no truncation notice");
    assert!(
        text.contains("[line truncated]"),
        "the 5 MB line is clipped"
    );
    assert!(
        text.len() < 40 * MB as usize,
        "the stored log is {} bytes",
        text.len()
    );
    assert!(
        !text.contains("\n1999999\n"),
        "lines past the limit are dropped"
    );
    let stored = server.deployment(&id);
    assert_eq!(stored["status"], "ready");
}
