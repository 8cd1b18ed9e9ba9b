//! Framework set-ups that build a server app rather than a static site, caught before
//! anything is installed, each with the exact change that makes the site static. Only
//! certain cases are reported; anything computed at build time is left to the check of
//! the build's output ([`super::output::output_dir`]).

use super::js_config::{quoted_value_after, without_comments};
use super::presets::Preset;
use super::project::Project;

/// A framework set up to build a server app rather than a static site: the exact change
/// that makes it static.
pub(super) fn static_problem(preset: &Preset, project: &Project) -> Option<String> {
    match preset.id {
        "sveltekit" => sveltekit(project),
        "astro" => astro(project),
        "nuxt" => nuxt(project),
        "angular" => angular(project),
        "react-router" => react_router(project),
        "remix" => remix(project),
        _ => None,
    }
}

/// The first of `names` that exists, with its text stripped of comments.
fn config_of(project: &Project, names: &[&str]) -> Option<(String, String)> {
    project
        .first_text(names)
        .map(|(f, t)| (f, without_comments(&t)))
}

fn sveltekit(project: &Project) -> Option<String> {
    // adapter-node and adapter-auto build a server app (`super::server`).
    let (file, adapter) = super::server::sveltekit_adapter(project)?;
    match adapter.as_deref() {
        Some("static") => None,
        Some(other) => Some(format!(
            "SvelteKit with @sveltejs/adapter-{other} builds a server app for another platform: to run it as a server here, \
             add the dev dependency @sveltejs/adapter-node (npm i -D @sveltejs/adapter-node) and import adapter from '@sveltejs/adapter-node' in {file}; \
             for a static site, add the dev dependency @sveltejs/adapter-static (npm i -D @sveltejs/adapter-static), import adapter from '@sveltejs/adapter-static' in {file}, \
             and add `export const prerender = true;` to src/routes/+layout.ts (or pass `fallback: 'index.html'` to adapter() for a SPA)"
        )),
        None => Some(format!(
            "SvelteKit needs an adapter to build a static site: add the dev dependency @sveltejs/adapter-static and \
             `import adapter from '@sveltejs/adapter-static'` with `adapter: adapter()` in {file}"
        )),
    }
}

fn astro(project: &Project) -> Option<String> {
    let (file, text) = config_of(
        project,
        &["astro.config.mjs", "astro.config.ts", "astro.config.js"],
    )?;
    (quoted_value_after(&text, "output").as_deref() == Some("server")).then(|| {
        format!(
            "Astro is set to `output: 'server'` in {file}, which builds a server app: add the Node adapter in standalone mode \
             (npx astro add node) to run it as one, or remove that line and the server adapter (pages are prerendered by default), \
             or set `output: 'static'`"
        )
    })
}

fn nuxt(project: &Project) -> Option<String> {
    let (file, text) = config_of(project, &["nuxt.config.ts", "nuxt.config.js"])?;
    match super::server::nitro_preset(&text).as_deref() {
        Some(p) if p.contains("static") || super::server::is_node_preset(p) => None,
        Some(p) => Some(format!(
            "Nuxt's nitro preset is {p:?} in {file}, another platform's server: remove it (cdeploy runs nitro's node-server) or set `nitro: {{ preset: 'static' }}` for a static site"
        )),
        None => None,
    }
}

fn angular(project: &Project) -> Option<String> {
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

fn react_router(project: &Project) -> Option<String> {
    let (file, text) = config_of(
        project,
        &["react-router.config.ts", "react-router.config.js"],
    )
    .unwrap_or_else(|| ("react-router.config.ts".into(), String::new()));
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    (!compact.contains("ssr:false") && !compact.contains("prerender")).then(|| {
        format!(
            "React Router builds a server app by default: add the dependency @react-router/serve (npm i @react-router/serve) to run it as one, \
             or set `ssr: false` in {file} (SPA mode), or list the routes in `prerender`"
        )
    })
}

fn remix(project: &Project) -> Option<String> {
    let (file, text) = config_of(
        project,
        &["vite.config.ts", "vite.config.js", "vite.config.mjs"],
    )?;
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    (!compact.contains("ssr:false")).then(|| {
        format!("Remix builds a server app by default: pass `ssr: false` to the remix() plugin in {file} (SPA mode)")
    })
}

#[cfg(test)]
mod tests {
    use crate::config::BuildConfig;
    use crate::plan::plan;
    use crate::plan::test_support::{plan_of, project};

    #[test]
    fn server_configurations_name_the_change() {
        let kit = r#"{"devDependencies":{"@sveltejs/kit":"2","vite":"7"}}"#;
        let p = plan_of(&[
            ("package.json", kit),
            ("svelte.config.js", "import adapter from '@sveltejs/adapter-vercel';\nexport default { kit: { adapter: adapter() } };"),
        ]);
        assert_eq!(p.framework.unwrap().id, "sveltekit");
        let problem = p.problem.unwrap();
        assert!(
            problem.contains("adapter-vercel")
                && problem.contains("@sveltejs/adapter-node")
                && problem.contains("@sveltejs/adapter-static"),
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
        assert_eq!((p.problem, p.server.map(|s| s.kind)), (None, Some("nuxt")));
        let p = plan_of(&[
            ("package.json", nuxt),
            (
                "nuxt.config.ts",
                "export default defineNuxtConfig({ nitro: { preset: 'vercel' } })",
            ),
        ]);
        assert!(p.problem.unwrap().contains("\"vercel\""));
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
        assert_eq!(
            (p.server.is_none(), p.build.as_deref()),
            (true, Some("npm run generate"))
        );
        let p = plan_of(&[
            (
                "package.json",
                r#"{"scripts":{"build":"nuxt build","generate":"nuxt generate"},"dependencies":{"nuxt":"4"}}"#,
            ),
            (
                "nuxt.config.ts",
                "export default defineNuxtConfig({ devtools: { enabled: true } })",
            ),
        ]);
        assert_eq!(p.build.as_deref(), Some("npm run build"));
        assert_eq!(p.server.unwrap().bundle, ".output/server");
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
        assert_eq!(
            plan(d.path(), d.path(), &cfg, &Default::default()).problem,
            None
        );
    }
}
