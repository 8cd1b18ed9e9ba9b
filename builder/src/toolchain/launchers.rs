//! The launchers a build's `PATH` starts with (`node`, `npm`, `npx`, `pnpm`, `yarn`,
//! `bun`…): small shell scripts that run the fetched toolchain where builds see it.

use std::path::{Path, PathBuf};

use cdeploy_core::plan::PackageManager;

use super::files::set_mode;
use super::Toolchain;

/// The launchers a build's `PATH` starts with, written into `bin` (host side); `seen`
/// maps a fetched folder to where build commands see it.
pub fn write_launchers(
    bin: &Path,
    tc: &Toolchain,
    seen: impl Fn(&Path) -> PathBuf,
) -> std::io::Result<()> {
    std::fs::create_dir_all(bin)?;
    let node = seen(&tc.node.dir).join("bin/node");
    let npm = seen(&tc.npm.dir);
    let mut launchers: Vec<(String, String)> = vec![
        ("node".into(), format!("exec {} \"$@\"", sh_quote(&node))),
        (
            "npm".into(),
            js_launcher(&node, &npm.join("bin/npm-cli.js")),
        ),
        (
            "npx".into(),
            js_launcher(&node, &npm.join("bin/npx-cli.js")),
        ),
    ];
    if let Some((pm, f)) = &tc.pm {
        launchers.extend(pm_launchers(*pm, &node, &seen(&f.dir)));
    }
    for (name, body) in launchers {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n"))?;
        set_mode(&path, 0o755);
    }
    set_mode(bin, 0o755);
    Ok(())
}

/// The launchers of a package manager other than npm, kept in `dir`.
fn pm_launchers(pm: PackageManager, node: &Path, dir: &Path) -> Vec<(String, String)> {
    let mut launchers: Vec<(String, String)> = Vec::new();
    match pm {
        PackageManager::Pnpm => {
            launchers.push(("pnpm".into(), js_launcher(node, &dir.join("bin/pnpm.cjs"))));
            launchers.push(("pnpx".into(), js_launcher(node, &dir.join("bin/pnpx.cjs"))));
        }
        PackageManager::YarnClassic | PackageManager::YarnBerry => {
            for name in ["yarn", "yarnpkg"] {
                launchers.push((name.into(), js_launcher(node, &dir.join("bin/yarn.js"))));
            }
        }
        PackageManager::Bun => {
            let bun = dir.join("bin/bun");
            launchers.push(("bun".into(), format!("exec {} \"$@\"", sh_quote(&bun))));
            launchers.push(("bunx".into(), format!("exec {} x \"$@\"", sh_quote(&bun))));
        }
        PackageManager::Npm => {}
    }
    launchers
}

fn js_launcher(node: &Path, script: &Path) -> String {
    format!("exec {} {} \"$@\"", sh_quote(node), sh_quote(script))
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}
