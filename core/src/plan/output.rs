//! The output folder: the one a plan expects (configured, the preset's, read from the
//! framework's own config where it says, else the first usual name) and the one a
//! finished build actually wrote, with what to change when there is none.

use std::path::Path;

use serde::Serialize;

use super::js_config::quoted_value_after;
use super::presets::Preset;
use super::project::Project;
use super::Plan;
use crate::config::BuildConfig;

/// Output folders tried in order when neither the configuration nor a preset names one
/// that exists.
pub const OUTPUT_CANDIDATES: &[&str] = &["dist", "build", "out", "public"];

/// The output folder and where the choice came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputChoice {
    /// Relative to the project folder; `.` for a static folder served as it is.
    pub dir: String,
    pub source: String,
}

/// Where the plan expects the static site: `build.output`, else the preset's folder,
/// else (when something is built) the first usual name, else the folder as it is.
pub(super) fn planned(
    cfg: &BuildConfig,
    framework: Option<&'static Preset>,
    project: &Project,
    built: bool,
) -> OutputChoice {
    match (&cfg.output, framework) {
        (Some(out), _) => OutputChoice {
            dir: out.clone(),
            source: "build.output in cdeploy.toml".into(),
        },
        (None, Some(preset)) => OutputChoice {
            dir: preset_output(preset, project),
            source: format!("the {} preset", preset.name),
        },
        (None, None) if built => OutputChoice {
            dir: OUTPUT_CANDIDATES[0].into(),
            source: format!(
                "the first of {} that the build writes",
                OUTPUT_CANDIDATES.join(", ")
            ),
        },
        (None, None) => OutputChoice {
            dir: ".".into(),
            source: "no build step: the folder as it is".into(),
        },
    }
}

/// The output folder of a preset, read from the framework's own config where it says.
fn preset_output(preset: &Preset, project: &Project) -> String {
    match preset.id {
        "angular" => angular_output(project).unwrap_or_else(|| preset.output.to_string()),
        "eleventy" => project
            .first_text(&[
                "eleventy.config.js",
                "eleventy.config.mjs",
                "eleventy.config.cjs",
                ".eleventy.js",
            ])
            .and_then(|(_, t)| quoted_value_after(&t, "output"))
            .filter(|o| crate::config::check_relative_path(o).is_ok())
            .unwrap_or_else(|| preset.output.to_string()),
        "sveltekit" => project
            .first_text(&["svelte.config.js", "svelte.config.mjs", "svelte.config.ts"])
            .and_then(|(_, t)| quoted_value_after(&t, "pages"))
            .filter(|o| crate::config::check_relative_path(o).is_ok())
            .unwrap_or_else(|| preset.output.to_string()),
        _ => preset.output.to_string(),
    }
}

/// Angular's browser output: `outputPath` of the build target in angular.json (a string
/// or `{base, browser}`), plus `browser/` for the application builder; the default is
/// `dist/<project>/browser`.
fn angular_output(project: &Project) -> Option<String> {
    let text = project.text("angular.json")?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let projects = json.get("projects")?.as_object()?;
    let (name, proj) = json
        .get("defaultProject")
        .and_then(|d| d.as_str())
        .and_then(|d| projects.get_key_value(d))
        .or_else(|| {
            projects
                .iter()
                .find(|(_, p)| p.get("projectType").and_then(|t| t.as_str()) == Some("application"))
        })
        .or_else(|| projects.iter().next())?;
    let build = proj
        .get("architect")
        .or_else(|| proj.get("targets"))?
        .get("build")?;
    let builder = build.get("builder").and_then(|b| b.as_str()).unwrap_or("");
    let options = build.get("options");
    let output_path = options.and_then(|o| o.get("outputPath"));
    let application = builder.ends_with(":application");
    let out = match output_path {
        Some(serde_json::Value::String(s)) if application => {
            format!("{}/browser", s.trim_end_matches('/'))
        }
        Some(serde_json::Value::String(s)) => s.trim_end_matches('/').to_string(),
        Some(serde_json::Value::Object(o)) => {
            let base = o.get("base").and_then(|b| b.as_str()).unwrap_or("dist");
            let browser = o
                .get("browser")
                .and_then(|b| b.as_str())
                .unwrap_or("browser");
            if browser.is_empty() {
                base.trim_end_matches('/').to_string()
            } else {
                format!("{}/{browser}", base.trim_end_matches('/'))
            }
        }
        _ if application => format!("dist/{name}/browser"),
        _ => format!("dist/{name}"),
    };
    crate::config::check_relative_path(&out).ok().map(|()| out)
}

