//! The build's toolchain: Node.js and the package manager the plan asks for, fetched
//! (or found kept), mounted read-only into the cell, with launchers first on `PATH`.

use std::path::Path;

use cdeploy_core::event::Step;
use cdeploy_core::plan::Plan;

use super::Build;
use crate::toolchain::{self, Toolchain};
use crate::BuildError;

/// The toolchain of a plan that names Node.js and a package manager, its notes in the
/// log.
pub(super) async fn provide(b: &Build<'_>, plan: &Plan) -> Result<Option<Toolchain>, BuildError> {
    let (Some(node), Some(pm)) = (&plan.node, &plan.package_manager) else {
        return Ok(None);
    };
    let tc = b.ws.toolchains.provide(node, pm).await?;
    for line in &tc.notes {
        b.say(Step::Install, line.clone()).await;
    }
    Ok(Some(tc))
}

/// Mounts the toolchain read-only into the build's cell and writes its launchers;
/// returns the `PATH` build commands get (launchers first, then Node's own `bin`).
pub(super) fn mount(b: &Build<'_>, tc: &Toolchain) -> Result<String, BuildError> {
    let mut binds = vec![
        (tc.node.dir.clone(), "/opt/cdeploy/node"),
        (tc.npm.dir.clone(), "/opt/cdeploy/npm"),
    ];
    if let Some((_, f)) = &tc.pm {
        binds.push((f.dir.clone(), "/opt/cdeploy/pm"));
    }
    let bin = b.ws.work_dir.join("bin");
    binds.push((bin.clone(), "/opt/cdeploy/bin"));
    let seen = b.cell.mount_tools(&binds);
    let seen_of = |host: &Path| {
        binds
            .iter()
            .zip(&seen)
            .find(|((h, _), _)| h == host)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| host.to_path_buf())
    };
    toolchain::write_launchers(&bin, tc, seen_of)
        .map_err(|e| BuildError::failed(format!("cannot write the toolchain's launchers: {e}")))?;
    Ok(format!(
        "{}:{}:{}",
        seen_of(&bin).display(),
        seen_of(&tc.node.dir).join("bin").display(),
        b.ws.path
    ))
}
