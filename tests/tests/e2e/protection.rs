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
    server
        .cli(dir, &["deploy", "--prebuilt", ".", "--slug", "guarded"])
        .assert_code(0);
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
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let page = resp.text().unwrap();
        assert!(
            page.contains("<form") && !page.contains("preview page"),
            "{page}"
        );
        assert!(page.contains("value=\"/docs?x=1\""), "{page}");
    }

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
        .ends_with("; Secure"));

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
fn wrong_passwords_are_limited() {
    let server = Server::start();
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
    for _ in 0..10 {
        assert_eq!(
            unlock(&server, "b--limited", "password=guess").status(),
            401
        );
    }
    // Past the limit even the right password waits.
    let resp = unlock(&server, "b--limited", "password=the-right-one");
    assert_eq!(resp.status(), 429);
    assert!(resp.text().unwrap().contains("wait a minute"));
}
