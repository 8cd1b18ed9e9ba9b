//! The CLI's own commands: init, login, completions, output discipline.

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
