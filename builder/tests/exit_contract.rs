//! The builder binary's contract when its configuration is wrong: a terminal `failed`
//! event on stdout saying why, and exit code 2 — never a panic.

use std::process::Command;

#[test]
fn a_malformed_log_bus_setting_fails_the_build_with_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_cdeploy-builder"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DEPLOYMENT_ID", "0123456789abcdef")
        .env("REDIS_HOST", "h")
        .env("REDIS_PORT", "http")
        .output()
        .expect("run cdeploy-builder");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let last: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("an event")).expect("JSON event");
    assert_eq!(last["type"], "status", "{stdout}");
    assert_eq!(last["status"], "failed", "{stdout}");
    assert!(
        last["error"]
            .as_str()
            .unwrap_or_default()
            .contains("log bus"),
        "{stdout}"
    );
}
