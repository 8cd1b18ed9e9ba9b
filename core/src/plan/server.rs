//! Server apps: a project whose build makes a server rather than a static site. The
//! plan says which folder becomes the server's bundle, how it starts, and which folders
//! of static files the proxy serves itself (hashed assets never reach the server).
//!
//! Next.js builds its standalone server (`.next/standalone`, with only the files its
//! server needs traced into it) when the build sets `NEXT_PRIVATE_STANDALONE`, so no
//! user edits next.config; a plain Node.js server is named by `[runtime] start`.

use std::path::Path;

use serde::Serialize;

use super::js_config::{quoted_value_after, without_comments};
use super::package_manager::PackageManager;
use super::presets::Preset;
use super::project::{rel_display, Project};
use crate::config::{BuildConfig, RuntimeConfig};

/// The configs Next.js reads, in its order.
pub(super) const NEXT_CONFIGS: &[&str] = &[
    "next.config.ts",
    "next.config.mjs",
    "next.config.js",
    "next.config.cjs",
];

/// A folder of static files the proxy serves at a URL prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssetDir {
    /// Relative to the repository's root.
    pub dir: String,
    /// The URL path its files are served under (`/`, `/_next/static/`).
    pub prefix: String,
}

/// What a server app's build leaves and how its server starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerPlan {
    /// `nextjs`, `node`.
    pub kind: &'static str,
    /// The folder that becomes the bundle, relative to the repository's root.
    pub bundle: String,
    /// The working directory inside the bundle; `None`: found after the build (the
    /// folder of Next.js's `server.js`, which mirrors the project's place in the
    /// workspace).
    pub cwd: Option<String>,
    /// The start command's words (the first is `node`).
    pub command: Vec<String>,
    /// Static folders the proxy serves (missing ones are skipped).
    pub assets: Vec<AssetDir>,
    /// The build script to run when package.json has it, else what the package
    /// manager executes (`None`: the preset's): Nuxt's server is `build`, its static
    /// site `generate`.
    #[serde(skip)]
    pub build: Option<(&'static str, &'static str)>,
    /// Set for the build command (what makes the framework build its server).
    pub build_env: Vec<(String, String)>,
    /// Folders copied into the bundle after the build (from the project folder, to the
    /// server's folder): what the server reads itself besides serving (Next.js's image
    /// optimizer reads `public/` and `.next/static/`, its standalone docs say to copy
    /// them). The proxy still serves them.
    pub copy: Vec<(String, String)>,
    /// A shell command run in the project folder right after the install (what it adds
    /// is kept in the build cache with the install) and before the build: what switches
    /// a framework to its Node.js server (SvelteKit's adapter-auto to adapter-node) in
    /// the build's copy of the project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepare: Option<String>,
    pub health: String,
}

impl ServerPlan {
    /// The plan's log line.
    pub fn describe(&self) -> String {
        let assets: Vec<String> = self
            .assets
            .iter()
            .map(|a| format!("{} at {}", a.dir, a.prefix))
            .collect();
        let what = match self.kind {
            "nextjs" => "Next.js's standalone server",
            "nuxt" => "Nuxt's Node.js server (nitro's node-server)",
            "react-router" => "React Router's server (react-router-serve)",
            "astro" => "Astro's Node.js server (@astrojs/node, standalone)",
            "sveltekit" => "SvelteKit's Node.js server (adapter-node)",
            _ => "a Node.js server",
        };
        let prepare = match &self.prepare {
            Some(cmd) => format!("; before the build: `{cmd}`"),
            None => String::new(),
        };
        format!(
            "Server app: {what} (`{}`), started on the first request and stopped when idle; \
             static files served by the proxy: {}; ready once GET {} answers{prepare}",
            self.command.join(" "),
            if assets.is_empty() {
                "none".into()
            } else {
                assets.join(", ")
            },
            self.health
        )
    }
}

