//! HTTPS for custom domains against a real ACME CA, offline (pebble): a certificate
//! within seconds of `domains add`, chaining to the CA's root, renewed at two thirds of
//! its lifetime; a domain whose DNS points elsewhere fails with `inspect` saying why,
//! then succeeds once the record is fixed.

use std::time::Duration;

use cdeploy_tests::services::{make_test_certs, Named, Pebble};
use cdeploy_tests::*;
use reqwest::blocking::Client;

struct Https {
    server: Server,
    pebble: Pebble,
    tls_port: u16,
    dir: tempfile::TempDir,
}

fn start(validity: u64) -> Https {
    start_with(validity, &[])
}

/// [`start`] with more server arguments; `{tls}` in one is the TLS port.
fn start_with(validity: u64, more: &[&str]) -> Https {
    start_full(validity, more, None)
}

/// [`start_with`] against a CA that requires External Account Binding with `eab`.
fn start_full(validity: u64, more: &[&str], eab: Option<(&str, &str)>) -> Https {
    let (api, proxy, tls) = (free_port(), free_port(), free_port());
    let pebble = Pebble::start_with_eab(proxy, tls, validity, eab);
    let directory = pebble.directory.clone();
    serve(pebble, (api, proxy, tls), &directory, more)
}

/// The server on `ports` (API, proxy, TLS) for `pebble`'s DNS and challenges, asking the
/// CA at `directory` (pebble's own, or a front of it).
fn serve(
    pebble: Pebble,
    (api, proxy, tls): (u16, u16, u16),
    directory: &str,
    more: &[&str],
) -> Https {
    let tls_listen = format!("127.0.0.1:{tls}");
    let (api_root, http_port) = (pebble.api_root(), proxy.to_string());
    let more: Vec<String> = more
        .iter()
        .map(|a| a.replace("{tls}", &tls.to_string()))
        .collect();
    let mut args = vec![
        "--tls-listen",
        &tls_listen,
        "--acme-directory",
        directory,
        "--acme-root",
        &api_root,
        "--acme-http-port",
        &http_port,
        "--acme-interval-secs",
        "1",
        "--dns-server",
        &pebble.dns,
        "--public-ip",
        "127.0.0.1",
    ];
    args.extend(more.iter().map(String::as_str));
    let server = Server::start_at(api, proxy, &args, &[]);
    Https {
        server,
        pebble,
        tls_port: tls,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Https {
    fn cli(&self, args: &[&str]) -> CliOutput {
        self.server.cli(self.dir.path(), args)
    }

    fn inspect(&self, domain: &str) -> serde_json::Value {
        let out = self.cli(&["domains", "inspect", domain, "--json"]);
        out.assert_code(0);
        out.json()
    }

    /// The base64 SHA-256 of the served certificate's public key (what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes).
    fn leaf_spki(&self, name: &str) -> String {
        let stored = std::fs::read_to_string(
            self.server
                .data_dir()
                .join(format!("storage/certs/{name}.json")),
        )
        .unwrap();
        let chain: serde_json::Value = serde_json::from_str(&stored).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let leaf = scratch.path().join("leaf.pem");
        std::fs::write(&leaf, chain["chain_pem"].as_str().unwrap()).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
                leaf.display()
            ))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// GET over HTTPS to this proxy for `host`, trusting only pebble's root.
    fn get(&self, host: &str, path: &str) -> Result<reqwest::blocking::Response, reqwest::Error> {
        https_get(self.pebble.issuing_root(), host, self.tls_port, path)
    }
}

/// GET over HTTPS to the proxy's TLS port `port` for `host`, trusting only `root`
/// (redirects are answers, not followed).
fn https_get(
    root: reqwest::Certificate,
    host: &str,
    port: u16,
    path: &str,
) -> Result<reqwest::blocking::Response, reqwest::Error> {
    Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .resolve(host, ([127, 0, 0, 1], port).into())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("https://{host}:{port}{path}"))
        .send()
}

