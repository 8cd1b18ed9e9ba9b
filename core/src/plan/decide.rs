//! The [`Plan`] — what a build will run and why — and [`plan()`], which reads a project
//! and decides everything its configuration leaves out.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::node::{node_version, NodeChoice};
use super::output::{self, OutputChoice};
use super::package_manager::{package_manager, PmChoice};
use super::presets::Preset;
use super::project::{rel_display, workspace_root, Project};
use super::server::{server_plan, ServerPlan};
use super::static_check::static_problem;
use crate::config::{BuildConfig, RuntimeConfig};

/// What a build will run, and why (the notes are shown in the log).
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The detected framework (`None`: a plain static folder, or unknown tooling).
    #[serde(serialize_with = "ser_preset")]
    pub framework: Option<&'static Preset>,
    /// Node.js, when there is a package.json.
    pub node: Option<NodeChoice>,
    pub package_manager: Option<PmChoice>,
    /// Where the install runs: the project, or the workspace root above it that holds
    /// the lockfile (npm, pnpm and yarn workspaces).
    #[serde(skip)]
    pub install_dir: PathBuf,
    /// `install_dir` relative to the repository (`.` for its root).
    pub install_root: String,
    pub install: Option<String>,
    pub build: Option<String>,
    pub output: OutputChoice,
    pub spa: Option<bool>,
    /// A server app: its bundle, start command and the static folders the proxy serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerPlan>,
    /// A configuration that cannot give a static site, with the exact change to make:
    /// the build fails with it before installing anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub notes: Vec<String>,
}

fn ser_preset<S: serde::Serializer>(p: &Option<&'static Preset>, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct P {
        id: &'static str,
        name: &'static str,
    }
    p.map(|p| P {
        id: p.id,
        name: p.name,
    })
    .serialize(s)
}

/// Reads the project in `dir` (inside the checkout `root`) and decides everything the
/// configuration (`[build]` and `[runtime]`) leaves out. Files are read only where they
/// stay inside `root`.
pub fn plan(root: &Path, dir: &Path, cfg: &BuildConfig, runtime: &RuntimeConfig) -> Plan {
    let project = Project::read(root, dir);
    // In a monorepo the lockfile is at the workspace root, above the project.
    let install_dir = workspace_root(root, dir);
    let install_root = rel_display(root, &install_dir);
    let mut notes = if install_dir != dir {
        vec![workspace_note(root, dir, &install_root)]
    } else {
        Vec::new()
    };
    let framework = project.framework();
    let pm = project
        .package_json
        .as_ref()
        .map(|_| package_manager(root, &install_dir, &project));
    let node = project
        .package_json
        .as_ref()
        .map(|_| node_version(root, dir, &project, cfg));
    let install = install_command(cfg, pm.as_ref());
    let mut build = build_command(cfg, pm.as_ref(), framework, &project);
    let output = output::planned(cfg, framework, &project, build.is_some());
    let (server, mut problem) = match server_plan(
        root,
        &install_dir,
        &project,
        framework,
        cfg,
        runtime,
        pm.as_ref().map(|p| p.name),
    ) {
        Ok(server) => (server, None),
        Err(why) => (None, Some(format!("[runtime] start {why}"))),
    };
    if let Some(s) = &server {
        notes.push(s.describe());
        // A server app builds with its own script (Nuxt: `build`, not `generate`).
        if let (Some((script, exec)), Some(pm), None) = (s.build, pm.as_ref(), &cfg.command) {
            build = Some(if project.has_script(script) {
                pm.name.run_script(script)
            } else {
                pm.name.exec(exec)
            });
        }
    }
    // A configured build command is the user's own: no preset check second-guesses it;
    // a server app is run as one.
    if problem.is_none() && server.is_none() {
        problem = match (framework, &cfg.command, &cfg.output) {
            (Some(preset), None, None) => static_problem(preset, &project),
            _ => None,
        };
    }
    Plan {
        framework,
        node,
        package_manager: pm,
        install_dir,
        install_root,
        install,
        build,
        spa: if server.is_some() {
            Some(false)
        } else {
            framework.and_then(|p| p.spa)
        },
        output,
        server,
        problem,
        notes,
    }
}

