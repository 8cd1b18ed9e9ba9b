//! Detecting what the configuration leaves out: package manager, install and build
//! commands, and the output folder.

use std::path::Path;

use cdeploy_core::config::BuildConfig;

/// What will run, and why (the notes are shown in the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Where the install runs: the project, or the workspace root above it that holds
    /// the lockfile (npm, pnpm and yarn workspaces).
    pub install_dir: std::path::PathBuf,
    pub install: Option<String>,
    pub build: Option<String>,
    pub notes: Vec<String>,
}

/// Lockfiles, in the order their package managers are detected.
pub const LOCKFILES: &[&str] = &[
    "pnpm-lock.yaml",
    "yarn.lock",
    "bun.lock",
    "bun.lockb",
    "package-lock.json",
    "npm-shrinkwrap.json",
];

/// Output folders tried in order when `build.output` is not set.
pub const OUTPUT_CANDIDATES: &[&str] = &["dist", "build", "out", "public"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pm {
    Npm,
    Pnpm,
    Yarn,
    Bun,
}

impl Pm {
    fn name(self) -> &'static str {
        match self {
            Pm::Npm => "npm",
            Pm::Pnpm => "pnpm",
            Pm::Yarn => "yarn",
            Pm::Bun => "bun",
        }
    }
}

/// Picks the install and build commands for the project in `dir`.
/// `root` is the checkout: files are read only where they stay inside it.
pub fn plan(root: &Path, dir: &Path, cfg: &BuildConfig) -> Plan {
    let mut notes = Vec::new();
    let package_json = crate::read_repo_file(root, dir, "package.json")
        .ok()
        .flatten()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    // In a monorepo the lockfile is at the workspace root, above the project.
    let install_dir = workspace_root(root, dir);
    if install_dir != dir {
        let shown = install_dir
            .strip_prefix(root)
            .ok()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(
                || "the repository root".to_string(),
                |p| p.display().to_string(),
            );
        notes.push(format!(
            "Workspace: installing at {shown}, where the lockfile is; building in {}",
            dir.strip_prefix(root).unwrap_or(dir).display()
        ));
    }
    let at = &install_dir;
    let (pm, lockfile) = if at.join("pnpm-lock.yaml").exists() {
        (Pm::Pnpm, Some("pnpm-lock.yaml"))
    } else if at.join("yarn.lock").exists() {
        (Pm::Yarn, Some("yarn.lock"))
    } else if at.join("bun.lockb").exists() || at.join("bun.lock").exists() {
        (Pm::Bun, Some("bun.lock"))
    } else if at.join("package-lock.json").exists() || at.join("npm-shrinkwrap.json").exists() {
        (Pm::Npm, Some("package-lock.json"))
    } else {
        (Pm::Npm, None)
    };

    let install = match &cfg.install {
        Some(cmd) if cmd.trim().is_empty() => None,
        Some(cmd) => Some(cmd.clone()),
        None if package_json.is_none() => None,
        None => {
            let cmd = match (pm, lockfile) {
                (Pm::Npm, Some(_)) => "npm ci",
                (Pm::Npm, None) => "npm install",
                (Pm::Pnpm, _) => "pnpm install --frozen-lockfile",
                (Pm::Yarn, _) => "yarn install --frozen-lockfile",
                (Pm::Bun, _) => "bun install --frozen-lockfile",
            };
            notes.push(match lockfile {
                Some(l) => format!("Detected {l}: installing with `{cmd}`"),
                None => format!("No lockfile: installing with `{cmd}`"),
            });
            Some(cmd.to_string())
        }
    };

    let build = match &cfg.command {
        Some(cmd) if cmd.trim().is_empty() => None,
        Some(cmd) => Some(cmd.clone()),
        None => {
            let has_build_script = package_json
                .as_ref()
                .and_then(|p| p.get("scripts"))
                .and_then(|s| s.get("build"))
                .is_some_and(|b| b.is_string());
            has_build_script.then(|| format!("{} run build", pm.name()))
        }
    };
    Plan {
        install_dir,
        install,
        build,
        notes,
    }
}

/// The nearest folder from `dir` up to `root` that holds a lockfile (a workspace root),
/// else `dir` itself.
pub fn workspace_root(root: &Path, dir: &Path) -> std::path::PathBuf {
    let mut at = dir;
    loop {
        if LOCKFILES.iter().any(|l| at.join(l).is_file()) {
            return at.to_path_buf();
        }
        if at == root {
            return dir.to_path_buf();
        }
        match at.parent() {
            Some(parent) if parent.starts_with(root) => at = parent,
            _ => return dir.to_path_buf(),
        }
    }
}

