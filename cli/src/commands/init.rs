//! `cdeploy init`: write `cdeploy.toml`, with the framework's defaults detected from
//! `package.json`. Interactive on a terminal; `--yes` takes the defaults.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use cdeploy_core::config::{self, BuildConfig, ProjectConfig, SiteConfig};
use cdeploy_core::ids;

use crate::exit::{CliError, CliResult, ExitStatus};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Project directory.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Take the detected defaults without asking.
    #[arg(short, long)]
    yes: bool,
    /// Overwrite an existing cdeploy.toml.
    #[arg(long)]
    force: bool,
}

/// What a framework needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framework {
    pub name: &'static str,
    pub output: &'static str,
    pub spa: Option<bool>,
}

const FRAMEWORKS: &[(&str, Framework)] = &[
    (
        "next",
        Framework {
            name: "Next.js (static export)",
            output: "out",
            spa: Some(false),
        },
    ),
    (
        "astro",
        Framework {
            name: "Astro",
            output: "dist",
            spa: Some(false),
        },
    ),
    (
        "@sveltejs/kit",
        Framework {
            name: "SvelteKit (static adapter)",
            output: "build",
            spa: None,
        },
    ),
    (
        "nuxt",
        Framework {
            name: "Nuxt (generate)",
            output: ".output/public",
            spa: None,
        },
    ),
    (
        "@angular/core",
        Framework {
            name: "Angular",
            output: "dist",
            spa: Some(true),
        },
    ),
    (
        "react-scripts",
        Framework {
            name: "Create React App",
            output: "build",
            spa: Some(true),
        },
    ),
    (
        "@vue/cli-service",
        Framework {
            name: "Vue CLI",
            output: "dist",
            spa: Some(true),
        },
    ),
    (
        "vite",
        Framework {
            name: "Vite",
            output: "dist",
            spa: Some(true),
        },
    ),
];

/// Detects the framework from `package.json` dependencies.
pub fn detect(dir: &Path) -> Option<Framework> {
    let text = std::fs::read_to_string(dir.join("package.json")).ok()?;
    let pkg: serde_json::Value = serde_json::from_str(&text).ok()?;
    let has = |dep: &str| {
        ["dependencies", "devDependencies"]
            .iter()
            .any(|k| pkg.get(k).and_then(|d| d.get(dep)).is_some())
    };
    FRAMEWORKS
        .iter()
        .find(|(dep, _)| has(dep))
        .map(|(_, f)| f.clone())
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let dir = args
        .dir
        .canonicalize()
        .map_err(|e| CliError::usage(format!("{}: {e}", args.dir.display())))?;
    let file = dir.join(config::FILE_NAME);
    if file.exists() && !args.force {
        return Err(
            CliError::usage(format!("{} already exists", file.display()))
                .with_hint("pass --force to overwrite it"),
        );
    }
    let interactive = !args.yes;
    if interactive && !std::io::stdin().is_terminal() {
        return Err(
            CliError::usage("cdeploy init asks questions, but stdin is not a terminal")
                .with_hint("pass --yes to take the defaults"),
        );
    }
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("site");
    let default_slug = ids::sanitize_slug(name).unwrap_or_else(|| "my-site".to_string());
    let framework = detect(&dir);
    match &framework {
        Some(f) => g.printer.info(format!("Detected {}", f.name)),
        None if dir.join("package.json").exists() => g
            .printer
            .info("No known framework detected; using npm defaults"),
        None => g
            .printer
            .info("No package.json: the folder will be served as a static site"),
    }
    let default_output = framework.as_ref().map(|f| f.output.to_string());

    let (slug, output) = if interactive {
        let prompt = |e: dialoguer::Error| CliError::usage(format!("prompt failed: {e}"));
        let slug: String = dialoguer::Input::new()
            .with_prompt("Project slug")
            .default(default_slug)
            .validate_with(|s: &String| ids::validate_slug(s).map_err(|e| e.to_string()))
            .interact_text()
            .map_err(prompt)?;
        let output: String = dialoguer::Input::new()
            .with_prompt("Output folder (empty: detect after the build)")
            .default(default_output.clone().unwrap_or_default())
            .allow_empty(true)
            .validate_with(|s: &String| {
                if s.is_empty() {
                    Ok(())
                } else {
                    config::check_relative_path(s)
                }
            })
            .interact_text()
            .map_err(prompt)?;
        (slug, (!output.is_empty()).then_some(output))
    } else {
        (default_slug, default_output)
    };

    let cfg = ProjectConfig {
        slug: Some(slug),
        build: BuildConfig {
            output,
            ..Default::default()
        },
        site: SiteConfig {
            spa: framework.as_ref().and_then(|f| f.spa),
            clean_urls: None,
            require_index: None,
        },
        ..Default::default()
    };
    let text = format!(
        "# cdeploy configuration; every key is optional (see docs/config.md in cdeploy)\n{}",
        toml::to_string_pretty(&cfg)
            .map_err(|e| CliError::usage(format!("cannot write the file: {e}")))?
    );
    std::fs::write(&file, text)
        .map_err(|e| CliError::usage(format!("cannot write {}: {e}", file.display())))?;
    g.printer.info(format!(
        "Wrote {}; deploy with `cdeploy deploy`",
        file.display()
    ));
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_vite_and_next() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("package.json"),
            r#"{"devDependencies":{"vite":"^6"}}"#,
        )
        .unwrap();
        assert_eq!(detect(d.path()).unwrap().output, "dist");
        std::fs::write(
            d.path().join("package.json"),
            r#"{"dependencies":{"next":"15","react":"19"}}"#,
        )
        .unwrap();
        assert_eq!(detect(d.path()).unwrap().output, "out");
        std::fs::write(d.path().join("package.json"), r#"{}"#).unwrap();
        assert!(detect(d.path()).is_none());
    }
}
