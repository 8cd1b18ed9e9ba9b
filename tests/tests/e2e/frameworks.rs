//! Real apps at zero config: fixtures made by their frameworks' own generators (or, where
//! the generator downloads its template from GitHub, written by hand after it), deployed
//! with no cdeploy.toml, and checked in Chromium. Next.js runs as a server app
//! (server_apps.rs has the runtime's own checks), as do Nuxt, SvelteKit (adapter-auto
//! as generated, or adapter-node), Astro with its Node adapter and React Router's
//! framework mode; set-ups that build another platform's server fail with exit 1 and
//! the exact change to make, before anything is installed.

use cdeploy_tests::*;

/// `cdeploy deploy --json` of `dir`; returns the document and stderr (the log).
fn deploy(
    server: &Server,
    dir: &std::path::Path,
    slug: &str,
    code: i32,
) -> (serde_json::Value, String) {
    let out = server.cli(dir, &["deploy", "--slug", slug, "--json"]);
    out.assert_code(code);
    (out.json(), out.stderr.clone())
}

/// The `len` characters of a server-rendered page from its per-request value on
/// ("Rendered at …"): two requests must differ there.
fn rendered_at(page: &Page, len: usize) -> String {
    let at = page
        .body
        .find("Rendered at")
        .expect("the per-request value");
    page.body[at..at + len].to_string()
}

/// The DOM of a page of `slug` in Chromium, checked to contain `text`.
fn page_shows(server: &Server, slug: &str, path: &str, text: &str) {
    let dom = chromium_dom(&server.site_url(slug, path));
    assert!(
        dom.contains(text),
        "{path} of {slug} should show {text:?}:\n{dom}"
    );
}

#[test]
fn nextjs_as_generated_runs_as_a_server_app_and_deploys_exported_too() {
    let server = Server::start();
    let app = fixture("next-app");
    let dir = app.path().join("next-app");

    // create-next-app (plus a per-request page, an API route and a raster image) is a
    // server app: its standalone server, no next.config change.
    let (d, log) = deploy(&server, &dir, "next", 0);
    assert_eq!(d["status"], "ready", "{log}");
    assert!(
        log.contains("Server app: Next.js's standalone server"),
        "{log}"
    );
    assert!(log.contains("cdeploy: GET / answered 200"), "{log}");
    let (a, b) = (server.site("next", "/now"), server.site("next", "/now"));
    assert_eq!((a.status, b.status), (200, 200));
    assert_ne!(
        rendered_at(&a, 60),
        rendered_at(&b, 60),
        "rendered per request"
    );
    assert!(
        a.body.contains("next.localhost"),
        "the visitor's Host reaches the server"
    );
    let api = server.site("next", "/api/time");
    assert_eq!(api.header("content-type"), "application/json");
    assert!(api.body.contains("\"runtime\":\"v24."), "{}", api.body);
    // next/image, optimized by the server from public/.
    let image = server.site("next", "/_next/image?url=%2Fgradient.png&w=48&q=75");
    assert_eq!(image.status, 200, "{}", image.body);
    assert!(image.header("content-type").starts_with("image/"));
    // Hashed assets: the proxy's, immutable, never in the server's log.
    let script = a
        .body
        .split('"')
        .find(|s| s.starts_with("/_next/static/") && s.ends_with(".js"))
        .expect("a script of the page")
        .to_string();
    let js = server.site("next", &script);
    assert_eq!(js.status, 200);
    assert!(js.header("cache-control").contains("immutable"));
    let runtime = server.cli(&dir, &["logs", "next", "--runtime"]);
    runtime.assert_code(0);
    assert!(
        runtime.stdout.contains("GET /now → 200"),
        "{}",
        runtime.stdout
    );
    assert!(
        !runtime.stdout.contains("/_next/static/"),
        "{}",
        runtime.stdout
    );
    // Hydrated in a browser.
    page_shows(&server, "next", "/now", "Rendered at");
    page_shows(&server, "next", "/", "To get started, edit the");

    // A static export cannot have the per-request page and the API route.
    std::fs::remove_dir_all(dir.join("src/app/now")).unwrap();
    std::fs::remove_dir_all(dir.join("src/app/api")).unwrap();

    // `output: 'export'` with cacheComponents kept: Next's own error is the reason.
    let config = std::fs::read_to_string(dir.join("next.config.ts")).unwrap();
    std::fs::write(
        dir.join("next.config.ts"),
        config.replace(
            "const nextConfig: NextConfig = {",
            "const nextConfig: NextConfig = {\n  output: \"export\",",
        ),
    )
    .unwrap();
    let (d, log) = deploy(&server, &dir, "next", 1);
    let msg = d["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("build failed: `npm run build`"),
        "{msg}\n{log}"
    );
    assert!(
        msg.contains("Error: Invariant: PPR cannot be enabled in export mode"),
        "Next's own first error line: {msg}\n{log}"
    );

    // The documented static export deploys, with a deep link.
    std::fs::write(
        dir.join("next.config.ts"),
        "import type { NextConfig } from \"next\";\n\nconst nextConfig: NextConfig = {\n  output: \"export\",\n  images: { unoptimized: true },\n};\n\nexport default nextConfig;\n",
    )
    .unwrap();
    write_files(
        &dir,
        &[(
            "src/app/about/page.tsx",
            "export default function About() {\n  return <h1 id=\"title\">About this Next.js site</h1>;\n}\n",
        )],
    );
    let (d, log) = deploy(&server, &dir, "next", 0);
    assert_eq!(d["status"], "ready", "{log}");
    assert!(log.contains("Framework: Next.js"), "{log}");
    page_shows(&server, "next", "/", "To get started, edit the");
    page_shows(&server, "next", "/about", "About this Next.js site");
}

