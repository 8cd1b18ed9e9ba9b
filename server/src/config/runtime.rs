//! Server apps' runtimes of the embedded proxy: their settings are the runtime crate's
//! ([`cdeploy_runtime::RuntimeSettings`]), resolved with the data dir.

pub use cdeploy_runtime::{Runtime, RuntimeSettings};
