//! Preview protection: previews answer only the bypass token, the password, or the
//! cookie either earned; production stays public.

use cdeploy_tests::*;
use reqwest::blocking::{Client, Response};
use reqwest::redirect::Policy;

fn client() -> Client {
    Client::builder().redirect(Policy::none()).build().unwrap()
}

/// A request to `host_label` on the server's proxy, with extra headers.
fn get(server: &Server, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = client()
        .get(format!("http://127.0.0.1:{}{path}", server.proxy_port))
        .header("host", format!("{host}.localhost:{}", server.proxy_port));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().unwrap()
}

fn unlock(server: &Server, host: &str, form: &str) -> Response {
    client()
        .post(format!(
            "http://127.0.0.1:{}/.cdeploy/unlock",
            server.proxy_port
        ))
        .header("host", format!("{host}.localhost:{}", server.proxy_port))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string())
        .send()
        .unwrap()
}

/// `name=value` of a response's `Set-Cookie`.
fn cookie_of(resp: &Response) -> String {
    let set = resp
        .headers()
        .get("set-cookie")
        .unwrap_or_else(|| panic!("no cookie: {:?}", resp.headers()))
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    set.split(';').next().unwrap().to_string()
}

#[test]
fn previews_need_the_password_or_the_token_and_production_stays_public() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(dir, &[("index.html", "production page")]);
    let out = server.cli(
        dir,
        &["deploy", "--prebuilt", ".", "--slug", "guarded", "--json"],
    );
    out.assert_code(0);
    let production_id = out.json()["id"].as_str().unwrap().to_string();
    write_files(dir, &[("index.html", "preview page")]);
    let out = server.cli(
        dir,
        &[
            "deploy",
            "--prebuilt",
            ".",
            "--slug",
            "guarded",
            "--preview",
            "--branch",
            "feat",
            "--json",
        ],
    );
    out.assert_code(0);
    let own = format!("guarded--{}", out.json()["id"].as_str().unwrap());
    assert_eq!(get(&server, &own, "/", &[]).status(), 200);

    let out = server.cli_input(
        dir,
        &[
            "protection",
            "on",
            "--password",
            "--project",
            "guarded",
            "--json",
        ],
        "correct horse battery\n",
    );
    out.assert_code(0);
    let token = out.json()["bypass_token"].as_str().unwrap().to_string();
    assert_eq!(out.json()["password"], true);

    // Production: public. Previews (own URL and branch alias): the form, 401.
    let prod = get(&server, "guarded", "/", &[]);
    assert_eq!(prod.status(), 200);
    assert_eq!(prod.text().unwrap(), "production page");
    for host in [own.as_str(), "feat--guarded"] {
        let resp = get(&server, host, "/docs?x=1", &[]);
        assert_eq!(resp.status(), 401, "{host}");
        assert_eq!(resp.headers()["cache-control"], "private, no-store");
        let page = resp.text().unwrap();
        assert!(
            page.contains("<form") && !page.contains("preview page"),
            "{page}"
        );
        assert!(page.contains("value=\"/docs?x=1\""), "{page}");
    }
    // `inspect --route` says so of the preview, not of production.
    let preview_id = own.trim_start_matches("guarded--");
    let out = server.cli(dir, &["inspect", preview_id, "--route", "/"]);
    assert!(
        out.stdout.contains("protected: without the password"),
        "{}",
        out.stdout
    );
    let out = server.cli(dir, &["inspect", &production_id, "--route", "/", "--json"]);
    assert!(out.json().get("protected").is_none(), "{}", out.stdout);

    // CI: the token in a header opens it; a wrong one does not.
    let resp = get(
        &server,
        "feat--guarded",
        "/",
        &[("x-cdeploy-bypass", &token)],
    );
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().unwrap(), "preview page");
    assert_eq!(
        get(
            &server,
            "feat--guarded",
            "/",
            &[("x-cdeploy-bypass", "cdpb_wrong")]
        )
        .status(),
        401
    );
    // A browser: the token in the query becomes a cookie, and the URL loses it.
    let resp = get(&server, &own, &format!("/?a=1&cdeploy_bypass={token}"), &[]);
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/?a=1");
    assert!(!resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Secure"));
    let cookie = cookie_of(&resp);
    assert_eq!(
        get(&server, &own, "/", &[("cookie", &cookie)]).status(),
        200
    );
    // Behind a TLS terminator the cookie never travels over plain HTTP again.
    let resp = get(
        &server,
        &own,
        &format!("/?cdeploy_bypass={token}"),
        &[("x-forwarded-proto", "https")],
    );
    assert_eq!(resp.status(), 303);
    assert!(resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split("; ")
        .any(|attribute| attribute == "Secure"));

    // With a cookie, a token in the URL is still taken out of it (no new cookie for a
    // wrong one), and the redirect never leaves the site.
    let resp = get(
        &server,
        &own,
        "/docs?cdeploy_bypass=cdpb_wrong&b=2",
        &[("cookie", &cookie)],
    );
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/docs?b=2");
    assert!(resp.headers().get("set-cookie").is_none());
    for path in [
        "//evil.example/?cdeploy_bypass=",
        "/\\evil.example/?cdeploy_bypass=",
    ] {
        let resp = get(&server, &own, &format!("{path}{token}"), &[]);
        assert_eq!(resp.status(), 303, "{path}");
        assert_eq!(resp.headers()["location"], "/evil.example/", "{path}");
        assert_eq!(resp.headers()["cache-control"], "private, no-store");
    }
    // A wrong token in the URL: the form, whose return path drops it.
    let page = get(&server, &own, "/a?cdeploy_bypass=cdpb_wrong", &[])
        .text()
        .unwrap();
    assert!(
        page.contains("value=\"/a\"") && !page.contains("cdpb_wrong"),
        "{page}"
    );
    // The site's own files, once admitted, are private to caches too.
    let resp = get(&server, &own, "/", &[("cookie", &cookie)]);
    assert_eq!(resp.headers()["cache-control"], "private, no-store");

    // The password form: wrong, then right; back where the visitor was going.
    let resp = unlock(&server, "feat--guarded", "password=nope&next=%2Fdocs");
    assert_eq!(resp.status(), 401);
    assert!(resp.text().unwrap().contains("Wrong password"));
    let resp = unlock(
        &server,
        "feat--guarded",
        "password=correct+horse+battery&next=%2Fdocs",
    );
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/docs");
    let cookie = cookie_of(&resp);
    let resp = get(&server, "feat--guarded", "/", &[("cookie", &cookie)]);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().unwrap(), "preview page");
    // Never a redirect off the site.
    let resp = unlock(
        &server,
        "feat--guarded",
        "password=correct+horse+battery&next=%2F%2Fevil.example",
    );
    assert_eq!(resp.headers()["location"], "/");
    // A forged or foreign cookie opens nothing.
    for forged in ["cdeploy_preview=9999999999.00", "cdeploy_preview=garbage"] {
        assert_eq!(get(&server, &own, "/", &[("cookie", forged)]).status(), 401);
    }

    // Status, without the token; a new token ends the old one and every cookie.
    let status = server.cli(
        dir,
        &["protection", "status", "--project", "guarded", "--json"],
    );
    status.assert_code(0);
    assert_eq!(status.json()["enabled"], true);
    assert!(status.json().get("bypass_token").is_none());
    let out = server.cli(
        dir,
        &[
            "protection",
            "on",
            "--new-token",
            "--project",
            "guarded",
            "--json",
        ],
    );
    out.assert_code(0);
    assert_eq!(out.json()["password"], true, "the password is kept");
    let new_token = out.json()["bypass_token"].as_str().unwrap().to_string();
    assert_ne!(new_token, token);
    assert_eq!(
        get(&server, &own, "/", &[("x-cdeploy-bypass", &token)]).status(),
        401
    );
    assert_eq!(
        get(&server, &own, "/", &[("cookie", &cookie)]).status(),
        401
    );
    assert_eq!(
        get(&server, &own, "/", &[("x-cdeploy-bypass", &new_token)]).status(),
        200
    );

    // Token only: the page says how to get in, and the form is gone.
    server
        .cli(
            dir,
            &["protection", "on", "--no-password", "--project", "guarded"],
        )
        .assert_code(0);
    let page = get(&server, &own, "/", &[]).text().unwrap();
    assert!(
        page.contains("x-cdeploy-bypass") && !page.contains("<form"),
        "{page}"
    );

    // Who may: admins only.
    let api = server.client().with_token(&server.deploy_token("guarded"));
    assert_eq!(api.get("/v1/projects/guarded/protection").status, 403);
    assert_eq!(api.delete("/v1/projects/guarded/protection").status, 403);

    // Bad input.
    let out = server.cli_input(
        dir,
        &["protection", "on", "--password", "--project", "guarded"],
        "short",
    );
    out.assert_code(3);
    assert!(out.stderr.contains("8 to 256"), "{}", out.stderr);
    let out = server.cli(dir, &["protection", "status", "--project", "no-such"]);
    out.assert_code(3);

    // Off: previews are public again.
    server
        .cli(dir, &["protection", "off", "--project", "guarded"])
        .assert_code(0);
    assert_eq!(get(&server, &own, "/", &[]).status(), 200);
    server
        .cli(dir, &["protection", "off", "--project", "guarded"])
        .assert_code(3);
}