/// A hashed script a SvelteKit page loads, as an absolute path (SvelteKit links
/// relatively: `./_app/…` from /now is `/_app/…`).
fn kit_script(page: &Page) -> String {
    let script = page
        .body
        .split('"')
        .find(|s| s.contains("_app/immutable/") && s.ends_with(".js"))
        .expect("a script of the page");
    format!(
        "/{}",
        script.trim_start_matches("./").trim_start_matches('/')
    )
}

#[test]
fn sveltekit_as_generated_runs_as_a_server_and_with_adapter_static_as_a_site() {
    let server = Server::start();
    // sv create's app as it is (adapter-auto, which the build switches to adapter-node
    // in its own copy of vite.config.ts), plus a route loaded on the server per request.
    let auto = fixture("sveltekit-app");
    let dir = auto.path().join("sveltekit-app");
    let (d, log) = deploy(&server, &dir, "kit", 0);
    assert_eq!(d["status"], "ready", "{log}");
    assert!(
        log.contains("Server app: SvelteKit's Node.js server"),
        "{log}"
    );
    assert!(
        log.contains(
            "$ npm install --no-save --no-audit --no-fund @sveltejs/adapter-node@5 && sed -i"
        ),
        "{log}"
    );
    assert!(log.contains("Using @sveltejs/adapter-node"), "{log}");
    let page = server.site("kit", "/");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Welcome to SvelteKit"), "{}", page.body);
    let (a, b) = (server.site("kit", "/now"), server.site("kit", "/now"));
    assert_eq!((a.status, b.status), (200, 200), "{}", a.body);
    assert_ne!(
        rendered_at(&a, 40),
        rendered_at(&b, 40),
        "rendered per request"
    );
    let js = server.site("kit", &kit_script(&page));
    assert_eq!(js.status, 200);
    assert!(js.header("cache-control").contains("immutable"));
    let runtime = server.cli(&dir, &["logs", "kit", "--runtime"]);
    assert!(
        runtime.stdout.contains("GET /now → 200"),
        "{}",
        runtime.stdout
    );
    assert!(!runtime.stdout.contains("/_app/"), "{}", runtime.stdout);
    page_shows(&server, "kit", "/", "Welcome to SvelteKit");
    page_shows(&server, "kit", "/now", "Rendered at");
    // The repository is left as it is.
    let config = std::fs::read_to_string(dir.join("vite.config.ts")).unwrap();
    assert!(config.contains("'@sveltejs/adapter-auto'"), "{config}");
    // The install, adapter-node with it, is kept for the next build (of a changed
    // source: the same one again would not be built, docs/skipping.md).
    write_files(
        &dir,
        &[("NOTES.md", "a change the install does not read\n")],
    );
    let (d, log) = deploy(&server, &dir, "kit", 0);
    assert_eq!(d["status"], "ready", "{log}");
    assert!(
        log.contains("Restored node_modules from the build cache"),
        "{log}"
    );

    let static_app = fixture("sveltekit-static");
    let (_, log) = deploy(
        &server,
        &static_app.path().join("sveltekit-static"),
        "kit-static",
        0,
    );
    assert!(
        log.contains("Framework: SvelteKit (adapter-static)"),
        "{log}"
    );
    page_shows(&server, "kit-static", "/", "Welcome to SvelteKit");
    page_shows(&server, "kit-static", "/about", "About SvelteKit");
}

