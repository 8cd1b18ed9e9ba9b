//! `cdeploy init`: write `cdeploy.toml`, with the framework's defaults detected by the
//! same presets builds use ([`cdeploy_core::plan`]). Interactive on a terminal; `--yes`
//! takes the defaults.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use cdeploy_core::config::{self, BuildConfig, ProjectConfig, SiteConfig};
use cdeploy_core::ids;
use cdeploy_core::plan::Plan;

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
    let plan = detect(g, &dir);
    // A server app has no output folder to name (naming one would make it static).
    let default_output = plan
        .framework
        .filter(|_| plan.server.is_none())
        .map(|_| plan.output.dir.clone());
    let (slug, output) = if interactive {
        ask(default_slug, default_output)?
    } else {
        (default_slug, default_output)
    };
    write(g, &file, slug, output, plan.spa)?;
    Ok(ExitStatus::Success)
}

/// The plan a build of `dir` would follow today, and what it says about the folder.
fn detect(g: &Globals, dir: &Path) -> Plan {
    let plan = cdeploy_core::plan::plan(dir, dir, &BuildConfig::default(), &Default::default());
    match plan.framework {
        Some(f) => g.printer.info(format!("Detected {}", f.name)),
        None if dir.join("package.json").exists() => g
            .printer
            .info("No known framework detected; using npm defaults"),
        None => g
            .printer
            .info("No package.json: the folder will be served as a static site"),
    }
    if let Some(problem) = &plan.problem {
        g.printer
            .warn(format!("as set up, a build would fail: {problem}"));
    }
    plan
}

/// Asks for the slug and the output folder, offering the detected defaults.
fn ask(
    default_slug: String,
    default_output: Option<String>,
) -> Result<(String, Option<String>), CliError> {
    let prompt = |e: dialoguer::Error| CliError::usage(format!("prompt failed: {e}"));
    let slug: String = dialoguer::Input::new()
        .with_prompt("Project slug")
        .default(default_slug)
        .validate_with(|s: &String| ids::validate_slug(s).map_err(|e| e.to_string()))
        .interact_text()
        .map_err(prompt)?;
    let output: String = dialoguer::Input::new()
        .with_prompt("Output folder (empty: detect after the build)")
        .default(default_output.unwrap_or_default())
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
    Ok((slug, (!output.is_empty()).then_some(output)))
}

/// Writes `cdeploy.toml` with the answers.
fn write(
    g: &Globals,
    file: &Path,
    slug: String,
    output: Option<String>,
    spa: Option<bool>,
) -> Result<(), CliError> {
    let cfg = ProjectConfig {
        slug: Some(slug),
        build: BuildConfig {
            output,
            ..Default::default()
        },
        site: SiteConfig {
            spa,
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
    std::fs::write(file, text)
        .map_err(|e| CliError::usage(format!("cannot write {}: {e}", file.display())))?;
    g.printer.info(format!(
        "Wrote {}; deploy with `cdeploy deploy`",
        file.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use cdeploy_core::config::BuildConfig;
    use cdeploy_core::plan::plan;

    /// `init` writes what a build would do anyway: the builder's own presets.
    #[test]
    fn writes_the_builders_presets() {
        let d = tempfile::tempdir().unwrap();
        let out = |json: &str| {
            std::fs::write(d.path().join("package.json"), json).unwrap();
            let p = plan(
                d.path(),
                d.path(),
                &BuildConfig::default(),
                &Default::default(),
            );
            (p.framework.map(|f| f.id), p.output.dir)
        };
        assert_eq!(
            out(r#"{"devDependencies":{"vite":"^6"}}"#),
            (Some("vite"), "dist".into())
        );
        assert_eq!(
            out(r#"{"dependencies":{"nuxt":"4"}}"#),
            (Some("nuxt"), ".output/public".into())
        );
        std::fs::write(
            d.path().join("angular.json"),
            r#"{"projects":{"shop":{"architect":{"build":{"builder":"@angular/build:application"}}}}}"#,
        )
        .unwrap();
        assert_eq!(
            out(r#"{"dependencies":{"@angular/core":"21"}}"#),
            (Some("angular"), "dist/shop/browser".into())
        );
        std::fs::remove_file(d.path().join("angular.json")).unwrap();
        assert_eq!(
            out(r#"{"devDependencies":{"@11ty/eleventy":"3"}}"#),
            (Some("eleventy"), "_site".into())
        );
        assert_eq!(
            out(r#"{"dependencies":{"@docusaurus/core":"3"}}"#),
            (Some("docusaurus"), "build".into())
        );
        assert_eq!(out("{}").0, None);
    }
}