/// Why a preset's output folder is missing after a build, when the framework says so
/// (what it wrote instead).
pub fn missing_output_hint(preset: &Preset, project_dir: &Path) -> Option<String> {
    match preset.id {
        "nextjs" if project_dir.join(".next").is_dir() => Some(
            "Next.js built a server app (.next/) and no static export: add `output: 'export'` to next.config \
             (then `next build` writes out/)"
                .into(),
        ),
        "nuxt" if project_dir.join(".output/server").is_dir() => Some(
            "Nuxt built a server app (.output/server) and no static site: build with `nuxt generate` \
             (the `generate` script), which writes .output/public"
                .into(),
        ),
        "sveltekit" if project_dir.join(".svelte-kit/output/server").is_dir() => Some(
            "SvelteKit built a server app: use @sveltejs/adapter-static in svelte.config.js".into(),
        ),
        _ => None,
    }
}

/// No output folder after a build, and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    /// `build.output` names a folder the build did not write.
    #[error("the output folder {0:?} (build.output) was not produced by the build")]
    NotProduced(String),
    /// The framework built a server app instead (see [`missing_output_hint`]).
    #[error("{0}")]
    ServerBuild(String),
    /// The preset's folder is missing and no usual one exists either.
    #[error("the build wrote no {dir}/, where {framework} puts its static site; set `output` in the [build] table of cdeploy.toml to the folder your build writes")]
    NoPresetOutput {
        dir: String,
        framework: &'static str,
    },
    /// Only `public/` exists, and it was in the source: an input folder, not a site.
    #[error("the build produced none of dist, build, out; public/ is this framework's input folder (its files are copied into the real output), not a built site. \
             Set `output` in the [build] table of cdeploy.toml to the folder your build writes, or make the framework export a static site \
             (Next.js: `output: 'export'` in next.config; Nuxt: `nuxt generate`, output .output/public)")]
    PublicIsInput,
    /// None of [`OUTPUT_CANDIDATES`] exists after a build.
    #[error("the build produced none of {}; set `output` in the [build] table of cdeploy.toml", OUTPUT_CANDIDATES.join(", "))]
    NoCandidate,
}