#[test]
fn astro_gets_the_node_version_its_nvmrc_asks_for() {
    // Astro 7 needs Node >= 22.12; the host's own Node (20 here) is never used.
    let server = Server::start();
    let app = fixture("astro-app");
    let (_, log) = deploy(&server, &app.path().join("astro-app"), "astro", 0);
    assert!(log.contains("Framework: Astro"), "{log}");
    assert!(log.contains("Node.js 22.12.0 from .nvmrc (22.12)"), "{log}");
    page_shows(
        &server,
        "astro",
        "/",
        "Built with Node <span id=\"node\">v22.12.0</span>",
    );
    page_shows(&server, "astro", "/about/", "About this Astro site");
}

#[test]
fn eleventy_and_nuxt_build_with_their_presets() {
    let server = Server::start();
    // No build script at all: the preset runs eleventy and serves _site. Its lockfile is
    // npm 11's, with an `extraneous` darwin-only fsevents entry that npm 10 refuses
    // (EBADPLATFORM): it installs with the npm the default Node.js (24) bundles.
    let eleventy = fixture("eleventy-app");
    let (_, log) = deploy(
        &server,
        &eleventy.path().join("eleventy-app"),
        "eleventy",
        0,
    );
    assert!(
        log.contains("Package manager: npm 11.")
            && log.contains("(the npm 11 line, as Node.js 24 bundles it)"),
        "{log}"
    );
    assert!(log.contains("$ npx --no-install eleventy"), "{log}");
    page_shows(&server, "eleventy", "/", "Hello from Eleventy");
    page_shows(&server, "eleventy", "/posts/first/", "The first post");

    // Nuxt as generated renders on the server: `nuxt build`, nitro's node-server.
    let nuxt = fixture("nuxt-app");
    let dir = nuxt.path().join("nuxt-app");
    let (_, log) = deploy(&server, &dir, "nuxt", 0);
    assert!(log.contains("$ npm run build"), "{log}");
    assert!(log.contains("Server app: Nuxt's Node.js server"), "{log}");
    // Rendered by the server (the HTML has the page before any script runs)…
    let about = server.site("nuxt", "/about");
    assert_eq!(about.status, 200);
    assert!(
        about.body.contains("About this Nuxt site"),
        "{}",
        about.body
    );
    // …its assets the proxy's, immutable; hydrated in a browser.
    let script = about
        .body
        .split('"')
        .find(|s| s.starts_with("/_nuxt/") && s.ends_with(".js"))
        .expect("a script of the page")
        .to_string();
    let js = server.site("nuxt", &script);
    assert_eq!(js.status, 200);
    assert!(js.header("cache-control").contains("immutable"));
    page_shows(&server, "nuxt", "/", "Hello from Nuxt");
    page_shows(&server, "nuxt", "/about", "About this Nuxt site");
    let runtime = server.cli(&dir, &["logs", "nuxt", "--runtime"]);
    assert!(
        runtime.stdout.contains("GET /about → 200"),
        "{}",
        runtime.stdout
    );
    assert!(!runtime.stdout.contains("/_nuxt/"), "{}", runtime.stdout);
}

#[test]
fn gatsby_serves_the_public_folder_it_builds() {
    // Gatsby 5's minimal starter: `public/` is where `gatsby build` writes the site (for
    // Gatsby it is the output, not an input folder), with a 404 page of its own.
    let server = Server::start();
    let app = fixture("gatsby-app");
    let (d, log) = deploy(&server, &app.path().join("gatsby-app"), "gatsby", 0);
    assert!(log.contains("Framework: Gatsby"), "{log}");
    assert_eq!(d["status"], "ready", "{d}");
    page_shows(&server, "gatsby", "/", "you just made a Gatsby site!");
    page_shows(&server, "gatsby", "/about/", "About gatsby-app");
    let missing = server.site("gatsby", "/no/such/page/");
    assert_eq!(missing.status, 404);
    assert!(
        missing.body.contains("Page not found"),
        "Gatsby's own 404.html: {}",
        missing.body
    );
}
#[test]
fn pnpm_yarn_and_bun_apps_build_with_package_managers_the_builder_provides() {
    let server = Server::start();
    let pnpm = fixture("pnpm-app");
    let slug = fresh_slug("pnpm");
    let (_, log) = deploy(&server, &pnpm.path().join("pnpm-app"), &slug, 0);
    assert!(log.contains("Package manager: pnpm 10."), "{log}");
    assert!(log.contains("from pnpm-lock.yaml"), "{log}");
    assert!(log.contains("$ pnpm install --frozen-lockfile"), "{log}");
    page_shows(&server, &slug, "/", "Get started");

    let yarn = fixture("yarn-app");
    let slug = fresh_slug("yarn");
    let (_, log) = deploy(&server, &yarn.path().join("yarn-app"), &slug, 0);
    assert!(
        log.contains("Package manager: Yarn classic 1.22.22 from packageManager in package.json"),
        "{log}"
    );
    assert!(log.contains("$ yarn install --frozen-lockfile"), "{log}");
    page_shows(&server, &slug, "/", "Get started");

    // Yarn 4 (berry), pinned by packageManager, with nodeLinker: node-modules.
    let berry = fixture("berry-app");
    let slug = fresh_slug("berry");
    let (_, log) = deploy(&server, &berry.path().join("berry-app"), &slug, 0);
    assert!(
        log.contains("Package manager: Yarn 4.18.1 from packageManager in package.json"),
        "{log}"
    );
    assert!(log.contains("$ yarn install --immutable"), "{log}");
    page_shows(&server, &slug, "/", "Get started");

    // Bun, from its text lockfile (bun.lock), the binary fetched like the others.
    let bun = fixture("bun-app");
    let slug = fresh_slug("bun");
    let (_, log) = deploy(&server, &bun.path().join("bun-app"), &slug, 0);
    assert!(log.contains("Package manager: Bun 1."), "{log}");
    assert!(log.contains("from bun.lock"), "{log}");
    assert!(log.contains("$ bun install --frozen-lockfile"), "{log}");
    page_shows(&server, &slug, "/", "Get started");
}

