//! The CLI's own commands: init, login, completions, output discipline, diff.

use cdeploy_tests::*;

#[test]
fn init_detects_vite_and_writes_a_valid_file() {
    let server = Server::start();
    let tmp = fixture("vite-app");
    let app = tmp.path().join("vite-app");
    let out = server.cli(&app, &["init"]);
    out.assert_code(2);
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    let out = server.cli(&app, &["init", "--yes"]);
    out.assert_code(0);
    assert!(out.stderr.contains("Detected Vite"), "{}", out.stderr);
    let text = std::fs::read_to_string(app.join("cdeploy.toml")).unwrap();
    assert!(text.contains("slug = \"vite-app\""), "{text}");
    assert!(text.contains("output = \"dist\""), "{text}");
    assert!(text.contains("spa = true"), "{text}");
    server.cli(&app, &["init", "--yes"]).assert_code(2);
    server
        .cli(&app, &["init", "--yes", "--force"])
        .assert_code(0);
}

#[test]
fn login_saves_a_checked_token() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("cfg");
    let cfg = config.display().to_string();
    let run = |args: &[&str], token: Option<&str>| {
        let mut vars = vec![("XDG_CONFIG_HOME", cfg.as_str())];
        if let Some(t) = token {
            vars.push(("CDEPLOY_TOKEN", t));
        }
        server.cli_env(tmp.path(), args, &vars)
    };
    // A wrong token is refused and not saved.
    run(&["login"], Some("cdp_wrong")).assert_code(3);
    assert!(!config.join("cdeploy/credentials.json").exists());
    run(&["login"], None).assert_code(2);
    run(&["ls"], None).assert_code(3);
    run(&["login"], Some(&server.token())).assert_code(0);
    // Later commands use the saved token.
    run(&["ls", "--json"], None).assert_code(0);
}

#[test]
fn completions_and_usage_errors() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let out = server.cli(tmp.path(), &["completions", "bash"]);
    out.assert_code(0);
    assert!(
        out.stdout.contains("cdeploy") && out.stdout.contains("deploy"),
        "{}",
        out.stdout
    );
    server.cli(tmp.path(), &["no-such-command"]).assert_code(2);
    server
        .cli(tmp.path(), &["deploy", "--ref", "main"])
        .assert_code(2);
    let out = server.cli(tmp.path(), &["ls", "--json"]);
    out.assert_code(0);
    assert_eq!(out.json(), serde_json::json!([]));
    let out = server.cli(tmp.path(), &["inspect", "nosuchdeployment", "--json"]);
    out.assert_code(3);
    assert_eq!(out.json()["error"]["code"], "not_found");
}

#[test]
fn diff_names_files_settings_and_rules_that_changed_and_keeps_to_the_token() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let deploy = |args: &[&str]| {
        let mut all = vec!["deploy", "--prebuilt", ".", "--slug", "shop", "--json"];
        all.extend_from_slice(args);
        let out = server.cli(dir, &all);
        out.assert_code(0);
        out.json()["id"].as_str().unwrap().to_string()
    };
    write_files(
        dir,
        &[
            ("index.html", "v1"),
            ("old.js", "let a = 1;"),
            ("same.css", "body{}"),
            ("_redirects", "/promo /v1-sale 302\n"),
        ],
    );
    let production = deploy(&[]);
    std::fs::remove_file(dir.join("old.js")).unwrap();
    write_files(
        dir,
        &[
            ("index.html", "version 2"),
            ("new.js", "let b = 2;"),
            ("_redirects", "/promo /v2-sale 302\n"),
        ],
    );
    let preview = deploy(&["--preview"]);

    server.cli(dir, &["diff", "../projects/x"]).assert_code(2);
    // One id: from production to it.
    let out = server.cli(dir, &["diff", &preview]);
    out.assert_code(0);
    let text = &out.stdout;
    assert!(
        text.contains(&format!("{production} → {preview}")),
        "{text}"
    );
    assert!(text.contains("+ /new.js"), "{text}");
    assert!(text.contains("- /old.js"), "{text}");
    assert!(text.contains("~ /index.html"), "{text}");
    assert!(text.contains("2 B → 9 B"), "{text}");
    assert!(text.contains("1 added, 1 removed, 1 changed"), "{text}");
    assert!(text.contains("- redirect /promo /v1-sale 302"), "{text}");
    assert!(text.contains("+ redirect /promo /v2-sale 302"), "{text}");
    let json = server.cli(dir, &["diff", &production, &preview, "--json"]);
    json.assert_code(0);
    let d = json.json();
    assert_eq!(d["added"][0]["path"], "/new.js", "{d}");
    assert_eq!(d["changed"][0]["from_size"], 2, "{d}");
    assert_eq!(d["unchanged"], 1, "{d}");

    // A token of another project sees neither side; of this one, not another's.
    write_files(dir, &[("index.html", "other")]);
    let out = server.cli(
        dir,
        &["deploy", "--prebuilt", ".", "--slug", "other", "--json"],
    );
    out.assert_code(0);
    let other = out.json()["id"].as_str().unwrap().to_string();
    let reader = server.create_token(&["--name", "r", "--role", "read", "--project", "shop"]);
    let as_reader = |args: &[&str]| server.cli_env(dir, args, &[("CDEPLOY_TOKEN", &reader)]);
    as_reader(&["diff", &production, &preview]).assert_code(0);
    let out = as_reader(&["diff", &production, &other, "--json"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("not found"), "{}", out.stdout);
    assert_ne!(as_reader(&["diff", &other, &production]).code, 0);
}