/// The server plan of a project, when it builds one. `Err`: a `[runtime]` that cannot
/// be used as it is.
pub(super) fn server_plan(
    root: &Path,
    install_dir: &Path,
    project: &Project,
    framework: Option<&'static Preset>,
    cfg: &BuildConfig,
    runtime: &RuntimeConfig,
    pm: Option<PackageManager>,
) -> Result<Option<ServerPlan>, String> {
    let health = runtime.health.clone().unwrap_or_else(|| "/".into());
    let project_rel = rel_display(root, &project.dir);
    let under = |p: &str| match project_rel.as_str() {
        "." => p.to_string(),
        dir => format!("{dir}/{p}"),
    };
    if let Some(start) = &runtime.start {
        let assets = runtime
            .assets
            .clone()
            .or_else(|| project.dir.join("public").is_dir().then(|| "public".into()));
        return Ok(Some(ServerPlan {
            kind: "node",
            bundle: rel_display(root, install_dir),
            cwd: Some(rel_display(install_dir, &project.dir)),
            command: start_words(start)?,
            assets: assets
                .map(|a| AssetDir {
                    dir: under(&a),
                    prefix: "/".into(),
                })
                .into_iter()
                .collect(),
            build: None,
            build_env: Vec::new(),
            copy: Vec::new(),
            prepare: None,
            health,
        }));
    }
    // A configured build command or output folder is the user's own static build.
    if cfg.command.is_some() || cfg.output.is_some() {
        return Ok(None);
    }
    let places = Places {
        under: &under,
        install_root: rel_display(root, install_dir),
        project_in_install: rel_display(install_dir, &project.dir),
        pm,
    };
    Ok(framework.and_then(|p| framework_server(p.id, project, &places, health)))
}

/// Where a server's files are: a path of the project folder from the repository's root
/// (`under`), the install root (where `node_modules` is) and the project inside it; and
/// the package manager that installs it.
struct Places<'a> {
    under: &'a dyn Fn(&str) -> String,
    install_root: String,
    project_in_install: String,
    pm: Option<PackageManager>,
}

impl Places<'_> {
    /// A server that runs from the install itself (its `node_modules`), in the project
    /// folder, with one static folder of the project served at `/`.
    fn install_server(
        &self,
        kind: &'static str,
        command: Vec<String>,
        assets: &str,
        health: String,
    ) -> ServerPlan {
        ServerPlan {
            kind,
            bundle: self.install_root.clone(),
            cwd: Some(self.project_in_install.clone()),
            command,
            assets: vec![AssetDir {
                dir: (self.under)(assets),
                prefix: "/".into(),
            }],
            build: None,
            build_env: Vec::new(),
            copy: Vec::new(),
            prepare: None,
            health,
        }
    }

    /// `node_modules` of the install root, seen from the project folder.
    fn node_modules(&self) -> String {
        match self.project_in_install.as_str() {
            "." => "node_modules".into(),
            p => format!("{}node_modules", "../".repeat(p.split('/').count())),
        }
    }
}