#[test]
fn wrong_passwords_are_limited_per_visitor() {
    // As behind a load balancer that appends the visitor's address to X-Forwarded-For.
    let server = Server::start_with(&["--trusted-proxies", "1"], &[]);
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[("index.html", "p")]);
    let out = server.cli(
        tmp.path(),
        &[
            "deploy",
            "--prebuilt",
            ".",
            "--slug",
            "limited",
            "--preview",
            "--branch",
            "b",
            "--json",
        ],
    );
    out.assert_code(0);
    server
        .cli_input(
            tmp.path(),
            &["protection", "on", "--password", "--project", "limited"],
            "the-right-one",
        )
        .assert_code(0);
    let from = |addr: &str, form: &str| {
        client()
            .post(format!(
                "http://127.0.0.1:{}/.cdeploy/unlock",
                server.proxy_port
            ))
            .header(
                "host",
                format!("b--limited.localhost:{}", server.proxy_port),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            // What the stranger sends itself comes first; the balancer's entry last.
            .header("x-forwarded-for", format!("10.9.9.9, {addr}"))
            .body(form.to_string())
            .send()
            .unwrap()
    };
    for _ in 0..10 {
        assert_eq!(from("203.0.113.7", "password=guess").status(), 401);
    }
    // Past the limit even the right password waits, from that address...
    let resp = from("203.0.113.7", "password=the-right-one");
    assert_eq!(resp.status(), 429);
    assert!(resp.text().unwrap().contains("wait a minute"));
    // ...and a spoofed first entry changes nothing; a reviewer elsewhere gets in.
    let resp = from("203.0.113.7", "password=the-right-one");
    assert_eq!(resp.status(), 429);
    let resp = from("198.51.100.20", "password=the-right-one");
    assert_eq!(resp.status(), 303);
    cookie_of(&resp);
}

