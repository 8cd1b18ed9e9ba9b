//! The dependency cache: `node_modules` kept between builds of the same project while
//! its lockfile and install command stay the same, so a redeploy skips the install.
//!
//! An entry is moved into the build with `rename` and moved back after a successful
//! build, so two concurrent builds never share one; a build that finds no entry simply
//! installs. Entries follow trust: each belongs to a scope (`layout::cache_scope`:
//! production, hand-made previews, or one branch) and a build reads and writes only its
//! own, so a branch anyone may push to can neither plant code in what production
//! restores nor read what production's builds left (bundlers cache inlined environment
//! values in `node_modules/.cache`). Only the newest entry per project and scope is kept,
//! and at most [`MAX_BRANCH_ENTRIES`] branch scopes per project.
//!
//! # Layout
//! * `local` — entries on the builder's own disk: [`lookup`], [`store`], [`forget`].
//! * `key` — an entry's key: what decides what an install makes, hashed, per scope.
//! * `digest` — what the install made, as a digest ([`installed_digest`]), so only a
//!   `node_modules` the build left as installed is kept.
//! * `nested` — workspace packages' own `node_modules` ([`nested_modules`]), which make
//!   an entry unkeepable.
//! * [`stored`] — the same cache in storage, for builders without a disk of their own.
//! * `archive` — `node_modules` as a zstd-compressed tar and back, for [`stored`].

mod archive;
mod digest;
mod key;
mod local;
mod nested;
pub mod stored;

pub use archive::PackError;
pub use digest::{installed_digest, installed_digest_of, TOOL_CACHES};
pub(crate) use key::key;
pub use local::{forget, lookup, store, Kept, MAX_BRANCH_ENTRIES};
pub use nested::nested_modules;
