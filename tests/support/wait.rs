//! Ports and waiting: a free port, the port a ready file names, and polling until a
//! condition holds (never a fixed sleep).

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The port a `--ready-file` names under `key`, once the process has written it.
pub fn ready_port(file: &Path, key: &str) -> Option<u16> {
    let text = std::fs::read_to_string(file).ok()?;
    let ready: serde_json::Value = serde_json::from_str(&text).ok()?;
    ready[key].as_str()?.rsplit_once(':')?.1.parse().ok()
}

pub fn wait_for_port(port: u16, timeout: Duration) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < timeout,
            "nothing listens on port {port} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
