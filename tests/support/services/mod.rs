//! The real services of distributed mode, each started on a free loopback port and
//! stopped when dropped: `redis-server`, moto's server (S3, ECS and EC2 APIs), Postgres,
//! a fault-injecting proxy in front of S3, and an ACME CA with its DNS server.
//!
//! AWS calls here are raw JSON/query/REST requests: moto checks no signatures, only the
//! credential scope of the `Authorization` header, which tells it the service.
//!
//! # Layout
//! * this file — what they share: finding programs, the dev virtualenv, log output.
//! * [`redis`], [`moto`], [`postgres`] — one service each.
//! * [`fault`] — the fault-injecting proxy.
//! * [`pebble`] — an ACME CA (pebble) and its DNS server (pebble-challtestsrv).
//! * [`named`] — BIND, a DNS server that takes dynamic updates (RFC 2136).

mod fault;
mod moto;
mod named;
mod pebble;
mod postgres;
mod redis;

pub use fault::{Fault, FaultProxy};
pub use moto::*;
pub use named::Named;
pub use pebble::{make_test_certs, Pebble};
pub use postgres::Postgres;
pub use redis::Redis;

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn log_target() -> Stdio {
    if std::env::var_os("TEST_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// A program from `$VAR`, else the first existing candidate path, else `name` on PATH.
fn find_program(var: &str, candidates: &[PathBuf], name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| PathBuf::from(name))
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
}

/// The virtualenv `install.sh --dev` puts moto in.
pub fn dev_venv() -> PathBuf {
    std::env::var_os("CDEPLOY_DEV_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache/cdeploy-dev-venv"))
}

/// Runs `cmd`, failing the test with its output unless it succeeds; its output.
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
