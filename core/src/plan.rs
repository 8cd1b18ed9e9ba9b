//! What a build will do when `cdeploy.toml` leaves things out: the framework, the Node.js
//! version, the package manager, the install and build commands and the output folder.
//!
//! One table of framework presets ([`PRESETS`]) serves the builder's defaults, `cdeploy
//! init` and `cdeploy deploy --dry`, so what `init` writes is what a build would have
//! done anyway. Everything here only reads files; fetching the chosen toolchain is the
//! builder's job.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::BuildConfig;

/// The Node.js line used when the project names none: the current LTS line every
/// supported framework builds with. A major resolves to its newest release.
pub const DEFAULT_NODE: &str = "24";

/// Lockfiles, in the order their package managers are detected.
pub const LOCKFILES: &[&str] = &[
    "pnpm-lock.yaml",
    "yarn.lock",
    "bun.lock",
    "bun.lockb",
    "package-lock.json",
    "npm-shrinkwrap.json",
];

/// Output folders tried in order when neither the configuration nor a preset names one
/// that exists.
pub const OUTPUT_CANDIDATES: &[&str] = &["dist", "build", "out", "public"];

/// Largest repository file read here (`package.json`, configs, lockfiles).
const MAX_REPO_FILE: u64 = 64 << 20;

// ---------------------------------------------------------------------------------------
// Package managers

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackageManager {
    Npm,
    Pnpm,
    /// Yarn 1.
    YarnClassic,
    /// Yarn 2 and later.
    YarnBerry,
    Bun,
}

impl PackageManager {
    /// The command users type.
    pub fn command(self) -> &'static str {
        match self {
            PackageManager::Npm => "npm",
            PackageManager::Pnpm => "pnpm",
            PackageManager::YarnClassic | PackageManager::YarnBerry => "yarn",
            PackageManager::Bun => "bun",
        }
    }

    /// How it is named in the log.
    pub fn label(self) -> &'static str {
        match self {
            PackageManager::Npm => "npm",
            PackageManager::Pnpm => "pnpm",
            PackageManager::YarnClassic => "Yarn classic",
            PackageManager::YarnBerry => "Yarn",
            PackageManager::Bun => "Bun",
        }
    }

    /// The npm registry package that ships it.
    pub fn registry_package(self) -> &'static str {
        match self {
            PackageManager::Npm => "npm",
            PackageManager::Pnpm => "pnpm",
            PackageManager::YarnClassic => "yarn",
            PackageManager::YarnBerry => "@yarnpkg/cli-dist",
            PackageManager::Bun => "@oven/bun-linux-x64",
        }
    }

    /// The install that never changes the lockfile (and fails when it is out of date).
    pub fn frozen_install(self, has_lockfile: bool) -> &'static str {
        match (self, has_lockfile) {
            (PackageManager::Npm, true) => "npm ci",
            (PackageManager::Npm, false) => "npm install",
            (PackageManager::Pnpm, true) => "pnpm install --frozen-lockfile",
            (PackageManager::Pnpm, false) => "pnpm install",
            (PackageManager::YarnClassic, true) => "yarn install --frozen-lockfile",
            (PackageManager::YarnClassic, false) => "yarn install",
            (PackageManager::YarnBerry, true) => "yarn install --immutable",
            (PackageManager::YarnBerry, false) => "yarn install",
            (PackageManager::Bun, true) => "bun install --frozen-lockfile",
            (PackageManager::Bun, false) => "bun install",
        }
    }

    /// Runs a package script.
    pub fn run_script(self, script: &str) -> String {
        format!("{} run {script}", self.command())
    }

    /// Runs a binary of an installed dependency.
    pub fn exec(self, bin: &str) -> String {
        match self {
            PackageManager::Npm => format!("npx --no-install {bin}"),
            PackageManager::Pnpm => format!("pnpm exec {bin}"),
            PackageManager::YarnClassic | PackageManager::YarnBerry => format!("yarn {bin}"),
            PackageManager::Bun => format!("bun run {bin}"),
        }
    }
}

/// The package manager, its version (exact, or a major to resolve) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PmChoice {
    pub name: PackageManager,
    pub version: String,
    /// Corepack-style hash from `packageManager` (`sha512.<hex>`, `sha224.<hex>`…): the
    /// fetched package must match it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    pub source: String,
    #[serde(skip)]
    pub has_lockfile: bool,
}

/// The requested Node.js version and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeChoice {
    /// As written: `22.12.0`, `22`, `>=22.12`, `lts/jod`…
    pub spec: String,
    /// `.nvmrc`, `package.json engines.node`, `the default`…
    pub source: String,
}

// ---------------------------------------------------------------------------------------
// Framework presets

/// What a framework needs to be deployed as a static site.
#[derive(Debug)]
pub struct Preset {
    /// Stable id, used in `--json`.
    pub id: &'static str,
    pub name: &'static str,
    /// Detected when package.json depends on one of these…
    deps: &'static [&'static str],
    /// …or when one of these files exists.
    files: &'static [&'static str],
    /// The script to run when package.json has it (`build`; Nuxt prefers `generate`).
    scripts: &'static [&'static str],
    /// What to run through the package manager when there is no such script.
    exec: &'static str,
    /// The static output, relative to the project (Angular's is read from angular.json).
    pub output: &'static str,
    /// Whether unknown paths serve `index.html` (`None`: decided from the output).
    pub spa: Option<bool>,
}

