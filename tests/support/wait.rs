//! Ports and waiting: a free port, the port a ready file names, and polling until a
//! condition holds (never a fixed sleep).

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// A port nothing listens on, for a process a test starts on a port it must know first
/// (a TLS port pebble validates, a server's ports known before it starts).
///
/// Taken below the system's ephemeral range (`ip_local_port_range`), where `bind` to
/// port 0 — which every server the tests start on port 0 uses, and every outgoing
/// connection — never lands: a port handed out here cannot be taken by another test's
/// server between this call and its owner's bind (ports from `bind(:0)` could, and
/// did). A counter keeps this process's callers apart, and the start differs per
/// process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(LOWEST);
    if span >= 1_000 {
        let start = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = (LOWEST + (start + n) % span) as u16;
            let tcp = TcpListener::bind(("127.0.0.1", port)).is_ok();
            if tcp && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
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