/// The server a framework preset builds, when its configuration makes one; paths are
/// given to `under` (the project folder's place in the repository).
fn framework_server(
    preset: &str,
    project: &Project,
    places: &Places<'_>,
    health: String,
) -> Option<ServerPlan> {
    let under = places.under;
    match preset {
        "nextjs" if next_builds_a_server(project) => Some(ServerPlan {
            kind: "nextjs",
            bundle: under(".next/standalone"),
            cwd: None,
            command: vec!["node".into(), "server.js".into()],
            assets: vec![
                AssetDir {
                    dir: under("public"),
                    prefix: "/".into(),
                },
                AssetDir {
                    dir: under(".next/static"),
                    prefix: "/_next/static/".into(),
                },
            ],
            build: None,
            build_env: vec![("NEXT_PRIVATE_STANDALONE".into(), "1".into())],
            copy: vec![
                ("public".into(), "public".into()),
                (".next/static".into(), ".next/static".into()),
            ],
            prepare: None,
            health,
        }),
        // React Router's framework mode as create-react-router makes it: its own server
        // (`react-router-serve`) over the build, with the install's node_modules.
        "react-router" if react_router_builds_a_server(project) => Some(places.install_server(
            "react-router",
            vec![
                "node".into(),
                format!("{}/@react-router/serve/bin.cjs", places.node_modules()),
                "build/server/index.js".into(),
            ],
            "build/client",
            health,
        )),
        "sveltekit" => sveltekit_server(project, places, health),
        // Astro with the Node adapter in standalone mode, as `astro add node` sets it.
        "astro" if astro_builds_a_server(project) => Some(places.install_server(
            "astro",
            vec!["node".into(), "dist/server/entry.mjs".into()],
            "dist/client",
            health,
        )),
        "nuxt" if nuxt_builds_a_server(project) => Some(ServerPlan {
            kind: "nuxt",
            bundle: under(".output/server"),
            cwd: Some(".".into()),
            command: vec!["node".into(), "index.mjs".into()],
            assets: vec![AssetDir {
                dir: under(".output/public"),
                prefix: "/".into(),
            }],
            build: Some(("build", "nuxt build")),
            build_env: vec![("NITRO_PRESET".into(), "node-server".into())],
            copy: Vec::new(),
            prepare: None,
            health,
        }),
        _ => None,
    }
}

/// Whether React Router builds a server it can run: server rendering on (no `ssr:
/// false`, no `prerender` list) and `@react-router/serve` among the dependencies (the
/// generated app's `start`); without it the static check names the change.
fn react_router_builds_a_server(project: &Project) -> bool {
    let text = project
        .first_text(&["react-router.config.ts", "react-router.config.js"])
        .map(|(_, t)| without_comments(&t))
        .unwrap_or_default();
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    !compact.contains("ssr:false")
        && !compact.contains("prerender")
        && project.has_dep("@react-router/serve")
}

/// SvelteKit's Node.js server over its build (`build/`): adapter-node as the config
/// names it, or in adapter-auto's place. `sv create`'s adapter-auto has no entry for
/// cdeploy (off the platforms it knows it warns and builds nothing), so the build adds
/// `@sveltejs/adapter-node` (major 5, the one adapter-auto itself installs for a
/// Node.js host) and imports it instead in the build's copy of the config file; the
/// repository is left as it is.
fn sveltekit_server(project: &Project, places: &Places<'_>, health: String) -> Option<ServerPlan> {
    let (file, adapter) = sveltekit_adapter(project)?;
    let prepare = match adapter?.as_str() {
        "node" => None,
        "auto" => Some(format!(
            "{} && sed -i 's#@sveltejs/adapter-auto#@sveltejs/adapter-node#g' {file}",
            places.pm?.add_dev("@sveltejs/adapter-node@5")
        )),
        _ => return None,
    };
    let mut plan = places.install_server(
        "sveltekit",
        vec!["node".into(), "build/index.js".into()],
        "build/client",
        health,
    );
    plan.prepare = prepare;
    Some(plan)
}

/// SvelteKit's config file (svelte.config, or vite.config, where `sv create` now puts
/// the kit options) and the adapter it imports (`node` for `@sveltejs/adapter-node`),
/// if any.
pub(super) fn sveltekit_adapter(project: &Project) -> Option<(String, Option<String>)> {
    let (file, text) = project.first_text(&[
        "svelte.config.js",
        "svelte.config.mjs",
        "svelte.config.ts",
        "vite.config.ts",
        "vite.config.js",
        "vite.config.mjs",
    ])?;
    let text = without_comments(&text);
    let adapter = text.split("@sveltejs/adapter-").nth(1).map(|rest| {
        rest.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect::<String>()
    });
    Some((file, adapter))
}