/// The folder to upload: the configured one, else the first candidate that exists, else
/// (only when nothing was built) the project folder itself — a plain static site.
///
/// `public_was_input`: `public/` was in the source before the build. Vite, Next.js,
/// Nuxt, Astro, Create React App and Vue CLI copy it *into* their output; only tools
/// that create it (Gatsby, Hugo) produce a site there. So after a build, a `public/`
/// that was already in the source is never taken for the output.
pub fn output_dir(
    dir: &Path,
    configured: Option<&str>,
    built: bool,
    public_was_input: bool,
) -> Result<String, String> {
    if let Some(out) = configured {
        return if dir.join(out).is_dir() {
            Ok(out.to_string())
        } else {
            Err(format!(
                "the output folder {out:?} (build.output) was not produced by the build"
            ))
        };
    }
    let skip_public = built && public_was_input;
    if let Some(found) = OUTPUT_CANDIDATES
        .iter()
        .filter(|c| !(skip_public && **c == "public"))
        .find(|c| dir.join(c).is_dir())
    {
        return Ok(found.to_string());
    }
    if skip_public {
        return Err(
            "the build produced none of dist, build, out; public/ is this framework's input folder (its files are copied into the real output), not a built site. \
             Set `output` in the [build] table of cdeploy.toml to the folder your build writes, or make the framework export a static site \
             (Next.js: `output: 'export'` in next.config; Nuxt: `nuxt generate`, output .output/public)"
                .to_string(),
        );
    }
    if built {
        Err(format!(
            "the build produced none of {}; set `output` in the [build] table of cdeploy.toml",
            OUTPUT_CANDIDATES.join(", ")
        ))
    } else {
        Ok(".".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, body) in files {
            std::fs::write(d.path().join(name), body).unwrap();
        }
        d
    }

    #[test]
    fn npm_with_lockfile() {
        let d = project(&[
            ("package.json", r#"{"scripts":{"build":"vite build"}}"#),
            ("package-lock.json", "{}"),
        ]);
        let p = plan(d.path(), d.path(), &BuildConfig::default());
        assert_eq!(p.install.as_deref(), Some("npm ci"));
        assert_eq!(p.build.as_deref(), Some("npm run build"));
    }

    #[test]
    fn pnpm_and_yarn() {
        let d = project(&[
            ("package.json", r#"{"scripts":{"build":"x"}}"#),
            ("pnpm-lock.yaml", ""),
        ]);
        let p = plan(d.path(), d.path(), &BuildConfig::default());
        assert_eq!(p.install.as_deref(), Some("pnpm install --frozen-lockfile"));
        assert_eq!(p.build.as_deref(), Some("pnpm run build"));
        let d = project(&[("package.json", "{}"), ("yarn.lock", "")]);
        let p = plan(d.path(), d.path(), &BuildConfig::default());
        assert_eq!(p.install.as_deref(), Some("yarn install --frozen-lockfile"));
        assert_eq!(p.build, None);
    }

    #[test]
    fn workspaces_install_at_their_root() {
        let d = project(&[
            ("package.json", r#"{"workspaces":["apps/*"]}"#),
            ("package-lock.json", "{}"),
        ]);
        let web = d.path().join("apps/web");
        std::fs::create_dir_all(&web).unwrap();
        std::fs::write(web.join("package.json"), r#"{"scripts":{"build":"x"}}"#).unwrap();
        let p = plan(d.path(), &web, &BuildConfig::default());
        assert_eq!(p.install_dir, d.path());
        assert_eq!(p.install.as_deref(), Some("npm ci"));
        assert_eq!(p.build.as_deref(), Some("npm run build"));
        assert!(
            p.notes[0].contains("installing at the repository root"),
            "{:?}",
            p.notes
        );
        // A project with its own lockfile installs where it is.
        std::fs::write(web.join("pnpm-lock.yaml"), "").unwrap();
        let p = plan(d.path(), &web, &BuildConfig::default());
        assert_eq!(p.install_dir, web);
        assert_eq!(p.install.as_deref(), Some("pnpm install --frozen-lockfile"));
    }

    #[test]
    fn static_site_and_overrides() {
        let d = project(&[("index.html", "hi")]);
        let p = plan(d.path(), d.path(), &BuildConfig::default());
        assert_eq!((p.install, p.build), (None, None));
        assert_eq!(output_dir(d.path(), None, false, false).unwrap(), ".");
        assert!(output_dir(d.path(), None, true, false).is_err());
        assert!(output_dir(d.path(), Some("dist"), true, false).is_err());
        // public/ from the source is an input folder, never a build's output...
        std::fs::create_dir(d.path().join("public")).unwrap();
        let e = output_dir(d.path(), None, true, true).unwrap_err();
        assert!(
            e.contains("input folder") && e.contains("output: 'export'"),
            "{e}"
        );
        // ...but a public/ the build created is (Gatsby), and so is a configured one.
        assert_eq!(output_dir(d.path(), None, true, false).unwrap(), "public");
        assert_eq!(
            output_dir(d.path(), Some("public"), true, true).unwrap(),
            "public"
        );
        let cfg = BuildConfig {
            install: Some("make deps".into()),
            command: Some("make".into()),
            ..Default::default()
        };
        let p = plan(d.path(), d.path(), &cfg);
        assert_eq!(p.install.as_deref(), Some("make deps"));
        assert_eq!(p.build.as_deref(), Some("make"));
    }
}
