//! Headless Chromium: a page's DOM after its scripts ran (with more flags when asked).

use std::process::{Command, Stdio};

/// The DOM after scripts ran, from headless Chromium.
pub fn chromium_dom(url: &str) -> String {
    chromium_dom_with(url, &[])
}

/// [`chromium_dom`] with more flags (`--host-resolver-rules=…`, trusted keys).
pub fn chromium_dom_with(url: &str, flags: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("tempdir");
    let out = Command::new(chromium_path())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(flags)
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium (install it with ./install.sh --dev)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chromium_path() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| {
        for c in ["chromium", "chromium-browser", "google-chrome"] {
            if Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {c}"))
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return c.to_string();
            }
        }
        panic!("no Chromium found: run ./install.sh --dev (or set CHROMIUM)")
    })
}