/// Whether Astro builds a Node.js server it can run: the `@astrojs/node` adapter in
/// `standalone` mode (`middleware` mode makes a handler for a server of the user's own).
fn astro_builds_a_server(project: &Project) -> bool {
    let text = project
        .first_text(&["astro.config.mjs", "astro.config.ts", "astro.config.js"])
        .map(|(_, t)| without_comments(&t))
        .unwrap_or_default();
    text.contains("@astrojs/node") && text.contains("standalone")
}

/// Whether Nuxt builds its server: server-side rendering on (the default) and nitro's
/// preset unset or a Node.js server's; `ssr: false` or a static preset keep `nuxt
/// generate`'s static site, and another platform's preset is [`super::static_check`]'s.
fn nuxt_builds_a_server(project: &Project) -> bool {
    let text = project
        .first_text(&["nuxt.config.ts", "nuxt.config.js"])
        .map(|(_, t)| without_comments(&t))
        .unwrap_or_default();
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.contains("ssr:false") {
        return false;
    }
    nitro_preset(&text).is_none_or(|p| is_node_preset(&p))
}

/// nitro's `preset` in a Nuxt config's text (only nitro's own: other modules have keys
/// of that name).
pub(super) fn nitro_preset(text: &str) -> Option<String> {
    let nitro = text.split_once("nitro").map(|(_, rest)| rest).unwrap_or("");
    quoted_value_after(nitro, "preset")
}

/// Whether a nitro preset builds a Node.js server (what cdeploy runs).
pub(super) fn is_node_preset(preset: &str) -> bool {
    matches!(preset, "node-server" | "node" | "node_server")
}

/// Whether next.config leaves `output` unset (a server by default) or sets it to
/// `standalone`; `export` is a static site, and a value computed from the environment
/// is the user's business (built as a static export, as before).
fn next_builds_a_server(project: &Project) -> bool {
    let text = project
        .first_text(NEXT_CONFIGS)
        .map(|(_, t)| without_comments(&t))
        .unwrap_or_default();
    if !text.contains("output") {
        return true;
    }
    quoted_value_after(&text, "output").as_deref() == Some("standalone")
}