/// Every framework we know, most specific first (a SvelteKit app also depends on vite).
pub const PRESETS: &[Preset] = &[
    Preset {
        id: "nextjs",
        name: "Next.js (static export)",
        deps: &["next"],
        files: &["next.config.js", "next.config.mjs", "next.config.ts"],
        scripts: &["build"],
        exec: "next build",
        output: "out",
        spa: Some(false),
    },
    Preset {
        id: "nuxt",
        name: "Nuxt (nuxt generate)",
        deps: &["nuxt", "nuxt3"],
        files: &["nuxt.config.ts", "nuxt.config.js"],
        scripts: &["generate"],
        exec: "nuxt generate",
        output: ".output/public",
        spa: None,
    },
    Preset {
        id: "sveltekit",
        name: "SvelteKit (adapter-static)",
        deps: &["@sveltejs/kit"],
        files: &[],
        scripts: &["build"],
        exec: "vite build",
        output: "build",
        spa: None,
    },
    Preset {
        id: "astro",
        name: "Astro",
        deps: &["astro"],
        files: &["astro.config.mjs", "astro.config.ts", "astro.config.js"],
        scripts: &["build"],
        exec: "astro build",
        output: "dist",
        spa: Some(false),
    },
    Preset {
        id: "angular",
        name: "Angular",
        deps: &["@angular/core"],
        files: &["angular.json"],
        scripts: &["build"],
        exec: "ng build",
        output: "dist",
        spa: Some(true),
    },
    Preset {
        id: "docusaurus",
        name: "Docusaurus",
        deps: &["@docusaurus/core"],
        files: &["docusaurus.config.js", "docusaurus.config.ts"],
        scripts: &["build"],
        exec: "docusaurus build",
        output: "build",
        spa: Some(false),
    },
    Preset {
        id: "eleventy",
        name: "Eleventy",
        deps: &["@11ty/eleventy"],
        files: &[
            ".eleventy.js",
            "eleventy.config.js",
            "eleventy.config.mjs",
            "eleventy.config.cjs",
        ],
        scripts: &["build"],
        exec: "eleventy",
        output: "_site",
        spa: Some(false),
    },
    Preset {
        id: "gatsby",
        name: "Gatsby",
        deps: &["gatsby"],
        files: &["gatsby-config.js", "gatsby-config.ts"],
        scripts: &["build"],
        exec: "gatsby build",
        output: "public",
        spa: Some(false),
    },
    Preset {
        id: "react-router",
        name: "React Router (SPA mode)",
        deps: &["@react-router/dev"],
        files: &["react-router.config.ts", "react-router.config.js"],
        scripts: &["build"],
        exec: "react-router build",
        output: "build/client",
        spa: Some(true),
    },
    Preset {
        id: "remix",
        name: "Remix (SPA mode)",
        deps: &["@remix-run/dev"],
        files: &[],
        scripts: &["build"],
        exec: "remix vite:build",
        output: "build/client",
        spa: Some(true),
    },
    Preset {
        id: "vue-cli",
        name: "Vue CLI",
        deps: &["@vue/cli-service"],
        files: &[],
        scripts: &["build"],
        exec: "vue-cli-service build",
        output: "dist",
        spa: Some(true),
    },
    Preset {
        id: "create-react-app",
        name: "Create React App",
        deps: &["react-scripts"],
        files: &[],
        scripts: &["build"],
        exec: "react-scripts build",
        output: "build",
        spa: Some(true),
    },
    Preset {
        id: "vite",
        name: "Vite",
        deps: &["vite"],
        files: &["vite.config.js", "vite.config.ts", "vite.config.mjs"],
        scripts: &["build"],
        exec: "vite build",
        output: "dist",
        spa: Some(true),
    },
];

/// Looks a preset up by id.
pub fn preset(id: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.id == id)
}

// ---------------------------------------------------------------------------------------
// The plan

