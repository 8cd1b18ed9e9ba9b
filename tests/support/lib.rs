//! Test support: spawns the real binaries on free loopback ports, plus the real parts
//! they talk to (a `git daemon`, headless Chromium, Redis, moto, Postgres), and cleans up
//! after itself. Split by concern, as cargo's own test support is; everything is
//! re-exported here, so a test needs `use cdeploy_tests::*` only.
//!
//! Set `TEST_LOG=1` to see the servers' logs.
//!
//! # Layout
//! * [`paths`] — the built binaries (refused when older than their sources), the
//!   repository, traversable temporary directories.
//! * [`wait`] — free ports, ready files, polling until a condition holds.
//! * [`server`] — [`Server`], an embedded `cdeploy-server` with its CLI and tokens.
//! * [`client`] — the CLI's output, web pages, the API, raw HTTP.
//! * [`files`] — fixtures and files written by tests.
//! * [`git`] — git commands and a `git daemon`.
//! * [`chromium`] — headless Chromium's DOM dump.
//! * [`devtools`] — headless Chromium driven over the DevTools protocol.
//! * [`axe`] — axe-core, for accessibility checks in a page.
//! * [`host`] — hashes, a process's memory, the open-file limit.
//! * [`recorder`] — a loopback HTTP server that keeps every request.
//! * [`services`] — Redis, moto (S3, ECS, EC2), Postgres and a fault-injecting proxy.
//! * [`distributed`] — a distributed deployment of those, for the AWS-mode tests.
//! * [`origin`] — an HTTP origin serving a storage folder.

pub use tempfile::TempDir;

pub mod axe;
pub mod chromium;
pub mod client;
pub mod devtools;
pub mod distributed;
pub mod files;
pub mod git;
pub mod host;
pub mod origin;
pub mod paths;
pub mod recorder;
pub mod server;
pub mod services;
pub mod wait;

pub use axe::*;
pub use chromium::*;
pub use client::*;
pub use files::*;
pub use git::*;
pub use host::*;
pub use paths::*;
pub use recorder::*;
pub use server::*;
pub use wait::*;
