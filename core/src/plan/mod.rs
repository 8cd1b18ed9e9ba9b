//! What a build will do when `cdeploy.toml` leaves things out: the framework, the Node.js
//! version, the package manager, the install and build commands and the output folder.
//!
//! One table of framework presets ([`PRESETS`]) serves the builder's defaults, `cdeploy
//! init` and `cdeploy deploy --dry`, so what `init` writes is what a build would have
//! done anyway. Everything here only reads files; fetching the chosen toolchain is the
//! builder's job.
//!
//! # Layout
//! * [`decide`] — the [`Plan`] and [`plan()`], which reads a project and fills in what the
//!   configuration leaves out.
//! * [`presets`] — the framework presets table: what each framework runs and where it
//!   writes its static site.
//! * [`project`] — the files of one project folder (package.json, configs), framework
//!   detection and the workspace root a monorepo installs at.
//! * [`node`] — which Node.js a build asks for, and resolving that request to a release.
//! * [`package_manager`] — npm, pnpm, Yarn or Bun, from `packageManager` or the lockfile,
//!   and the commands each runs.
//! * [`output`] — the output folder: the one planned, and the one a finished build wrote.
//! * [`server`] — server apps (Next.js's standalone server, a `[runtime] start`): the
//!   bundle, the start command and the static folders the proxy serves.
//! * [`static_check`] — framework set-ups that build a server app, with the change that
//!   makes them static.
//! * [`js_config`] — reading a setting out of a JS/TS config file without running it.
//! * [`repo_file`] — reading a checkout's files without following a hostile repository
//!   out of it.

pub mod decide;
pub mod js_config;
pub mod node;
mod npm_lock;
pub mod output;
pub mod package_manager;
pub mod presets;
pub mod project;
pub mod repo_file;
pub mod server;
pub mod static_check;

#[cfg(test)]
mod test_support;

pub use decide::{plan, Plan};
pub use node::{
    check_node_spec, parse_node_spec, pick_node_version, releases, NodeChoice, NodeSpec,
    NodeSpecError, DEFAULT_NODE, LTS_CODENAMES,
};
pub use output::{missing_output_hint, output_dir, OutputChoice, OutputError, OUTPUT_CANDIDATES};
pub use package_manager::{
    is_exact, parse_package_manager_field, PackageManager, PmChoice, BUNDLED_NPM, LOCKFILES,
};
pub use presets::{preset, Preset, PRESETS};
pub use project::workspace_root;
pub use repo_file::{read_repo_bytes, read_repo_file, RepoFileError};
pub use server::{start_words, AssetDir, ServerPlan};