/// The words of a start command: split at spaces, with '…' and "…" quoting. It runs
/// without a shell, so shell syntax is refused rather than passed on as words.
pub fn start_words(command: &str) -> Result<Vec<String>, String> {
    if command.len() > 4096 || command.contains('\0') {
        return Err("is longer than 4096 characters or has a NUL byte".into());
    }
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, '|' | '&' | ';' | '<' | '>' | '$' | '`' | '(' | ')' | '*' | '?' | '\\') => {
                return Err(format!(
                    "{command:?} uses shell syntax ({c}): the server starts without a shell; \
                     name one command, such as `node server.js`, and put the rest in a script"
                ));
            }
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return Err(format!("{command:?} has an unclosed quote"));
    }
    words.extend(word);
    if words.is_empty() {
        return Err("is empty".into());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan;
    use crate::plan::test_support::project;

    #[test]
    fn start_commands_are_words_without_a_shell() {
        assert_eq!(
            start_words("node  'my server.js' --port=1").unwrap(),
            ["node", "my server.js", "--port=1"]
        );
        for bad in ["node a && rm -rf /", "node $X", "node 'a", "", "node a | b"] {
            assert!(start_words(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn next_builds_its_standalone_server_unless_exported() {
        let d = project(&[
            (
                "package.json",
                r#"{"scripts":{"build":"next build"},"dependencies":{"next":"16"}}"#,
            ),
            ("package-lock.json", "{}"),
            (
                "next.config.ts",
                "const c = { reactStrictMode: true };\nexport default c;\n",
            ),
        ]);
        let p = plan(
            d.path(),
            d.path(),
            &BuildConfig::default(),
            &RuntimeConfig::default(),
        );
        let server = p.server.expect("a server");
        assert_eq!(server.kind, "nextjs");
        assert_eq!(server.bundle, ".next/standalone");
        assert_eq!(server.assets[1].prefix, "/_next/static/");
        assert!(p.problem.is_none(), "{:?}", p.problem);
        std::fs::write(
            d.path().join("next.config.ts"),
            "export default { output: 'export' };",
        )
        .unwrap();
        let p = plan(
            d.path(),
            d.path(),
            &BuildConfig::default(),
            &RuntimeConfig::default(),
        );
        assert!(p.server.is_none());
        std::fs::write(
            d.path().join("next.config.ts"),
            "export default { output: \"standalone\" };",
        )
        .unwrap();
        let p = plan(
            d.path(),
            d.path(),
            &BuildConfig::default(),
            &RuntimeConfig::default(),
        );
        assert!(p.server.is_some());
    }

    #[test]
    fn a_plain_node_server_from_runtime_start() {
        let d = project(&[
            ("package.json", r#"{"scripts":{"start":"node server.js"}}"#),
            ("package-lock.json", "{}"),
            ("public/logo.svg", "<svg/>"),
        ]);
        let runtime = RuntimeConfig {
            start: Some("node server.js".into()),
            ..Default::default()
        };
        let p = plan(d.path(), d.path(), &BuildConfig::default(), &runtime);
        let server = p.server.expect("a server");
        assert_eq!(server.kind, "node");
        assert_eq!(
            (server.bundle.as_str(), server.cwd.as_deref()),
            (".", Some("."))
        );
        assert_eq!(server.command, ["node", "server.js"]);
        assert_eq!(server.assets[0].dir, "public");
        assert_eq!(server.health, "/");
    }

    #[test]
    fn sveltekit_as_generated_builds_with_adapter_node_in_auto_s_place() {
        let kit = r#"{"devDependencies":{"@sveltejs/kit":"2","@sveltejs/adapter-auto":"7"}}"#;
        let config = "// adapter-auto only supports some environments\n\
                      import adapter from '@sveltejs/adapter-auto';\n\
                      export default defineConfig({ plugins: [sveltekit({ adapter: adapter() })] });";
        let with = |lockfile: &str, pm: &str| {
            let d = project(&[
                ("package.json", kit),
                (lockfile, ""),
                ("vite.config.ts", config),
            ]);
            let p = plan(
                d.path(),
                d.path(),
                &BuildConfig::default(),
                &RuntimeConfig::default(),
            );
            assert_eq!(p.problem, None);
            let server = p.server.expect("a server");
            assert_eq!(server.command, ["node", "build/index.js"]);
            assert_eq!(
                server.prepare.as_deref(),
                Some(&*format!(
                    "{pm} @sveltejs/adapter-node@5 && sed -i 's#@sveltejs/adapter-auto#@sveltejs/adapter-node#g' vite.config.ts"
                ))
            );
            assert!(
                p.notes.iter().any(|n| n.contains("before the build")),
                "{:?}",
                p.notes
            );
        };
        with(
            "package-lock.json",
            "npm install --no-save --no-audit --no-fund",
        );
        with("pnpm-lock.yaml", "pnpm add -D");
        // adapter-node as configured needs no switch; another platform's adapter is not
        // a server here (the static check names the change).
        let d = project(&[
            ("package.json", kit),
            (
                "svelte.config.js",
                "import adapter from '@sveltejs/adapter-node';",
            ),
        ]);
        let p = plan(
            d.path(),
            d.path(),
            &BuildConfig::default(),
            &RuntimeConfig::default(),
        );
        assert_eq!(p.server.expect("a server").prepare, None);
        let d = project(&[
            ("package.json", kit),
            (
                "svelte.config.js",
                "import adapter from '@sveltejs/adapter-netlify';",
            ),
        ]);
        let p = plan(
            d.path(),
            d.path(),
            &BuildConfig::default(),
            &RuntimeConfig::default(),
        );
        assert!(p.server.is_none() && p.problem.is_some());
    }
}