/// The output folder and where the choice came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputChoice {
    /// Relative to the project folder; `.` for a static folder served as it is.
    pub dir: String,
    pub source: String,
}

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
/// configuration leaves out. Files are read only where they stay inside `root`.
pub fn plan(root: &Path, dir: &Path, cfg: &BuildConfig) -> Plan {
    let project = Project::read(root, dir);
    let mut notes = Vec::new();

    // In a monorepo the lockfile is at the workspace root, above the project.
    let install_dir = workspace_root(root, dir);
    let install_root = rel_display(root, &install_dir);
    if install_dir != dir {
        let shown = if install_root == "." {
            "the repository root".to_string()
        } else {
            install_root.clone()
        };
        notes.push(format!(
            "Workspace: installing at {shown}, where the lockfile is; building in {}",
            rel_display(root, dir)
        ));
    }

    let framework = match &project.package_json {
        Some(_) => PRESETS.iter().find(|p| project.matches(p)),
        None => None,
    };
    let pm = project
        .package_json
        .as_ref()
        .map(|_| package_manager(root, &install_dir, &project));
    let node = project
        .package_json
        .as_ref()
        .map(|_| node_version(root, dir, &project, cfg));

    let install = match &cfg.install {
        Some(cmd) if cmd.trim().is_empty() => None,
        Some(cmd) => Some(cmd.clone()),
        None => pm
            .as_ref()
            .map(|pm| pm.name.frozen_install(pm.has_lockfile).to_string()),
    };

    let build = match &cfg.command {
        Some(cmd) if cmd.trim().is_empty() => None,
        Some(cmd) => Some(cmd.clone()),
        None => match (&pm, framework) {
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
    };

    let output = match (&cfg.output, framework) {
        (Some(out), _) => OutputChoice {
            dir: out.clone(),
            source: "build.output in cdeploy.toml".into(),
        },
        (None, Some(preset)) => OutputChoice {
            dir: preset_output(preset, &project),
            source: format!("the {} preset", preset.name),
        },
        (None, None) if build.is_some() => OutputChoice {
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
    };

    // A configured build command is the user's own: no preset check second-guesses it.
    let problem = match (framework, &cfg.command, &cfg.output) {
        (Some(preset), None, None) => static_problem(preset, &project),
        _ => None,
    };

    Plan {
        framework,
        node,
        package_manager: pm,
        install_dir,
        install_root,
        install,
        build,
        spa: framework.and_then(|p| p.spa),
        output,
        problem,
        notes,
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

/// `dir` relative to `root`, `.` for the root itself.
fn rel_display(root: &Path, dir: &Path) -> String {
    match dir.strip_prefix(root) {
        Ok(p) if p.as_os_str().is_empty() => ".".into(),
        Ok(p) => p.display().to_string(),
        Err(_) => dir.display().to_string(),
    }
}

/// The nearest folder from `dir` up to `root` that holds a lockfile (a workspace root),
/// else `dir` itself.
pub fn workspace_root(root: &Path, dir: &Path) -> PathBuf {
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

/// The files of one project folder that decide its plan.
struct Project {
    root: PathBuf,
    dir: PathBuf,
    package_json: Option<serde_json::Value>,
}

impl Project {
    fn read(root: &Path, dir: &Path) -> Project {
        let package_json = read_repo_file(root, dir, "package.json")
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        Project {
            root: root.to_path_buf(),
            dir: dir.to_path_buf(),
            package_json,
        }
    }

    fn text(&self, name: &str) -> Option<String> {
        read_repo_file(&self.root, &self.dir, name).ok().flatten()
    }

    /// The first of `names` that exists, with its text.
    fn first_text(&self, names: &[&str]) -> Option<(String, String)> {
        names
            .iter()
            .find_map(|n| self.text(n).map(|t| (n.to_string(), t)))
    }

    fn has_dep(&self, dep: &str) -> bool {
        let Some(pkg) = &self.package_json else {
            return false;
        };
        ["dependencies", "devDependencies", "peerDependencies"]
            .iter()
            .any(|k| pkg.get(k).and_then(|d| d.get(dep)).is_some())
    }

    fn has_script(&self, name: &str) -> bool {
        self.package_json
            .as_ref()
            .and_then(|p| p.get("scripts"))
            .and_then(|s| s.get(name))
            .is_some_and(|b| b.is_string())
    }

    fn matches(&self, p: &Preset) -> bool {
        p.deps.iter().any(|d| self.has_dep(d)) || p.files.iter().any(|f| self.dir.join(f).is_file())
    }

    fn str_at(&self, path: &[&str]) -> Option<String> {
        let mut v = self.package_json.as_ref()?;
        for key in path {
            v = v.get(key)?;
        }
        v.as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
    }
}

// ---------------------------------------------------------------------------------------
// Framework specifics

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

/// The string literal after `key:` (or `key =`) in a JS/TS config, when it is one.
fn quoted_value_after(text: &str, key: &str) -> Option<String> {
    let mut rest = text;
    while let Some(at) = rest.find(key) {
        let before_ok = rest[..at]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '$'));
        let after = rest[at + key.len()..].trim_start();
        rest = &rest[at + key.len()..];
        if !before_ok {
            continue;
        }
        let Some(after) = after.strip_prefix(':').or_else(|| after.strip_prefix('=')) else {
            continue;
        };
        let after = after.trim_start();
        let quote = after.chars().next()?;
        if !matches!(quote, '\'' | '"' | '`') {
            continue;
        }
        let body = &after[1..];
        let end = body.find(quote)?;
        return Some(body[..end].to_string());
    }
    None
}

/// Strips `//` and `/* */` comments well enough to search a config for a setting.
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            ('\'' | '"' | '`', _) => {
                quote = Some(c);
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// A framework set up to build a server app rather than a static site: the exact change
/// that makes it static. Only certain cases are reported; anything computed at build
/// time is left to the check of the build's output.
fn static_problem(preset: &Preset, project: &Project) -> Option<String> {
    match preset.id {
        "nextjs" => {
            let (file, text) = project
                .first_text(&[
                    "next.config.ts",
                    "next.config.mjs",
                    "next.config.js",
                    "next.config.cjs",
                ])
                .map(|(f, t)| (f, without_comments(&t)))
                .unwrap_or_else(|| ("next.config.mjs".into(), String::new()));
            // `output` computed from the environment is the user's business; only a
            // config that never mentions it is certainly a server build.
            (!text.contains("output")).then(|| {
                let ppr = if text.contains("cacheComponents") || text.contains("ppr") {
                    ", remove `cacheComponents`/`ppr` (they need a server: Next stops with 'PPR cannot be enabled in export mode')"
                } else {
                    ""
                };
                format!(
                    "Next.js builds a server app unless it is exported: add `output: 'export'` to the config in {file}{ppr} \
                     and, when pages use next/image, `images: {{ unoptimized: true }}` \
                     (cdeploy serves static sites: API routes, middleware and server actions cannot be exported)"
                )
            })
        }
        "sveltekit" => {
            // The adapter is set in svelte.config.js, or (SvelteKit 3) in vite.config.
            let (file, text) = project
                .first_text(&[
                    "svelte.config.js",
                    "svelte.config.mjs",
                    "svelte.config.ts",
                    "vite.config.ts",
                    "vite.config.js",
                    "vite.config.mjs",
                ])
                .map(|(f, t)| (f, without_comments(&t)))?;
            let adapter = text.split("@sveltejs/adapter-").nth(1).map(|rest| {
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect::<String>()
            });
            match adapter.as_deref() {
                Some("static") => None,
                Some(other) => Some(format!(
                    "SvelteKit with @sveltejs/adapter-{other} builds a server app, not a static site: \
                     add the dev dependency @sveltejs/adapter-static (npm i -D @sveltejs/adapter-static), import adapter from '@sveltejs/adapter-static' in {file}, \
                     and add `export const prerender = true;` to src/routes/+layout.ts (or pass `fallback: 'index.html'` to adapter() for a SPA)"
                )),
                None => Some(format!(
                    "SvelteKit needs an adapter to build a static site: add the dev dependency @sveltejs/adapter-static and \
                     `import adapter from '@sveltejs/adapter-static'` with `adapter: adapter()` in {file}"
                )),
            }
        }
        "astro" => {
            let (file, text) = project
                .first_text(&["astro.config.mjs", "astro.config.ts", "astro.config.js"])
                .map(|(f, t)| (f, without_comments(&t)))?;
            (quoted_value_after(&text, "output").as_deref() == Some("server")).then(|| {
                format!(
                    "Astro is set to `output: 'server'` in {file}, which builds a server app: remove that line and the server adapter \
                     (pages are prerendered by default), or set `output: 'static'`"
                )
            })
        }
        "nuxt" => {
            let (file, text) = project
                .first_text(&["nuxt.config.ts", "nuxt.config.js"])
                .map(|(f, t)| (f, without_comments(&t)))?;
            // Only nitro's own `preset` (other modules have keys of that name).
            let nitro = text.split_once("nitro").map(|(_, rest)| rest).unwrap_or("");
            let preset = quoted_value_after(nitro, "preset");
            match preset.as_deref() {
                Some(p) if p.contains("static") => None,
                Some(p) => Some(format!(
                    "Nuxt's nitro preset is {p:?} in {file}, a server target: remove it (cdeploy runs `nuxt generate`) or set `nitro: {{ preset: 'static' }}`"
                )),
                None => None,
            }
        }
        "angular" => {
            let text = project.text("angular.json")?;
            let json: serde_json::Value = serde_json::from_str(&text).ok()?;
            let mode = json
                .get("projects")?
                .as_object()?
                .values()
                .filter_map(|p| p.pointer("/architect/build/options/outputMode"))
                .find_map(|m| m.as_str().map(String::from));
            (mode.as_deref() == Some("server")).then(|| {
                "Angular is set to `\"outputMode\": \"server\"` in angular.json, which needs a Node server: set `\"outputMode\": \"static\"` \
                 in the build options (every route is prerendered)"
                    .to_string()
            })
        }
        "react-router" => {
            let (file, text) = project
                .first_text(&["react-router.config.ts", "react-router.config.js"])
                .map(|(f, t)| (f, without_comments(&t)))
                .unwrap_or_else(|| ("react-router.config.ts".into(), String::new()));
            let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            (!compact.contains("ssr:false") && !compact.contains("prerender")).then(|| {
                format!(
                    "React Router builds a server app by default: set `ssr: false` in {file} (SPA mode), or list the routes in `prerender`"
                )
            })
        }
        "remix" => {
            let (file, text) = project
                .first_text(&["vite.config.ts", "vite.config.js", "vite.config.mjs"])
                .map(|(f, t)| (f, without_comments(&t)))?;
            let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            (!compact.contains("ssr:false")).then(|| {
                format!("Remix builds a server app by default: pass `ssr: false` to the remix() plugin in {file} (SPA mode)")
            })
        }
        _ => None,
    }
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

// ---------------------------------------------------------------------------------------
// Node.js

/// Decides which Node.js the build asks for: `[build] node`, `.nvmrc`, `.node-version`
/// (from the project up to the repository root, like nvm), `volta.node`, `engines.node`,
/// else [`DEFAULT_NODE`].
fn node_version(root: &Path, dir: &Path, project: &Project, cfg: &BuildConfig) -> NodeChoice {
    if let Some(v) = cfg.node.as_deref().filter(|v| !v.trim().is_empty()) {
        return NodeChoice {
            spec: v.trim().to_string(),
            source: "build.node in cdeploy.toml".into(),
        };
    }
    let mut at = dir;
    loop {
        for file in [".nvmrc", ".node-version"] {
            if let Some(spec) = read_repo_file(root, at, file)
                .ok()
                .flatten()
                .and_then(|t| first_version_line(&t))
            {
                let rel = rel_display(root, &at.join(file));
                return NodeChoice { spec, source: rel };
            }
        }
        if at == root {
            break;
        }
        match at.parent() {
            Some(p) if p.starts_with(root) => at = p,
            _ => break,
        }
    }
    if let Some(v) = project.str_at(&["volta", "node"]) {
        return NodeChoice {
            spec: v,
            source: "package.json volta.node".into(),
        };
    }
    if let Some(v) = project.str_at(&["engines", "node"]) {
        return NodeChoice {
            spec: v,
            source: "package.json engines.node".into(),
        };
    }
    NodeChoice {
        spec: DEFAULT_NODE.into(),
        source: "the default".into(),
    }
}

/// The version in an `.nvmrc` (comments and blank lines skipped).
fn first_version_line(text: &str) -> Option<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find(|l| !l.is_empty())
        .filter(|l| l.len() <= 64)
        .map(String::from)
}

/// Node.js LTS lines by codename, as `lts/<name>` in `.nvmrc`.
pub const LTS_CODENAMES: &[(&str, u64)] = &[
    ("argon", 4),
    ("boron", 6),
    ("carbon", 8),
    ("dubnium", 10),
    ("erbium", 12),
    ("fermium", 14),
    ("gallium", 16),
    ("hydrogen", 18),
    ("iron", 20),
    ("jod", 22),
    ("krypton", 24),
];

/// A Node.js version request in a form the builder can resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSpec {
    /// A semver range (`22`, `22.x`, `>=22.12`, `^20.11`); an exact version is a range
    /// of one.
    Range(String),
    /// `node`, `latest`, `current`: the newest release.
    Latest,
}

/// Parses what `.nvmrc`, `engines.node` or `[build] node` say into a [`NodeSpec`]; the
/// error says what is accepted.
pub fn parse_node_spec(spec: &str) -> Result<NodeSpec, String> {
    let s = spec.trim();
    let lower = s.to_ascii_lowercase();
    if matches!(lower.as_str(), "node" | "latest" | "current" | "stable") {
        return Ok(NodeSpec::Latest);
    }
    if let Some(name) = lower.strip_prefix("lts/") {
        if name == "*" || name == "latest" {
            let newest = LTS_CODENAMES.last().map(|(_, m)| *m).unwrap_or(24);
            return Ok(NodeSpec::Range(newest.to_string()));
        }
        return LTS_CODENAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| NodeSpec::Range(m.to_string()))
            .ok_or_else(|| {
                format!("{s:?} is not a Node.js LTS line (lts/jod, lts/krypton, lts/*…)")
            });
    }
    let s = s.strip_prefix('v').unwrap_or(s);
    nodejs_semver::Range::parse(s)
        .map(|_| NodeSpec::Range(s.to_string()))
        .map_err(|_| {
            format!("{spec:?} is not a Node.js version: use a version (22.12.0), a major (22), a range (>=22.12) or lts/<name>")
        })
}

/// The releases among published `versions` (pre-releases and junk dropped), oldest first.
pub fn releases(versions: &[String]) -> Vec<nodejs_semver::Version> {
    let mut parsed: Vec<nodejs_semver::Version> = versions
        .iter()
        .filter_map(|v| nodejs_semver::Version::parse(v).ok())
        .filter(|v| !v.is_prerelease())
        .collect();
    parsed.sort();
    parsed
}

/// Validation of `[build] node`.
pub fn check_node_spec(spec: &str) -> Result<(), String> {
    if spec.len() > 64 {
        return Err("is longer than 64 characters".into());
    }
    parse_node_spec(spec).map(|_| ())
}

/// Picks the Node.js release for `spec` from the published `versions`: the default line's
/// newest release when it satisfies the request (`>=18` means "works on 18 and later",
/// not "the newest Node"), else the newest release that does. Pre-releases never.
pub fn pick_node_version(spec: &NodeSpec, versions: &[String]) -> Option<String> {
    let parsed = releases(versions);
    let range = match spec {
        NodeSpec::Latest => return parsed.last().map(|v| v.to_string()),
        NodeSpec::Range(r) => nodejs_semver::Range::parse(r).ok()?,
    };
    let default_major: u64 = DEFAULT_NODE.parse().unwrap_or(24);
    let newest_default = parsed.iter().rev().find(|v| v.major == default_major);
    if let Some(v) = newest_default.filter(|v| range.satisfies(v)) {
        return Some(v.to_string());
    }
    parsed
        .iter()
        .rev()
        .find(|v| range.satisfies(v))
        .map(|v| v.to_string())
}

// ---------------------------------------------------------------------------------------
// Package manager

/// `packageManager` in package.json (exact version, corepack's format), else the
/// lockfile at the install root (its format tells the major), else npm.
fn package_manager(root: &Path, install_dir: &Path, project: &Project) -> PmChoice {
    let lockfile = LOCKFILES
        .iter()
        .find(|l| install_dir.join(l).is_file())
        .copied();
    let has_lockfile = lockfile.is_some();
    // The workspace root's package.json names the package manager of the whole repo.
    let declared = project.str_at(&["packageManager"]).or_else(|| {
        (install_dir != project.dir)
            .then(|| {
                read_repo_file(root, install_dir, "package.json")
                    .ok()
                    .flatten()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                    .and_then(|p| p.get("packageManager")?.as_str().map(String::from))
            })
            .flatten()
    });
    if let Some(decl) = declared {
        if let Some(choice) = parse_package_manager_field(&decl, has_lockfile) {
            return choice;
        }
    }
    let read_lock = |name: &str| read_repo_file(root, install_dir, name).ok().flatten();
    let (name, version, why) = match lockfile {
        Some("pnpm-lock.yaml") => {
            let v = read_lock("pnpm-lock.yaml")
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("lockfileVersion:"))
                        .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
                })
                .unwrap_or_default();
            let major = match v.split('.').next().unwrap_or("") {
                "5" => "7",
                "6" => "8",
                _ => "10",
            };
            (PackageManager::Pnpm, major, "pnpm-lock.yaml")
        }
        Some("yarn.lock") => {
            let text = read_lock("yarn.lock").unwrap_or_default();
            if text.contains("__metadata:") {
                (PackageManager::YarnBerry, "4", "yarn.lock (Yarn 2+ format)")
            } else {
                (
                    PackageManager::YarnClassic,
                    "1",
                    "yarn.lock (Yarn 1 format)",
                )
            }
        }
        Some("bun.lock") | Some("bun.lockb") => (PackageManager::Bun, "1", "bun.lock"),
        Some(l) => (
            PackageManager::Npm,
            "10",
            if l == "package-lock.json" {
                "package-lock.json"
            } else {
                "npm-shrinkwrap.json"
            },
        ),
        None => (PackageManager::Npm, "10", "no lockfile"),
    };
    PmChoice {
        name,
        version: version.into(),
        hash: None,
        source: format!("from {why}"),
        has_lockfile,
    }
}