#[test]
fn angular_serves_the_browser_folder_named_in_angular_json() {
    // `ng new` (Angular 22): the page is at dist/angular-app/browser/index.html.
    let server = Server::start();
    let app = fixture("angular-app");
    let (_, log) = deploy(&server, &app.path().join("angular-app"), "angular", 0);
    assert!(log.contains("Framework: Angular"), "{log}");
    page_shows(&server, "angular", "/", "Hello, angular-app");
    // A client-side route: the SPA fallback serves index.html, the router renders it.
    page_shows(&server, "angular", "/about", "About this Angular app");
}

#[test]
fn docusaurus_react_router_and_remix_spa_deploy_with_their_presets() {
    let server = Server::start();
    // create-docusaurus's classic template: ~1,300 packages, output build/. npm 10 wrote
    // its lockfile without @swc/html's other-platform binaries, which npm 11 (bundled with
    // the Node.js 24 it builds with) calls out of sync: it installs with npm 10.
    let docs = fixture("docs-app");
    let (_, log) = deploy(&server, &docs.path().join("docs-app"), "docs", 0);
    assert!(log.contains("Framework: Docusaurus"), "{log}");
    assert!(
        log.contains("Package manager: npm 10.") && log.contains("would call it out of sync"),
        "{log}"
    );
    page_shows(&server, "docs", "/", "Dinosaurs are cool");
    page_shows(&server, "docs", "/docs/intro", "Tutorial Intro");

    // React Router in SPA mode (ssr: false): build/client, client-side routes.
    let rr = fixture("react-router-app");
    let (_, log) = deploy(&server, &rr.path().join("react-router-app"), "rr", 0);
    assert!(log.contains("Framework: React Router (SPA mode)"), "{log}");
    page_shows(&server, "rr", "/", "Hello from React Router");
    page_shows(&server, "rr", "/about", "About this React Router app");

    // Remix v2 in SPA mode (`remix({ ssr: false })`), written after its template.
    let remix = fixture("remix-app");
    let (_, log) = deploy(&server, &remix.path().join("remix-app"), "remix", 0);
    assert!(log.contains("Framework: Remix (SPA mode)"), "{log}");
    page_shows(&server, "remix", "/", "Hello from Remix");
    page_shows(&server, "remix", "/about", "About this Remix app");
}

#[test]
fn create_react_app_and_vue_cli_deploy_as_spas() {
    let server = Server::start();
    // create-react-app and @vue/cli's default preset, as generated.
    let cra = fixture("cra-app");
    let (_, log) = deploy(&server, &cra.path().join("cra-app"), "cra", 0);
    assert!(log.contains("Framework: Create React App"), "{log}");
    page_shows(&server, "cra", "/", "src/App.js");
    // No router in the template: a deep link gets the app (SPA fallback), not a 404.
    page_shows(&server, "cra", "/some/deep/link", "src/App.js");

    let vue = fixture("vue-cli-app");
    let (_, log) = deploy(&server, &vue.path().join("vue-cli-app"), "vuecli", 0);
    assert!(log.contains("Framework: Vue CLI"), "{log}");
    page_shows(&server, "vuecli", "/", "Welcome to Your Vue.js App");
    page_shows(
        &server,
        "vuecli",
        "/some/deep/link",
        "Welcome to Your Vue.js App",
    );
}