/// The folder to upload, once the build ran: the configured one, else the preset's,
/// else the first candidate that exists, else (only when nothing was built) the project
/// folder itself, a plain static site.
///
/// `public_was_input`: `public/` was in the source before the build. Vite, Next.js,
/// Nuxt, Astro, Create React App and Vue CLI copy it *into* their output; only tools
/// that create it (Gatsby) produce a site there. So after a build, a `public/` that was
/// already in the source is never taken for the output unless configured.
pub fn output_dir(
    dir: &Path,
    plan: &Plan,
    configured: bool,
    public_was_input: bool,
) -> Result<String, OutputError> {
    let built = plan.build.is_some();
    let out = &plan.output.dir;
    if configured {
        return if dir.join(out).is_dir() {
            Ok(out.clone())
        } else {
            Err(OutputError::NotProduced(out.clone()))
        };
    }
    let skip_public = built && public_was_input;
    if let Some(preset) = plan.framework {
        if dir.join(out).is_dir() && !(skip_public && out == "public") {
            return Ok(out.clone());
        }
        if let Some(hint) = missing_output_hint(preset, dir) {
            return Err(OutputError::ServerBuild(hint));
        }
    }
    if let Some(found) = OUTPUT_CANDIDATES
        .iter()
        .filter(|c| !(skip_public && **c == "public"))
        .find(|c| dir.join(c).is_dir())
    {
        return Ok(found.to_string());
    }
    if let Some(preset) = plan.framework {
        return Err(OutputError::NoPresetOutput {
            dir: out.clone(),
            framework: preset.name,
        });
    }
    if skip_public {
        return Err(OutputError::PublicIsInput);
    }
    if built {
        Err(OutputError::NoCandidate)
    } else {
        Ok(".".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan;
    use crate::plan::test_support::{plan_of, project};

    #[test]
    fn frameworks_are_detected_with_their_outputs() {
        let p = plan_of(&[(
            "package.json",
            r#"{"scripts":{"build":"nuxt build","generate":"nuxt generate"},"dependencies":{"nuxt":"4"}}"#,
        )]);
        assert_eq!(p.framework.unwrap().id, "nuxt");
        // A server by default (server_apps' build script); a static site with ssr off.
        assert_eq!(p.build.as_deref(), Some("npm run build"));
        let p = plan_of(&[
            (
                "package.json",
                r#"{"scripts":{"build":"nuxt build","generate":"nuxt generate"},"dependencies":{"nuxt":"4"}}"#,
            ),
            (
                "nuxt.config.ts",
                "export default defineNuxtConfig({ ssr: false })",
            ),
        ]);
        assert_eq!(p.build.as_deref(), Some("npm run generate"));
        assert_eq!(p.output.dir, ".output/public");
        let p = plan_of(&[(
            "package.json",
            r#"{"devDependencies":{"@11ty/eleventy":"3"}}"#,
        )]);
        assert_eq!(p.build.as_deref(), Some("npx --no-install eleventy"));
        assert_eq!(p.output.dir, "_site");
        let p = plan_of(&[
            (
                "package.json",
                r#"{"devDependencies":{"@11ty/eleventy":"3"}}"#,
            ),
            (
                "eleventy.config.js",
                "export default function() { return { dir: { input: 'src', output: 'www' } } }",
            ),
        ]);
        assert_eq!(p.output.dir, "www");
        let angular = r#"{"projects":{"shop":{"projectType":"application","architect":{"build":{"builder":"@angular/build:application","options":{}}}}}}"#;
        let p = plan_of(&[
            (
                "package.json",
                r#"{"scripts":{"build":"ng build"},"dependencies":{"@angular/core":"21"}}"#,
            ),
            ("angular.json", angular),
        ]);
        assert_eq!(p.output.dir, "dist/shop/browser");
        assert_eq!(p.spa, Some(true));
        let angular = r#"{"projects":{"shop":{"architect":{"build":{"builder":"@angular-devkit/build-angular:browser","options":{"outputPath":"dist/x"}}}}}}"#;
        let p = plan_of(&[
            ("package.json", r#"{"dependencies":{"@angular/core":"16"}}"#),
            ("angular.json", angular),
        ]);
        assert_eq!(p.output.dir, "dist/x");
        let p = plan_of(&[(
            "package.json",
            r#"{"dependencies":{"@docusaurus/core":"3"}}"#,
        )]);
        assert_eq!(
            (p.framework.unwrap().id, p.output.dir.as_str()),
            ("docusaurus", "build")
        );
        let p = plan_of(&[("package.json", r#"{"dependencies":{"gatsby":"5"}}"#)]);
        assert_eq!(p.output.dir, "public");
        let p = plan_of(&[("index.html", "hi")]);
        assert!(p.framework.is_none() && p.node.is_none());
        assert_eq!(
            (p.install, p.build, p.output.dir.as_str()),
            (None, None, ".")
        );
    }

    #[test]
    fn output_after_the_build() {
        let d = project(&[("index.html", "hi")]);
        let p = plan(
            d.path(),
            d.path(),
            &BuildConfig::default(),
            &Default::default(),
        );
        assert_eq!(output_dir(d.path(), &p, false, false).unwrap(), ".");
        let mut built = p.clone();
        built.build = Some("make".into());
        assert!(output_dir(d.path(), &built, false, false).is_err());
        let mut configured = built.clone();
        configured.output.dir = "dist".into();
        assert!(output_dir(d.path(), &configured, true, false).is_err());
        // public/ from the source is an input folder, never a build's output...
        std::fs::create_dir(d.path().join("public")).unwrap();
        let e = output_dir(d.path(), &built, false, true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("input folder") && e.contains("output: 'export'"),
            "{e}"
        );
        // ...but a public/ the build created is, and so is a configured one.
        assert_eq!(
            output_dir(d.path(), &built, false, false).unwrap(),
            "public"
        );
        configured.output.dir = "public".into();
        assert_eq!(
            output_dir(d.path(), &configured, true, true).unwrap(),
            "public"
        );
        // A Next.js server build says what to change.
        let d = project(&[
            ("package.json", r#"{"dependencies":{"next":"16"}}"#),
            (".next/BUILD_ID", "x"),
            ("public/robots.txt", ""),
        ]);
        let p = plan(
            d.path(),
            d.path(),
            &BuildConfig::default(),
            &Default::default(),
        );
        assert!(output_dir(d.path(), &p, false, true)
            .unwrap_err()
            .to_string()
            .contains("output: 'export'"));
    }

    #[test]
    fn missing_outputs_say_what_to_set() {
        let d = project(&[("package.json", r#"{"dependencies":{"astro":"5"}}"#)]);
        let p = plan(
            d.path(),
            d.path(),
            &BuildConfig::default(),
            &Default::default(),
        );
        assert_eq!(
            output_dir(d.path(), &p, false, false).unwrap_err().to_string(),
            "the build wrote no dist/, where Astro puts its static site; set `output` in the [build] table of cdeploy.toml to the folder your build writes"
        );
        assert_eq!(
            output_dir(d.path(), &p, true, false)
                .unwrap_err()
                .to_string(),
            "the output folder \"dist\" (build.output) was not produced by the build"
        );
        let d = project(&[("index.html", "hi"), ("public/a.txt", "")]);
        let mut p = plan(
            d.path(),
            d.path(),
            &BuildConfig::default(),
            &Default::default(),
        );
        p.build = Some("make".into());
        assert_eq!(
            output_dir(d.path(), &p, false, true).unwrap_err().to_string(),
            "the build produced none of dist, build, out; public/ is this framework's input folder (its files are copied into the real output), not a built site. \
             Set `output` in the [build] table of cdeploy.toml to the folder your build writes, or make the framework export a static site \
             (Next.js: `output: 'export'` in next.config; Nuxt: `nuxt generate`, output .output/public)"
        );
        std::fs::remove_dir_all(d.path().join("public")).unwrap();
        assert_eq!(
            output_dir(d.path(), &p, false, false).unwrap_err().to_string(),
            "the build produced none of dist, build, out, public; set `output` in the [build] table of cdeploy.toml"
        );
    }
}