#[test]
fn a_domain_gets_a_certificate_renews_it_and_explains_a_failure() {
    let h = start(30);
    write_files(h.dir.path(), &[("index.html", "shop over https")]);
    h.cli(&["deploy", "--prebuilt", ".", "--slug", "shop"])
        .assert_code(0);
    h.cli(&["domains", "add", "www.shop.test", "--project", "shop"])
        .assert_code(0);

    wait_until("the certificate", Duration::from_secs(30), || {
        h.inspect("www.shop.test")["domain"]["state"] == "active"
    });
    let page = h
        .get("www.shop.test", "/")
        .expect("HTTPS with pebble's root");
    assert_eq!(page.version(), reqwest::Version::HTTP_11);
    assert_eq!(page.text().unwrap(), "shop over https");
    // A browser too (HTTP/2 by ALPN), trusting the certificate pebble issued by its key.
    let dom = chromium_dom_with(
        &format!("https://www.shop.test:{}/", h.tls_port),
        &[
            "--host-resolver-rules=MAP www.shop.test 127.0.0.1",
            &format!(
                "--ignore-certificate-errors-spki-list={}",
                h.leaf_spki("www.shop.test")
            ),
        ],
    );
    assert!(dom.contains("shop over https"), "{dom}");
    // Plain HTTP now redirects.
    let plain = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}/a?b=c", h.server.proxy_port))
        .header("host", "www.shop.test")
        .send()
        .unwrap();
    assert_eq!(plain.status(), 308);
    assert_eq!(plain.headers()["location"], "https://www.shop.test/a?b=c");
    // A visitor on a port of its own is sent to this proxy's TLS port.
    let plain = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}/a", h.server.proxy_port))
        .header("host", format!("www.shop.test:{}", h.server.proxy_port))
        .send()
        .unwrap();
    assert_eq!(plain.status(), 308);
    assert_eq!(
        plain.headers()["location"],
        format!("https://www.shop.test:{}/a", h.tls_port).as_str()
    );
    let report = h.inspect("www.shop.test");
    let first = report["domain"]["certificate"]["not_before"].clone();
    assert_eq!(report["attempts"][0]["ok"], true, "{report}");
    assert!(report["attempts"][0]["self_check"]
        .as_str()
        .unwrap()
        .starts_with("ok"));

    // DNS that points elsewhere: refused before the CA is asked, with the fix.
    let orders = h.pebble.orders();
    h.pebble.set_a("bad.shop.test", "203.0.113.9");
    h.cli(&["domains", "add", "bad.shop.test", "--project", "shop"])
        .assert_code(0);
    wait_until("a failed attempt", Duration::from_secs(20), || {
        h.inspect("bad.shop.test")["attempts"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    let report = h.inspect("bad.shop.test");
    let attempt = &report["attempts"][0];
    assert_eq!(attempt["ok"], false, "{report}");
    assert_eq!(attempt["stage"], "dns");
    assert_eq!(
        attempt["fix"],
        "the A record of bad.shop.test points at 203.0.113.9, not this proxy (127.0.0.1)"
    );
    assert!(attempt["dns"]["server"]
        .as_str()
        .unwrap()
        .contains(&h.pebble.dns));
    assert!(attempt["next_retry"].is_string());
    let out = h.cli(&["domains", "inspect", "bad.shop.test"]);
    assert!(
        out.stdout.contains("points at 203.0.113.9, not this proxy"),
        "{}",
        out.stdout
    );
    assert!(h.get("bad.shop.test", "/").is_err(), "no certificate yet");
    // Fixed: the next attempt (asked for now by adding it again) succeeds.
    h.pebble.clear_a("bad.shop.test");
    h.cli(&["domains", "add", "bad.shop.test", "--project", "shop"])
        .assert_code(0);
    wait_until(
        "the fixed domain's certificate",
        Duration::from_secs(30),
        || h.inspect("bad.shop.test")["domain"]["state"] == "active",
    );
    assert_eq!(
        h.get("bad.shop.test", "/").unwrap().text().unwrap(),
        "shop over https"
    );

    // A tenant's domain is served, and certified, only once DNS proves it is theirs.
    h.cli(&["deploy", "--prebuilt", ".", "--slug", "blog"])
        .assert_code(0);
    let blog =
        h.server
            .create_token(&["--name", "blog-ci", "--project", "blog", "--role", "deploy"]);
    let as_blog = |args: &[&str]| {
        h.server
            .cli_env(h.dir.path(), args, &[("CDEPLOY_TOKEN", &blog)])
    };
    let out = as_blog(&[
        "domains",
        "add",
        "www.victim.test",
        "--project",
        "blog",
        "--json",
    ]);
    out.assert_code(0);
    let added = out.json();
    assert_eq!(added["verified"], false);
    let txt = added["dns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "TXT")
        .unwrap()
        .clone();
    assert_eq!(txt["name"], "_cdeploy.www.victim.test");
    wait_until("a verification attempt", Duration::from_secs(20), || {
        let out = as_blog(&["domains", "inspect", "www.victim.test", "--json"]);
        out.json()["attempts"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    let out = as_blog(&["domains", "inspect", "www.victim.test", "--json"]);
    let attempt = out.json()["attempts"][0].clone();
    assert_eq!(attempt["stage"], "verify", "{attempt}");
    assert!(
        attempt["fix"]
            .as_str()
            .unwrap()
            .contains("_cdeploy.www.victim.test"),
        "{attempt}"
    );
    let plain = |host: &str| {
        Client::new()
            .get(format!("http://127.0.0.1:{}/", h.server.proxy_port))
            .header("host", host)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(
        plain("www.victim.test"),
        404,
        "not served before it is verified"
    );
    // Another tenant cannot see whose it is.
    let out = h.cli(&["domains", "inspect", "www.victim.test", "--json"]);
    out.assert_code(0);
    let shop = h
        .server
        .create_token(&["--name", "shop-ci", "--project", "shop", "--role", "read"]);
    let out = h.server.cli_env(
        h.dir.path(),
        &["domains", "inspect", "www.victim.test"],
        &[("CDEPLOY_TOKEN", &shop)],
    );
    assert!(
        out.stderr.contains("not found") && !out.stderr.contains("blog"),
        "{}",
        out.stderr
    );
    h.pebble
        .set_txt("_cdeploy.www.victim.test", txt["value"].as_str().unwrap());
    wait_until(
        "the verified domain's certificate",
        Duration::from_secs(30),
        || h.inspect("www.victim.test")["domain"]["state"] == "active",
    );
    assert_eq!(
        h.get("www.victim.test", "/").unwrap().text().unwrap(),
        "shop over https"
    );

    // Renewal at two thirds of a 30-second certificate.
    wait_until("the renewal", Duration::from_secs(40), || {
        h.inspect("www.shop.test")["domain"]["certificate"]["not_before"] != first
    });
    assert_eq!(
        h.get("www.shop.test", "/").unwrap().text().unwrap(),
        "shop over https"
    );
    assert!(h.pebble.orders() >= orders + 2);
}

/// (webpki takes no wildcard over a single label, so `*.localhost` cannot stand for the
/// platform's `*.<domain>` here: a custom domain's parent goes the same way.)
/// With `--acme-challenge tls-alpn-01` the CA's check is answered on the TLS port (RFC
/// 8737) by the proxy: the self-check makes the CA's handshake first, the certificate
/// comes, and the challenge is gone once the order is done.
#[test]
fn tls_alpn_01_answers_the_ca_on_the_tls_port() {
    let h = start_with(
        3600,
        &[
            "--acme-challenge",
            "tls-alpn-01",
            "--acme-tls-port",
            "{tls}",
        ],
    );
    write_files(h.dir.path(), &[("index.html", "shop over tls-alpn-01")]);
    h.cli(&["deploy", "--prebuilt", ".", "--slug", "shop"])
        .assert_code(0);
    h.cli(&["domains", "add", "www.shop.test", "--project", "shop"])
        .assert_code(0);
    let start = std::time::Instant::now();
    while h.inspect("www.shop.test")["domain"]["state"] != "active" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no certificate within 30 s: {:#}",
            h.inspect("www.shop.test")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let page = h
        .get("www.shop.test", "/")
        .expect("HTTPS with pebble's root");
    assert_eq!(page.text().unwrap(), "shop over tls-alpn-01");
    let report = h.inspect("www.shop.test");
    assert_eq!(
        report["attempts"][0]["self_check"], "ok: a TLS-ALPN-01 handshake reaches this platform",
        "{report}"
    );
    let challenge = h
        .server
        .data_dir()
        .join("storage/acme/tls-alpn-01/www.shop.test.json");
    assert!(
        !challenge.exists(),
        "the challenge is removed after the order"
    );
    // With no order waiting, a handshake asking for acme-tls/1 gets no certificate.
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{}", h.tls_port))
        .args(["-servername", "www.shop.test", "-alpn", "acme-tls/1"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("no peer certificate available"), "{said}");

    // A tenant's domain: once DNS proves it, the first certificate attempt succeeds
    // (the proxies know the domain before the CA's handshake comes).
    h.cli(&["deploy", "--prebuilt", ".", "--slug", "blog"])
        .assert_code(0);
    let blog =
        h.server
            .create_token(&["--name", "blog-ci", "--project", "blog", "--role", "deploy"]);
    let out = h.server.cli_env(
        h.dir.path(),
        &[
            "domains",
            "add",
            "www.blog.test",
            "--project",
            "blog",
            "--json",
        ],
        &[("CDEPLOY_TOKEN", &blog)],
    );
    out.assert_code(0);
    let added = out.json();
    let txt = added["dns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "TXT")
        .unwrap()
        .clone();
    h.pebble
        .set_txt("_cdeploy.www.blog.test", txt["value"].as_str().unwrap());
    wait_until(
        "the verified domain's certificate",
        Duration::from_secs(30),
        || h.inspect("www.blog.test")["domain"]["state"] == "active",
    );
    let report = h.inspect("www.blog.test");
    for attempt in report["attempts"].as_array().unwrap() {
        assert!(
            attempt["ok"] == true || attempt["stage"] == "verify",
            "an attempt failed after verification: {report:#}"
        );
    }
}

/// A CA that requires External Account Binding: a server without the operator's key
/// id and HMAC key records the CA's refusal in `inspect`; with them, the account is
/// made and the certificate comes.
#[test]
fn external_account_binding_is_what_the_ca_asks() {
    const KID: &str = "kid-cdeploy";
    const KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let eab = Some((KID, KEY));
    let without = start_full(3600, &[], eab);
    write_files(without.dir.path(), &[("index.html", "bound")]);
    without
        .cli(&["deploy", "--prebuilt", ".", "--slug", "shop"])
        .assert_code(0);
    without
        .cli(&["domains", "add", "www.shop.test", "--project", "shop"])
        .assert_code(0);
    wait_until("a refused attempt", Duration::from_secs(30), || {
        without.inspect("www.shop.test")["attempts"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    let report = without.inspect("www.shop.test");
    let attempt = &report["attempts"][0];
    assert_eq!(attempt["ok"], false, "{report:#}");
    assert_eq!(attempt["stage"], "order", "{report:#}");
    assert!(
        attempt["ca_error"]
            .as_str()
            .is_some_and(|e| e.contains("externalAccountRequired")),
        "the CA's own words: {report:#}"
    );
    assert_eq!(
        attempt["fix"],
        "the CA requires External Account Binding: give the key id and HMAC key it issued as --acme-eab-kid and --acme-eab-hmac-key",
        "{report:#}"
    );
    drop(without);

    let with = start_full(
        3600,
        &["--acme-eab-kid", KID, "--acme-eab-hmac-key", KEY],
        eab,
    );
    write_files(with.dir.path(), &[("index.html", "bound")]);
    with.cli(&["deploy", "--prebuilt", ".", "--slug", "shop"])
        .assert_code(0);
    with.cli(&["domains", "add", "www.shop.test", "--project", "shop"])
        .assert_code(0);
    wait_until("the certificate", Duration::from_secs(30), || {
        with.inspect("www.shop.test")["domain"]["state"] == "active"
    });
    assert_eq!(
        with.get("www.shop.test", "/").unwrap().text().unwrap(),
        "bound"
    );
}

#[test]
fn the_operators_wildcard_certificate_serves_the_names_under_it() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = make_test_certs(certs.path(), "leaf", "DNS:*.shop.test");
    let tls = free_port();
    let server = Server::start_with(
        &[
            "--tls-listen",
            &format!("127.0.0.1:{tls}"),
            "--acme-directory",
            "none",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("index.html", "platform name over https")]);
    server
        .cli(dir.path(), &["deploy", "--prebuilt", ".", "--slug", "shop"])
        .assert_code(0);
    server
        .cli(
            dir.path(),
            &["domains", "add", "www.shop.test", "--project", "shop"],
        )
        .assert_code(0);
    let root = std::fs::read(certs.path().join("ca.pem")).unwrap();
    let root = reqwest::Certificate::from_pem(&root).unwrap();
    let page = https_get(root.clone(), "www.shop.test", tls, "/")
        .expect("HTTPS with the operator's certificate");
    assert_eq!(page.text().unwrap(), "platform name over https");
    // A name the certificate does not hold gets no handshake.
    let other = https_get(root, "elsewhere.test", tls, "/");
    assert!(other.is_err());
}

/// Two servers over one database and one storage place one order for a domain: the
/// lease in the database decides which.
#[test]
fn two_servers_place_one_order_per_domain() {
    use cdeploy_tests::services::Postgres;
    let pg = Postgres::start();
    let shared = tempfile::tempdir().unwrap();
    let storage = shared.path().display().to_string();
    let (api, proxy, tls) = (free_port(), free_port(), free_port());
    let pebble = Pebble::start(proxy, tls, 3600);
    let args = |tls_port: u16| -> Vec<String> {
        vec![
            "--database".into(),
            pg.url(),
            "--storage".into(),
            storage.clone(),
            "--tls-listen".into(),
            format!("127.0.0.1:{tls_port}"),
            "--acme-directory".into(),
            pebble.directory.clone(),
            "--acme-root".into(),
            pebble.api_root(),
            "--acme-http-port".into(),
            proxy.to_string(),
            "--acme-interval-secs".into(),
            "1".into(),
            "--dns-server".into(),
            pebble.dns.clone(),
            "--public-ip".into(),
            "127.0.0.1".into(),
        ]
    };
    let a_args = args(tls);
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let a = Server::start_at(api, proxy, &a_args, &[]);
    let b_args = args(free_port());
    let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let _b = Server::start_with(&b_args, &[]);
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("index.html", "one order")]);
    a.cli(dir.path(), &["deploy", "--prebuilt", ".", "--slug", "shop"])
        .assert_code(0);
    for name in ["www.shop.test", "api.shop.test", "docs.shop.test"] {
        a.cli(dir.path(), &["domains", "add", name, "--project", "shop"])
            .assert_code(0);
    }
    let active = |name: &str| {
        let out = a.cli(dir.path(), &["domains", "inspect", name, "--json"]);
        out.json()["domain"]["state"] == "active"
    };
    wait_until("three certificates", Duration::from_secs(40), || {
        ["www.shop.test", "api.shop.test", "docs.shop.test"]
            .iter()
            .all(|n| active(n))
    });
    // A few more rounds of both servers: nothing is due, nothing is ordered.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        pebble.orders(),
        3,
        "one order per domain, whichever server placed it"
    );
    assert_eq!(pebble.issued(), 3);
}

/// The platform's own `*.<domain>` by DNS-01, the TXT record written by the operator's
/// hook (here: challtestsrv's management API).
#[test]
fn the_platform_wildcard_comes_by_dns01_through_the_hook() {
    let (api, proxy, tls) = (free_port(), free_port(), free_port());
    let pebble = Pebble::start(proxy, tls, 3600);
    let hooks = tempfile::tempdir().unwrap();
    let hook = hooks.path().join("dns-hook");
    let calls = hooks.path().join("calls");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -e\necho \"$1 $2\" >> {calls}\ncase \"$1\" in\n  set) curl -fsS -X POST {url}/set-txt -d \"{{\\\"host\\\":\\\"$2\\\",\\\"value\\\":\\\"$3\\\"}}\" ;;\n  clear) curl -fsS -X POST {url}/clear-txt -d \"{{\\\"host\\\":\\\"$2\\\"}}\" ;;\nesac\n",
            calls = calls.display(),
            url = pebble.challtest_url()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let server = Server::start_at(
        api,
        proxy,
        &[
            "--domain",
            &format!("apps.test:{proxy}"),
            "--tls-listen",
            &format!("127.0.0.1:{tls}"),
            "--acme-directory",
            &pebble.directory,
            "--acme-root",
            &pebble.api_root(),
            "--acme-http-port",
            &proxy.to_string(),
            "--acme-interval-secs",
            "1",
            "--dns-server",
            &pebble.dns,
            "--acme-dns-hook",
            &hook.display().to_string(),
            "--acme-wildcard",
        ],
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("index.html", "wildcard shop")]);
    server
        .cli(dir.path(), &["deploy", "--prebuilt", ".", "--slug", "shop"])
        .assert_code(0);
    wait_until("the wildcard certificate", Duration::from_secs(40), || {
        let out = server.cli(dir.path(), &["domains", "inspect", "*.apps.test", "--json"]);
        out.code == 0 && out.json()["domain"]["state"] == "active"
    });
    let page = https_get(pebble.issuing_root(), "shop.apps.test", tls, "/")
        .expect("the platform's name over HTTPS");
    assert_eq!(page.text().unwrap(), "wildcard shop");
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert!(calls.contains("set _acme-challenge.apps.test."), "{calls}");
    assert!(
        calls.contains("clear _acme-challenge.apps.test."),
        "{calls}"
    );
}

/// The platform's own `*.<domain>` by DNS-01, the TXT record added and then deleted by
/// dynamic updates (RFC 2136) signed with a TSIG key, on BIND as the zone's primary (the
/// DNS server pebble and the platform ask). A wrong secret first: the attempt says the
/// server refused the key, and what to check.
#[test]
fn the_platform_wildcard_comes_by_dns01_through_rfc2136_updates() {
    let named = Named::start("apps.test");
    let tls = free_port();
    let pebble = Pebble::start_with_dns(free_port(), tls, 3600, Some(&named.addr));
    let start = |secret: &str| {
        let (api, proxy) = (free_port(), free_port());
        Server::start_at(
            api,
            proxy,
            &[
                "--domain",
                &format!("apps.test:{proxy}"),
                "--tls-listen",
                &format!("127.0.0.1:{tls}"),
                "--acme-directory",
                &pebble.directory,
                "--acme-root",
                &pebble.api_root(),
                "--acme-interval-secs",
                "1",
                "--dns-server",
                &named.addr,
                "--acme-dns-rfc2136",
                &named.addr,
                "--acme-dns-tsig-key",
                &named.key_name,
                "--acme-wildcard",
            ],
            &[("CDEPLOY_ACME_DNS_TSIG_SECRET", secret)],
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let inspect = |server: &Server| {
        let out = server.cli(dir.path(), &["domains", "inspect", "*.apps.test", "--json"]);
        (out.code == 0).then(|| out.json())
    };

    // Another key's secret: BIND answers NOTAUTH, and the attempt says so.
    let mut wrong = start("c2VjcmV0IG9mIGFub3RoZXIga2V5IGVudGlyZWx5IQ==");
    wait_until("a refused update", Duration::from_secs(30), || {
        inspect(&wrong).is_some_and(|r| r["attempts"].as_array().is_some_and(|a| !a.is_empty()))
    });
    let report = inspect(&wrong).unwrap();
    let attempt = &report["attempts"][0];
    assert_eq!(attempt["ok"], false, "{report:#}");
    let fix = attempt["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains("refused to add the TXT record _acme-challenge.apps.test.")
            && fix.contains("does not accept the key cdeploy-acme"),
        "{report:#}"
    );
    assert!(named.log().contains("cdeploy-acme"), "{}", named.log());
    wrong.stop();

    // The right secret: the record is added, the CA sees it, the certificate comes, and
    // the record is deleted again.
    let server = start(&named.secret);
    write_files(dir.path(), &[("index.html", "updated shop")]);
    server
        .cli(dir.path(), &["deploy", "--prebuilt", ".", "--slug", "shop"])
        .assert_code(0);
    wait_until("the wildcard certificate", Duration::from_secs(40), || {
        inspect(&server).is_some_and(|r| r["domain"]["state"] == "active")
    });
    let page = https_get(pebble.issuing_root(), "shop.apps.test", tls, "/")
        .expect("the platform's name over HTTPS");
    assert_eq!(page.text().unwrap(), "updated shop");
    let log = named.log();
    assert!(
        log.contains(
            "updating zone 'apps.test/IN': adding an RR at '_acme-challenge.apps.test' TXT"
        ),
        "{log}"
    );
    wait_until("the record deleted", Duration::from_secs(10), || {
        named.txt("_acme-challenge.apps.test").is_empty()
    });
}

/// A front for pebble (2.4 has no renewal information) that offers ARI (RFC 9773): its
/// directory is pebble's plus `renewalInfo`, whose answer is a window 50 to 80 s after
/// the first question (inside a 90-second certificate's lifetime, past the test's end),
/// but for the first certificate asked about once the file `window` says `now`: one
/// that closed a minute ago. Every certificate id asked about is appended to the file
/// `asked`. Everything else goes to pebble directly, as the directory's other URLs say.
const ARI_FRONT: &str = r#"
import http.server, json, ssl, sys, time, urllib.request
port, cert, key, pebble, ca, state = sys.argv[1:]
def stamp(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
class Front(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def answer(self, body, extra=()):
        body = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/dir":
            ctx = ssl.create_default_context(cafile=ca)
            directory = json.load(urllib.request.urlopen(pebble, context=ctx))
            directory["renewalInfo"] = "https://127.0.0.1:%s/ari" % port
            self.answer(directory)
        elif self.path.startswith("/ari/"):
            cert = self.path[len("/ari/"):]
            with open(state + "/asked", "a") as f:
                f.write(cert + "\n")
            first = open(state + "/asked").readline().strip()
            now = time.time()
            try:
                base = float(open(state + "/base").read())
            except FileNotFoundError:
                base = now
                open(state + "/base", "w").write(str(base))
            which = open(state + "/window").read().strip()
            closed = which == "now" and cert == first
            start, end = (now - 120, now - 60) if closed else (base + 50, base + 80)
            window = {"start": stamp(start), "end": stamp(end)}
            self.answer({"suggestedWindow": window}, [("Retry-After", "1")])
        else:
            self.send_error(404)
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Front)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

/// With a CA that offers renewal information (ARI), a certificate is renewed when the
/// CA's window says, not at two thirds of its lifetime: a window ahead leaves a
/// 90-second certificate alone however often it is asked about (each look asks again);
/// a window that has closed renews it once it is a tenth into its lifetime (9 s), well
/// before two thirds (60 s), and the new certificate, whose window is ahead, is left
/// alone.
#[test]
fn renewal_follows_the_cas_renewal_window() {
    let (api, proxy, tls) = (free_port(), free_port(), free_port());
    let pebble = Pebble::start(proxy, tls, 90);
    let state = tempfile::tempdir().unwrap();
    let window = state.path().join("window");
    std::fs::write(&window, "later").unwrap();
    let (front_port, script) = (free_port(), state.path().join("front.py"));
    std::fs::write(&script, ARI_FRONT).unwrap();
    let pem = |name: &str| pebble.dir.path().join(name).display().to_string();
    let _front = KillOnDrop(
        std::process::Command::new("python3")
            .arg(&script)
            .args([&front_port.to_string(), &pem("api.pem"), &pem("api.key")])
            .args([&pebble.directory, &pebble.api_root()])
            .arg(state.path())
            .spawn()
            .expect("python3"),
    );
    wait_for_port(front_port, Duration::from_secs(10));
    let directory = format!("https://127.0.0.1:{front_port}/dir");
    let h = serve(pebble, (api, proxy, tls), &directory, &[]);
    write_files(h.dir.path(), &[("index.html", "renewed by the window")]);
    h.cli(&["deploy", "--prebuilt", ".", "--slug", "shop"])
        .assert_code(0);
    h.cli(&["domains", "add", "www.shop.test", "--project", "shop"])
        .assert_code(0);
    let inspect = || h.inspect("www.shop.test");
    wait_until("the certificate", Duration::from_secs(30), || {
        inspect()["domain"]["state"] == "active"
    });
    let first = inspect()["domain"]["certificate"]["not_before"].clone();
    let asked = || {
        std::fs::read_to_string(state.path().join("asked"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // Asked about at once, then again as its Retry-After says (bounded by the round).
    wait_until("looks at the window", Duration::from_secs(20), || {
        asked().len() >= 4
    });
    assert_eq!(h.pebble.issued(), 1, "{:?}", asked());
    let ids = asked();
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    assert_eq!(ids[0].split('.').count(), 2, "AKI.serial: {ids:?}");
    assert_eq!(inspect()["attempts"].as_array().unwrap().len(), 1);

    // The CA moves the window into the past: renewed at the next look.
    std::fs::write(&window, "now").unwrap();
    wait_until("the renewed certificate", Duration::from_secs(30), || {
        h.pebble.issued() >= 2 && inspect()["domain"]["certificate"]["not_before"] != first
    });
    assert!(h
        .server
        .log()
        .contains("renewing inside the CA's renewal window"));
    // The new certificate is the one asked about from then on, and left alone.
    let renewed = asked()
        .iter()
        .position(|id| id != &ids[0])
        .unwrap_or(usize::MAX);
    wait_until(
        "looks at the new certificate",
        Duration::from_secs(20),
        || {
            asked()
                .iter()
                .skip(renewed)
                .filter(|id| *id != &ids[0])
                .count()
                >= 3
        },
    );
    assert_eq!(h.pebble.issued(), 2, "{:?}", asked());
    let page = https_get(h.pebble.issuing_root(), "www.shop.test", tls, "/").unwrap();
    assert_eq!(page.text().unwrap(), "renewed by the window");
}

/// A child process stopped when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