#[test]
fn react_router_framework_mode_runs_as_a_server_app() {
    let server = Server::start();
    // create-react-router's framework mode (ssr on, react-router-serve), plus a route
    // whose loader runs on the server per request.
    let app = fixture("react-router-ssr-app");
    let dir = app.path().join("react-router-ssr-app");
    let (d, log) = deploy(&server, &dir, "rr", 0);
    assert_eq!(d["status"], "ready", "{log}");
    assert!(log.contains("Server app: React Router's server"), "{log}");
    let (a, b) = (server.site("rr", "/now"), server.site("rr", "/now"));
    assert_eq!((a.status, b.status), (200, 200), "{}", a.body);
    assert_ne!(
        rendered_at(&a, 60),
        rendered_at(&b, 60),
        "rendered per request"
    );
    let script = a
        .body
        .split('"')
        .find(|s| s.starts_with("/assets/") && s.ends_with(".js"))
        .expect("a script of the page")
        .to_string();
    let js = server.site("rr", &script);
    assert_eq!(js.status, 200);
    assert!(js.header("cache-control").contains("immutable"), "{script}");
    let runtime = server.cli(&dir, &["logs", "rr", "--runtime"]);
    assert!(
        runtime.stdout.contains("GET /now → 200"),
        "{}",
        runtime.stdout
    );
    assert!(!runtime.stdout.contains("/assets/"), "{}", runtime.stdout);
    page_shows(&server, "rr", "/now", "Rendered at");
    page_shows(&server, "rr", "/about", "About");
}

#[test]
fn astro_with_the_node_adapter_runs_as_a_server_app() {
    let server = Server::start();
    // The Astro fixture after `astro add node` (output: 'server', standalone), with a
    // page rendered per request.
    let app = fixture("astro-ssr-app");
    let dir = app.path().join("astro-ssr-app");
    let (d, log) = deploy(&server, &dir, "astro-ssr", 0);
    assert_eq!(d["status"], "ready", "{log}");
    assert!(log.contains("Server app: Astro's Node.js server"), "{log}");
    let (a, b) = (
        server.site("astro-ssr", "/now"),
        server.site("astro-ssr", "/now"),
    );
    assert_eq!((a.status, b.status), (200, 200), "{}", a.body);
    assert_ne!(
        rendered_at(&a, 40),
        rendered_at(&b, 40),
        "rendered per request"
    );
    assert!(a.body.contains("astro-ssr.localhost"), "{}", a.body);
    // The favicon is the proxy's; pages are the server's.
    assert_eq!(server.site("astro-ssr", "/favicon.svg").status, 200);
    let runtime = server.cli(&dir, &["logs", "astro-ssr", "--runtime"]);
    assert!(
        runtime.stdout.contains("GET /now → 200"),
        "{}",
        runtime.stdout
    );
    assert!(!runtime.stdout.contains("favicon"), "{}", runtime.stdout);
    page_shows(&server, "astro-ssr", "/now", "Rendered at");
    page_shows(&server, "astro-ssr", "/about", "About");
}

#[test]
fn sveltekit_with_adapter_node_runs_as_a_server_app() {
    let server = Server::start();
    // sv create's app with adapter-node in adapter-auto's place (the change the refusal
    // of adapter-auto names), plus a route loaded on the server per request.
    let app = fixture("sveltekit-node-app");
    let dir = app.path().join("sveltekit-node-app");
    let (d, log) = deploy(&server, &dir, "kit-node", 0);
    assert_eq!(d["status"], "ready", "{log}");
    assert!(
        log.contains("Server app: SvelteKit's Node.js server"),
        "{log}"
    );
    let (a, b) = (
        server.site("kit-node", "/now"),
        server.site("kit-node", "/now"),
    );
    assert_eq!((a.status, b.status), (200, 200), "{}", a.body);
    assert_ne!(
        rendered_at(&a, 40),
        rendered_at(&b, 40),
        "rendered per request"
    );
    let js = server.site("kit-node", &kit_script(&a));
    assert_eq!(js.status, 200);
    assert!(js.header("cache-control").contains("immutable"));
    let runtime = server.cli(&dir, &["logs", "kit-node", "--runtime"]);
    assert!(
        runtime.stdout.contains("GET /now → 200"),
        "{}",
        runtime.stdout
    );
    assert!(!runtime.stdout.contains("/_app/"), "{}", runtime.stdout);
    page_shows(&server, "kit-node", "/now", "Rendered at");
}