/// The log line of a project that installs at a workspace root above it.
fn workspace_note(root: &Path, dir: &Path, install_root: &str) -> String {
    let shown = if install_root == "." {
        "the repository root"
    } else {
        install_root
    };
    format!(
        "Workspace: installing at {shown}, where the lockfile is; building in {}",
        rel_display(root, dir)
    )
}

/// `build.install` (empty: none), else the package manager's frozen install.
fn install_command(cfg: &BuildConfig, pm: Option<&PmChoice>) -> Option<String> {
    match &cfg.install {
        Some(cmd) if cmd.trim().is_empty() => None,
        Some(cmd) => Some(cmd.clone()),
        None => pm.map(|pm| pm.name.frozen_install(pm.has_lockfile).to_string()),
    }
}

/// `build.command` (empty: none), else the preset's script when package.json has it,
/// else the preset's tool through the package manager, else a `build` script.
fn build_command(
    cfg: &BuildConfig,
    pm: Option<&PmChoice>,
    framework: Option<&'static Preset>,
    project: &Project,
) -> Option<String> {
    match &cfg.command {
        Some(cmd) if cmd.trim().is_empty() => None,
        Some(cmd) => Some(cmd.clone()),
        None => match (pm, framework) {
            (Some(pm), Some(preset)) => Some(
                preset
                    .scripts
                    .iter()
                    .find(|s| project.has_script(s))
                    .map(|s| pm.name.run_script(s))
                    .unwrap_or_else(|| pm.name.exec(preset.exec)),
            ),
            (Some(pm), None) => project
                .has_script("build")
                .then(|| pm.name.run_script("build")),
            (None, _) => None,
        },
    }
}

impl Plan {
    /// The log lines that say what was chosen and why (the toolchain's own lines, with
    /// exact versions, come from the builder).
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(f) = self.framework {
            lines.push(format!("Framework: {}", f.name));
        }
        lines.extend(self.notes.iter().cloned());
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::test_support::{plan_of, project};

    #[test]
    fn npm_with_lockfile() {
        let p = plan_of(&[
            (
                "package.json",
                r#"{"scripts":{"build":"vite build"},"devDependencies":{"vite":"7"}}"#,
            ),
            ("package-lock.json", "{}"),
        ]);
        assert_eq!(p.framework.unwrap().id, "vite");
        assert_eq!(p.install.as_deref(), Some("npm ci"));
        assert_eq!(p.build.as_deref(), Some("npm run build"));
        assert_eq!(p.output.dir, "dist");
        assert_eq!(p.package_manager.unwrap().source, "from package-lock.json");
        assert_eq!(p.node.unwrap().source, "the default");
    }

    #[test]
    fn workspaces_install_at_their_root() {
        let d = project(&[
            ("package.json", r#"{"workspaces":["apps/*"]}"#),
            ("package-lock.json", "{}"),
            (".nvmrc", "v22.12.0\n"),
            ("apps/web/package.json", r#"{"scripts":{"build":"x"}}"#),
        ]);
        let web = d.path().join("apps/web");
        let p = plan(
            d.path(),
            &web,
            &BuildConfig::default(),
            &RuntimeConfig::default(),
        );
        assert_eq!(p.install_dir, d.path());
        assert_eq!(p.install_root, ".");
        assert_eq!(p.install.as_deref(), Some("npm ci"));
        assert_eq!(p.build.as_deref(), Some("npm run build"));
        assert!(
            p.notes[0].contains("installing at the repository root"),
            "{:?}",
            p.notes
        );
        let node = p.node.unwrap();
        assert_eq!(
            (node.spec.as_str(), node.source.as_str()),
            ("v22.12.0", ".nvmrc")
        );
        // A project with its own lockfile installs where it is.
        std::fs::write(web.join("pnpm-lock.yaml"), "").unwrap();
        let p = plan(
            d.path(),
            &web,
            &BuildConfig::default(),
            &RuntimeConfig::default(),
        );
        assert_eq!(p.install_dir, web);
        assert_eq!(p.install.as_deref(), Some("pnpm install --frozen-lockfile"));
    }
}