/// Behind a caching proxy (nginx with `proxy_cache`, as a CDN would be), what one
/// reviewer loaded is never served to the next visitor, who has no cookie.
#[test]
fn protected_previews_are_never_kept_by_a_shared_cache() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(
        dir,
        &[
            ("index.html", "preview page"),
            (
                "assets/app-Dx1d9fQa.js",
                "export const secret = 'preview only';",
            ),
        ],
    );
    let out = server.cli(
        dir,
        &[
            "deploy",
            "--prebuilt",
            ".",
            "--slug",
            "cached",
            "--preview",
            "--branch",
            "feat",
            "--json",
        ],
    );
    out.assert_code(0);
    write_files(dir, &[("index.html", "production")]);
    server
        .cli(dir, &["deploy", "--prebuilt", ".", "--slug", "cached"])
        .assert_code(0);
    let out = server.cli_input(
        dir,
        &[
            "protection",
            "on",
            "--password",
            "--project",
            "cached",
            "--json",
        ],
        "correct horse battery\n",
    );
    out.assert_code(0);
    let token = out.json()["bypass_token"].as_str().unwrap().to_string();
    let cache = Nginx::caching(server.proxy_port);
    let through = |path: &str, headers: &[(&str, &str)]| {
        let mut req = client()
            .get(format!("http://127.0.0.1:{}{path}", cache.port))
            .header(
                "host",
                format!("feat--cached.localhost:{}", server.proxy_port),
            );
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().unwrap()
    };
    for path in ["/assets/app-Dx1d9fQa.js", "/", "/missing.js"] {
        // A reviewer with the token (twice: a cache stores on the first and serves the
        // second), then a stranger.
        for _ in 0..2 {
            let resp = through(path, &[("x-cdeploy-bypass", &token)]);
            assert_eq!(
                resp.headers()
                    .get("cache-control")
                    .map(|v| v.to_str().unwrap()),
                Some("private, no-store"),
                "{path}: {} {:?}",
                resp.status(),
                resp.headers()
            );
        }
        let resp = through(path, &[]);
        assert_eq!(resp.status(), 401, "{path}: {:?}", resp.headers());
        let body = resp.text().unwrap();
        assert!(
            !body.contains("preview only") && !body.contains("preview page"),
            "{path}: {body}"
        );
    }
    // The cache works: production's fingerprinted asset is served from it.
    let prod = |path: &str| {
        client()
            .get(format!("http://127.0.0.1:{}{path}", cache.port))
            .header("host", format!("cached.localhost:{}", server.proxy_port))
            .send()
            .unwrap()
    };
    prod("/assets/app-Dx1d9fQa.js");
    let again = prod("/assets/app-Dx1d9fQa.js");
    assert_eq!(again.headers()["x-cache-status"], "HIT");
}

/// nginx in front of the proxy, caching what it may, on a free loopback port.
struct Nginx {
    port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn caching(upstream: u16) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let root = dir.path().display();
        let conf = format!(
            "daemon off; master_process off; pid {root}/nginx.pid; error_log {root}/error.log;\n\
             events {{}}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {root}/body; proxy_temp_path {root}/proxy;\n\
               fastcgi_temp_path {root}/fcgi; uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;\n\
               proxy_cache_path {root}/cache keys_zone=z:1m;\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 location / {{\n\
                   proxy_pass http://127.0.0.1:{upstream};\n\
                   proxy_set_header Host $http_host;\n\
                   proxy_cache z; proxy_cache_key $http_host$request_uri;\n\
                   proxy_cache_valid 200 404 10m;\n\
                   add_header X-Cache-Status $upstream_cache_status;\n\
                 }}\n\
               }}\n\
             }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx (install.sh --dev installs it)");
        let child = std::process::Command::new(bin)
            .args(["-p", &root.to_string(), "-c"])
            .arg(dir.path().join("nginx.conf"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_until(
            "nginx to listen",
            std::time::Duration::from_secs(10),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        Nginx {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
