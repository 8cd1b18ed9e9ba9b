//! Shared contracts of cdeploy.
//!
//! Every component (CLI, server, builder, proxy) speaks through the types in this crate,
//! so a change to a wire format or a naming rule happens in exactly one place. It holds
//! contracts, not backends: the storage backends that read and write the [`layout`] are
//! in `cdeploy-storage`.
//!
//! # Layout
//! * [`ids`] — slug, deployment id and token rules (what a valid name looks like).
//! * [`git`] — validation of user-supplied git URLs and refs (nothing hostile reaches `git`).
//! * [`config`] — the `cdeploy.toml` schema, with errors that name file, line and key.
//! * [`credentials`] — the CLI's saved tokens, per API URL.
//! * [`event`] — build log events, as sent over the WebSocket and the log bus.
//! * [`api`] — request and response bodies of the control-plane HTTP API.
//! * [`plan`] — what a build runs: framework presets and detection, the Node.js and
//!   package-manager choice, the output folder, the static-site check (a folder of
//!   small modules; its own Layout map is in `plan/mod.rs`).
//! * [`manifest`] — deployment manifests, route pointers and site settings.
//! * [`diff`] — two deployments' manifests compared: files, settings, rules, server.
//! * [`server`] — a server app's deployment: how its server starts (in the manifest)
//!   and the bundle of files it runs from.
//! * [`layout`] — where things live in storage (`blobs/`, `deployments/`, `routes/`).
//! * [`rules`] — a site's `_redirects` and `_headers`, parsed and checked (a folder; its
//!   Layout map is in `rules/mod.rs`).
//! * [`batch`] — the batch upload format: many blobs in one tar body (its reader: feature `io`).
//! * [`seal`] — the operator's keyrings: sealing stored secrets and protection records.
//! * [`domains`] — custom domains: names, what storage holds for the proxies (routes,
//!   certificates with their keys sealed).
//! * [`mask`] — hiding secret values (and their encoded forms) in build logs.
#![forbid(unsafe_code)]

pub mod api;
pub mod batch;
pub mod config;
pub mod credentials;
pub mod diff;
pub mod domains;
pub mod event;
pub mod git;
pub mod ids;
pub mod layout;
pub mod manifest;
pub mod mask;
pub mod plan;
pub mod rules;
pub mod seal;
pub mod server;

/// Where a `cdeploy-server` started without `--data-dir` keeps its data:
/// `$XDG_DATA_HOME/cdeploy`, else `~/.local/share/cdeploy`.
pub fn default_data_dir() -> std::path::PathBuf {
    match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => std::path::PathBuf::from(d).join("cdeploy"),
        None => match std::env::var_os("HOME") {
            Some(h) => std::path::PathBuf::from(h).join(".local/share/cdeploy"),
            None => std::path::PathBuf::from("cdeploy-data"),
        },
    }
}

/// Hex-encoded SHA-256 of `data`: the address of a blob in storage.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Hex SHA-256 and size of a file, read in chunks (outputs can be large).
pub fn hash_file(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    // `copy`'s stack buffer: a zeroed heap buffer per file costs more than hashing a
    // small file does.
    let size = std::io::copy(&mut f, &mut h)?;
    Ok((hex::encode(h.finalize()), size))
}

/// Waits for SIGTERM or ctrl-c: how every cdeploy service is asked to stop.
#[cfg(feature = "io")]
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// True when `s` looks like a hex SHA-256 digest (64 lowercase hex characters).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The current time as RFC 3339 with milliseconds, the format of every timestamp we emit.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
