//! A server's connection settings, and how many connections the open-file limit allows.

use std::time::Duration;

/// Connection settings of one server (flags of the proxy and the server).
#[derive(Debug, Clone, Copy)]
pub struct ConnSettings {
    /// Most connections at once; `0` picks a value from the open-file limit.
    pub max_connections: usize,
    /// From accept to a complete first request head (nginx: `client_header_timeout` 60 s).
    pub header_timeout: Duration,
    /// Keep-alive idle time between requests (nginx: `keepalive_timeout` 75 s).
    pub idle_timeout: Duration,
}

impl Default for ConnSettings {
    fn default() -> Self {
        ConnSettings {
            max_connections: 0,
            header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
        }
    }
}

/// Descriptors kept free of connections for everything else the process opens (the
/// files large contents are sent from, `crate::sendfile`, included).
const FD_RESERVE: u64 = 128 + crate::sendfile::MAX_OPEN_FILES as u64;
const _: () = assert!(FD_RESERVE == 192, "the docs say the limit less 192");
/// The cap when nothing else limits it.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// The open-file limit's share for connections: `soft limit - reserve`, at least 16.
pub fn fd_budget() -> usize {
    match rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
        // Unlimited.
        None => DEFAULT_MAX_CONNECTIONS,
        Some(soft) => {
            usize::try_from(soft.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX)
        }
    }
}
