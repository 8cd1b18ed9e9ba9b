//! S3 storage: the same layout as a local directory, in a bucket under an optional
//! prefix. Works against AWS and S3-compatible servers (path-style addressing when an
//! endpoint is set, checksums only where the API requires them).
//!
//! # Layout
//! * [`settings`] — the bucket and prefix of an `s3://` spec, the `S3_*` variables and
//!   the [`Patience`] of each kind of caller (always built: a binary without the SDK
//!   still reads an `s3://` spec, to refuse it by name).
//! * `client` — [`S3Storage`], the `Storage` implementation on the AWS SDK; only with
//!   the `aws` feature.

pub mod settings;

#[cfg(feature = "aws")]
mod client;

#[cfg(feature = "aws")]
pub use client::S3Storage;
pub use settings::{Patience, S3Settings};
