//! The served OpenAPI 3.1 document: complete for the public API, and schemathesis (from
//! PyPI, installed by `install.sh --dev`) fuzzes every documented operation against it
//! without a 5xx or an answer that breaks the document.

use std::process::Command;

use cdeploy_tests::services::dev_venv;
use cdeploy_tests::*;
use serde_json::Value;

#[test]
fn the_document_is_served_and_schemathesis_finds_no_5xx_or_schema_break() {
    // Without the per-token rate limit, or most fuzzed requests would get 429s.
    let server = Server::start_with(&["--token-rate", "100000", "--token-burst", "100000"], &[]);
    // Served without a token.
    let resp = reqwest::blocking::get(format!("{}/v1/openapi.json", server.api())).unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/projects", "get"),
        ("/v1/projects/{slug}/deployments", "post"),
        ("/v1/deployments/{id}/cancel", "post"),
        ("/v1/files/{hash}", "put"),
        ("/v1/tokens", "post"),
        ("/v1/projects/{slug}/env/{name}", "put"),
        ("/v1/projects/{slug}/git", "put"),
        ("/v1/webhooks/{forge}/{slug}", "post"),
        ("/v1/hooks/{token}", "post"),
        ("/v1/audit", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not in the document"
        );
    }
    assert!(doc["components"]["schemas"]["Deployment"].is_object());
    // A valid OpenAPI 3.1 document (unique operation ids among the rules), as a real
    // validator reads it.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = Command::new(dev_venv().join("bin/openapi-spec-validator"))
        .arg(file.path())
        .output()
        .expect("run openapi-spec-validator: install it with ./install.sh --dev");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Something to find: a project with a deployment, a stored variable and a link.
    let site = tempfile::tempdir().unwrap();
    write_files(site.path(), &[("index.html", "<h1>fuzzed</h1>")]);
    server
        .cli(
            site.path(),
            &["deploy", "--prebuilt", ".", "--slug", "fuzzed"],
        )
        .assert_code(0);
    server
        .cli_input(
            site.path(),
            &["env", "add", "KEY", "--project", "fuzzed"],
            "value-1234",
        )
        .assert_code(0);

    let report = tempfile::tempdir().unwrap();
    let out = Command::new(dev_venv().join("bin/schemathesis"))
        .args(["run", &format!("{}/v1/openapi.json", server.api())])
        .args(["--url", &server.api()])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", server.token()),
        ])
        // One worker: hypothesis parses Python source with `ast` to describe its
        // strategies, and CPython before 3.11.8 (this machine's is 3.11.7) shares the
        // AST builder's depth counter between threads, so two workers now and then
        // fail a check with "AST constructor recursion depth mismatch" (CPython
        // gh-106905), a crash of the fuzzer rather than a finding about the API.
        .args(["--max-examples", "25", "--workers", "1", "--seed", "7"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--generation-database", "none", "--no-color"])
        .args(["--request-timeout", "30"])
        .args(["--report", "junit", "--report-dir"])
        .arg(report.path())
        .env("SCHEMATHESIS_HOOKS", "")
        // Its cache of found crashes goes to the run's own folder, not the checkout.
        .current_dir(report.path())
        .output()
        .expect("run schemathesis (install.sh --dev installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}\n--- server log (tail)\n{}",
        String::from_utf8_lossy(&out.stderr),
        server
            .log()
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .join("\n")
    );
    // It ran every operation (a run that tested nothing would pass too), on a
    // document whose every reference resolves.
    let tested = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested: "))
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    let selected = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Selected: "))
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    assert_eq!(tested, selected.split('/').next().unwrap(), "{stdout}");
    assert!(tested.parse::<u32>().unwrap() >= 30, "{stdout}");
    assert!(!stdout.contains("Unresolvable"), "{stdout}");
    // The server is still whole.
    assert_eq!(server.client().get("/v1/whoami").status, 200);
}
