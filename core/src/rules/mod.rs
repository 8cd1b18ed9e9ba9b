//! A site's routing rules: redirects, rewrites and proxies (`_redirects`), and response
//! headers by path (`_headers`), in the syntax Netlify and Cloudflare Pages read. They
//! are parsed and checked when a deployment is made, so a bad line fails the deploy
//! naming `file:line` and the reason, and nothing is guessed at request time.
//!
//! # Layout
//! * this file — [`RuleError`] and the limits.
//! * [`pattern`] — path patterns (`/news/:year/*`), matching and filling in targets.
//! * [`redirects`] — the `_redirects` file.
//! * [`headers`] — the `_headers` file.

pub mod headers;
pub mod pattern;
pub mod redirects;

pub use headers::HeaderRule;
pub use pattern::{Captures, Pattern};
pub use redirects::Redirect;

/// One bad line of a rules file: where (`_redirects:12`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {reason}")]
pub struct RuleError {
    pub at: String,
    pub reason: String,
}