/// `"pnpm@9.15.0"` or `"yarn@4.5.1+sha512.abc…"`: corepack's format, an exact version.
pub fn parse_package_manager_field(decl: &str, has_lockfile: bool) -> Option<PmChoice> {
    let (name, rest) = decl.trim().split_once('@')?;
    let (version, hash) = match rest.split_once('+') {
        Some((v, h)) => (v, Some(h.to_string())),
        None => (rest, None),
    };
    let parsed = nodejs_semver::Version::parse(version).ok()?;
    let pm = match name {
        "npm" => PackageManager::Npm,
        "pnpm" => PackageManager::Pnpm,
        "yarn" if parsed.major <= 1 => PackageManager::YarnClassic,
        "yarn" => PackageManager::YarnBerry,
        "bun" => PackageManager::Bun,
        _ => return None,
    };
    Some(PmChoice {
        name: pm,
        version: parsed.to_string(),
        hash,
        source: "from packageManager in package.json".into(),
        has_lockfile,
    })
}

// ---------------------------------------------------------------------------------------
// Output

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
) -> Result<String, String> {
    let built = plan.build.is_some();
    let out = &plan.output.dir;
    if configured {
        return if dir.join(out).is_dir() {
            Ok(out.clone())
        } else {
            Err(format!(
                "the output folder {out:?} (build.output) was not produced by the build"
            ))
        };
    }
    let skip_public = built && public_was_input;
    if let Some(preset) = plan.framework {
        if dir.join(out).is_dir() && !(skip_public && out == "public") {
            return Ok(out.clone());
        }
        if let Some(hint) = missing_output_hint(preset, dir) {
            return Err(hint);
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
        return Err(format!(
            "the build wrote no {out}/, where {} puts its static site; set `output` in the [build] table of cdeploy.toml to the folder your build writes",
            preset.name
        ));
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

// ---------------------------------------------------------------------------------------
// Reading a repository's files

/// Reads `dir/name` of a checkout, refusing what a hostile repository could point it at:
/// a symlink out of `root` (`cdeploy.toml -> /proc/self/environ` would otherwise be read
/// by the server and quoted in an error), a FIFO or device (it would hang the reader), or
/// a file over 64 MiB. `None`: no such file.
pub fn read_repo_bytes(root: &Path, dir: &Path, name: &str) -> Result<Option<Vec<u8>>, String> {
    let path = dir.join(name);
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let (root, real) = match (root.canonicalize(), path.canonicalize()) {
        (Ok(r), Ok(p)) => (r, p),
        _ => return Err("is a broken symlink".into()),
    };
    if !real.starts_with(&root) {
        return Err("is a symlink that points outside the repository".into());
    }
    let meta = std::fs::metadata(&real).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() > MAX_REPO_FILE {
        return Err(format!("is larger than {} MiB", MAX_REPO_FILE >> 20));
    }
    std::fs::read(&real).map(Some).map_err(|e| e.to_string())
}

/// [`read_repo_bytes`] as UTF-8 text.
pub fn read_repo_file(root: &Path, dir: &Path, name: &str) -> Result<Option<String>, String> {
    read_repo_bytes(root, dir, name)?
        .map(|b| String::from_utf8(b).map_err(|_| "is not UTF-8 text".to_string()))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, body) in files {
            let path = d.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
        d
    }

    fn plan_of(files: &[(&str, &str)]) -> Plan {
        let d = project(files);
        plan(d.path(), d.path(), &BuildConfig::default())
    }

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
    fn package_managers_from_lockfiles_and_the_package_manager_field() {
        let p = plan_of(&[
            ("package.json", r#"{"scripts":{"build":"x"}}"#),
            ("pnpm-lock.yaml", "lockfileVersion: '9.0'\n"),
        ]);
        assert_eq!(p.install.as_deref(), Some("pnpm install --frozen-lockfile"));
        assert_eq!(p.build.as_deref(), Some("pnpm run build"));
        let pm = p.package_manager.unwrap();
        assert_eq!((pm.name, pm.version.as_str()), (PackageManager::Pnpm, "10"));
        let p = plan_of(&[
            ("package.json", "{}"),
            ("yarn.lock", "# yarn lockfile v1\n"),
        ]);
        assert_eq!(p.install.as_deref(), Some("yarn install --frozen-lockfile"));
        assert_eq!(p.build, None);
        let p = plan_of(&[
            ("package.json", "{}"),
            ("yarn.lock", "__metadata:\n  version: 8\n"),
        ]);
        assert_eq!(p.install.as_deref(), Some("yarn install --immutable"));
        let p = plan_of(&[
            (
                "package.json",
                r#"{"packageManager":"pnpm@9.15.0+sha512.abc"}"#,
            ),
            ("pnpm-lock.yaml", ""),
        ]);
        let pm = p.package_manager.unwrap();
        assert_eq!(pm.version, "9.15.0");
        assert_eq!(pm.hash.as_deref(), Some("sha512.abc"));
        assert_eq!(pm.source, "from packageManager in package.json");
        let p = plan_of(&[("package.json", r#"{"packageManager":"yarn@1.22.22"}"#)]);
        assert_eq!(p.package_manager.unwrap().name, PackageManager::YarnClassic);
        assert_eq!(p.install.as_deref(), Some("yarn install"));
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
        let p = plan(d.path(), &web, &BuildConfig::default());
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
        let p = plan(d.path(), &web, &BuildConfig::default());
        assert_eq!(p.install_dir, web);
        assert_eq!(p.install.as_deref(), Some("pnpm install --frozen-lockfile"));
    }

    #[test]
    fn node_version_sources_in_order() {
        let cfg = BuildConfig {
            node: Some("20".into()),
            ..Default::default()
        };
        let d = project(&[
            (
                "package.json",
                r#"{"engines":{"node":">=22.12"},"volta":{"node":"22.13.1"}}"#,
            ),
            (".node-version", "22.11.0"),
        ]);
        let p = plan(d.path(), d.path(), &cfg);
        assert_eq!(p.node.unwrap().source, "build.node in cdeploy.toml");
        let p = plan(d.path(), d.path(), &BuildConfig::default());
        assert_eq!(p.node.unwrap().spec, "22.11.0");
        std::fs::remove_file(d.path().join(".node-version")).unwrap();
        let p = plan(d.path(), d.path(), &BuildConfig::default());
        assert_eq!(p.node.unwrap().source, "package.json volta.node");
        let p = plan_of(&[("package.json", r#"{"engines":{"node":">=22.12"}}"#)]);
        assert_eq!(p.node.unwrap().source, "package.json engines.node");
    }

    #[test]
    fn node_specs_resolve_to_a_release() {
        let versions: Vec<String> = [
            "20.18.0",
            "20.19.5",
            "22.11.0",
            "22.12.0",
            "22.21.1",
            "24.1.0",
            "24.11.1",
            "25.0.0",
            "26.0.0-rc.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let pick = |s: &str| pick_node_version(&parse_node_spec(s).unwrap(), &versions);
        assert_eq!(pick("22.12.0").as_deref(), Some("22.12.0"));
        assert_eq!(pick("v22.12.0").as_deref(), Some("22.12.0"));
        assert_eq!(pick("22").as_deref(), Some("22.21.1"));
        assert_eq!(pick("20.x").as_deref(), Some("20.19.5"));
        // A floor means "works on this and later": the default line when it fits.
        assert_eq!(pick(">=18").as_deref(), Some("24.11.1"));
        assert_eq!(pick(">=22.12").as_deref(), Some("24.11.1"));
        assert_eq!(pick("^20.11 || ^22").as_deref(), Some("22.21.1"));
        assert_eq!(pick("lts/jod").as_deref(), Some("22.21.1"));
        assert_eq!(pick("node").as_deref(), Some("25.0.0"));
        assert_eq!(pick("19"), None);
        assert!(parse_node_spec("lts/nope").unwrap_err().contains("LTS"));
        assert!(parse_node_spec("banana")
            .unwrap_err()
            .contains("not a Node.js version"));
    }

    #[test]
    fn frameworks_are_detected_with_their_outputs() {
        let p = plan_of(&[(
            "package.json",
            r#"{"scripts":{"build":"nuxt build","generate":"nuxt generate"},"dependencies":{"nuxt":"4"}}"#,
        )]);
        assert_eq!(p.framework.unwrap().id, "nuxt");
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
    fn server_configurations_name_the_change() {
        let p = plan_of(&[
            ("package.json", r#"{"scripts":{"build":"next build"},"dependencies":{"next":"16"}}"#),
            ("next.config.ts", "const nextConfig = {\n  /* config options here */\n};\nexport default nextConfig;\n"),
        ]);
        assert!(p
            .problem
            .unwrap()
            .contains("add `output: 'export'` to the config in next.config.ts"));
        let p = plan_of(&[
            ("package.json", r#"{"dependencies":{"next":"16"}}"#),
            ("next.config.mjs", "export default { output: 'export' }"),
        ]);
        assert_eq!(p.problem, None);
        let kit = r#"{"devDependencies":{"@sveltejs/kit":"2","vite":"7"}}"#;
        let p = plan_of(&[
            ("package.json", kit),
            ("svelte.config.js", "import adapter from '@sveltejs/adapter-auto';\nexport default { kit: { adapter: adapter() } };"),
        ]);
        assert_eq!(p.framework.unwrap().id, "sveltekit");
        let problem = p.problem.unwrap();
        assert!(
            problem.contains("adapter-auto") && problem.contains("@sveltejs/adapter-static"),
            "{problem}"
        );
        let p = plan_of(&[
            ("package.json", kit),
            ("svelte.config.js", "// was: import adapter from '@sveltejs/adapter-auto';\nimport adapter from '@sveltejs/adapter-static';\nexport default { kit: { adapter: adapter({ pages: 'site' }) } };"),
        ]);
        assert_eq!(p.problem, None);
        assert_eq!(p.output.dir, "site");
        let p = plan_of(&[
            ("package.json", r#"{"dependencies":{"astro":"5"}}"#),
            (
                "astro.config.mjs",
                "export default defineConfig({ output: 'server' })",
            ),
        ]);
        assert!(p.problem.unwrap().contains("output: 'server'"));
        let nuxt = r#"{"dependencies":{"nuxt":"4"}}"#;
        let p = plan_of(&[
            ("package.json", nuxt),
            (
                "nuxt.config.ts",
                "export default defineNuxtConfig({ nitro: { preset: 'node-server' } })",
            ),
        ]);
        assert!(p.problem.unwrap().contains("\"node-server\""));
        let p = plan_of(&[
            ("package.json", nuxt),
            (
                "nuxt.config.ts",
                "export default defineNuxtConfig({ postcss: { preset: 'default' } })",
            ),
        ]);
        assert_eq!(p.problem, None, "another module's preset is not nitro's");
        let p = plan_of(&[
            (
                "package.json",
                r#"{"devDependencies":{"@react-router/dev":"7"}}"#,
            ),
            ("react-router.config.ts", "export default { ssr: true }"),
        ]);
        assert!(p.problem.unwrap().contains("ssr: false"));
        let p = plan_of(&[
            (
                "package.json",
                r#"{"devDependencies":{"@react-router/dev":"7"}}"#,
            ),
            ("react-router.config.ts", "export default { ssr: false }"),
        ]);
        assert_eq!((p.problem, p.output.dir.as_str()), (None, "build/client"));
        // A configured command is the user's own.
        let d = project(&[("package.json", r#"{"dependencies":{"next":"16"}}"#)]);
        let cfg = BuildConfig {
            command: Some("make".into()),
            ..Default::default()
        };
        assert_eq!(plan(d.path(), d.path(), &cfg).problem, None);
    }

    #[test]
    fn output_after_the_build() {
        let d = project(&[("index.html", "hi")]);
        let p = plan(d.path(), d.path(), &BuildConfig::default());
        assert_eq!(output_dir(d.path(), &p, false, false).unwrap(), ".");
        let mut built = p.clone();
        built.build = Some("make".into());
        assert!(output_dir(d.path(), &built, false, false).is_err());
        let mut configured = built.clone();
        configured.output.dir = "dist".into();
        assert!(output_dir(d.path(), &configured, true, false).is_err());
        // public/ from the source is an input folder, never a build's output...
        std::fs::create_dir(d.path().join("public")).unwrap();
        let e = output_dir(d.path(), &built, false, true).unwrap_err();
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
        let p = plan(d.path(), d.path(), &BuildConfig::default());
        assert!(output_dir(d.path(), &p, false, true)
            .unwrap_err()
            .contains("output: 'export'"));
    }

    #[test]
    fn config_comments_and_values() {
        assert_eq!(
            quoted_value_after("a = { output: \"www\" }", "output").as_deref(),
            Some("www")
        );
        assert_eq!(
            quoted_value_after("myoutput: 'x', output: 'y'", "output").as_deref(),
            Some("y")
        );
        assert_eq!(
            without_comments("a // b\nc /* d */ e 'f//g'"),
            "a \nc  e 'f//g'"
        );
    }
}
