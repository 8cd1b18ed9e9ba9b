//! Throwaway projects for the planner's unit tests.

use super::{plan, Plan};
use crate::config::BuildConfig;

/// A temporary folder holding `files` (name, content), parents created.
pub(super) fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, body) in files {
        let path = d.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    d
}

/// The plan of a project made of `files`, with an empty configuration.
pub(super) fn plan_of(files: &[(&str, &str)]) -> Plan {
    let d = project(files);
    plan(
        d.path(),
        d.path(),
        &BuildConfig::default(),
        &Default::default(),
    )
}
