//! Never `ready` for a broken site: an output without an index page, or a framework's
//! input folder taken for its output, fails with exit 1 and says what it found.

use cdeploy_tests::*;

fn failed_deploy(server: &Server, dir: &std::path::Path, slug: &str) -> String {
    let out = server.cli(dir, &["deploy", "--slug", slug, "--json"]);
    out.assert_code(1);
    let d = out.json();
    assert_eq!(d["status"], "failed", "{d}");
    assert!(server.site(slug, "/").status == 404);
    d["error"]["message"].as_str().unwrap_or("").to_string()
}

#[test]
fn an_output_without_index_html_fails_saying_what_it_found() {
    let server = Server::start();

    // Assets only.
    let assets = tempfile::tempdir().unwrap();
    write_build_command(
        assets.path(),
        "mkdir -p out && echo 'x' > out/app.js && echo 'y' > out/app.css",
        "output = \"out\"\n",
    );
    let msg = failed_deploy(&server, assets.path(), "noindex");
    assert!(msg.contains("has no index.html"), "{msg}");
    assert!(msg.contains("/app.js") && msg.contains("2 files"), "{msg}");
    assert!(msg.contains("require_index = false"), "{msg}");

    // The page one level down, as Angular writes it (dist/<project>/browser).
    let nested = tempfile::tempdir().unwrap();
    write_build_command(
        nested.path(),
        "mkdir -p dist/shop/browser && echo '<h1>shop</h1>' > dist/shop/browser/index.html",
        "",
    );
    let msg = failed_deploy(&server, nested.path(), "nested");
    assert!(
        msg.contains("its index.html is at /shop/browser/index.html"),
        "{msg}"
    );

    // Opting in: an index-less site deploys.
    write_build_command(
        assets.path(),
        "mkdir -p out && echo 'x' > out/app.js",
        "output = \"out\"\n[site]\nrequire_index = false\n",
    );
    server
        .cli(assets.path(), &["deploy", "--slug", "noindex", "--json"])
        .assert_code(0);
    assert_eq!(server.site("noindex", "/app.js").body.trim(), "x");
}

#[test]
fn a_frameworks_public_folder_is_never_taken_for_its_output() {
    let server = Server::start();
    // As Next.js (server-rendered) or Nuxt leave it: a build that writes no static
    // site, and public/ holding the framework's input assets.
    let app = tempfile::tempdir().unwrap();
    write_files(
        app.path(),
        &[
            ("public/robots.txt", "User-agent: *"),
            ("public/favicon.ico", "icon"),
        ],
    );
    write_build_command(
        app.path(),
        "mkdir -p .next && echo built > .next/BUILD_ID",
        "",
    );
    let msg = failed_deploy(&server, app.path(), "ssr");
    assert!(
        msg.contains("public/ is this framework's input folder"),
        "{msg}"
    );
    assert!(msg.contains("output: 'export'"), "{msg}");

    // A public/ the build itself creates (Gatsby) is the output.
    let gatsby = tempfile::tempdir().unwrap();
    write_build_command(
        gatsby.path(),
        "mkdir -p public && echo '<h1>gatsby</h1>' > public/index.html",
        "",
    );
    server
        .cli(gatsby.path(), &["deploy", "--slug", "gatsby", "--json"])
        .assert_code(0);
    assert!(server.site("gatsby", "/").body.contains("gatsby"));
}

/// An npm-workspaces monorepo (made by npm: its lockfile is real) whose app imports a
/// sibling workspace package: with `[build] root = "apps/web"` the install runs at the
/// workspace root (`npm ci`, from its lockfile), the build in the app, and the output
/// is the app's `dist`.
#[test]
fn an_npm_workspaces_monorepo_deploys_with_root_set() {
    let server = Server::start();
    let tmp = fixture("npm-monorepo");
    let dir = tmp.path().join("npm-monorepo");
    // A project of its own: a cached install would skip the `npm ci` looked for below.
    let slug = fresh_slug("mono");
    let out = server.cli(&dir, &["deploy", "--slug", &slug, "--json"]);
    out.assert_code(0);
    assert_workspace_site(&server, &slug);
    let id = out.json()["id"].as_str().unwrap().to_string();
    let logs = server.cli(&dir, &["logs", &slug, "--deployment", &id]);
    assert!(
        logs.stdout
            .contains("Workspace: installing at the repository root"),
        "{}",
        logs.stdout
    );
    assert!(logs.stdout.contains("npm ci"), "{}", logs.stdout);
}

#[test]
fn deploy_dry_prints_the_plan_and_builds_nothing() {
    let server = Server::start();
    let astro = fixture("astro-app");
    let out = server.cli(
        &astro.path().join("astro-app"),
        &["deploy", "--dry", "--json"],
    );
    out.assert_code(0);
    let plan = out.json();
    assert_eq!(plan["framework"]["id"], "astro", "{plan}");
    assert_eq!(plan["node"]["spec"], "22.12", "{plan}");
    assert_eq!(plan["node"]["source"], ".nvmrc", "{plan}");
    assert_eq!(plan["package_manager"]["name"], "npm", "{plan}");
    assert_eq!(plan["install"], "npm ci", "{plan}");
    assert_eq!(plan["build"], "npm run build", "{plan}");
    assert_eq!(plan["output"]["dir"], "dist", "{plan}");

    let text = server.cli(&astro.path().join("astro-app"), &["deploy", "--dry"]);
    text.assert_code(0);
    assert!(
        text.stdout.contains("Node.js          22.12 from .nvmrc"),
        "{}",
        text.stdout
    );

    // A server app: its server, the static folders the proxy serves, its health check.
    let next = fixture("next-app");
    let out = server.cli(
        &next.path().join("next-app"),
        &["deploy", "--dry", "--json"],
    );
    out.assert_code(0);
    let plan = out.json();
    assert_eq!(plan["server"]["kind"], "nextjs", "{plan}");
    assert_eq!(plan["server"]["bundle"], ".next/standalone", "{plan}");
    let text = server.cli(&next.path().join("next-app"), &["deploy", "--dry"]);
    text.assert_code(0);
    assert!(
        text.stdout
            .contains("Static files     public at /, .next/static at /_next/static/"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("Health check     GET /"),
        "{}",
        text.stdout
    );

    // SvelteKit as generated: adapter-node in adapter-auto's place, before the build.
    let kit = fixture("sveltekit-app");
    let text = server.cli(&kit.path().join("sveltekit-app"), &["deploy", "--dry"]);
    text.assert_code(0);
    assert!(
        text.stdout.contains(
            "Before build     npm install --no-save --no-audit --no-fund @sveltejs/adapter-node@5"
        ),
        "{}",
        text.stdout
    );

    // A plan that cannot give a site here (another platform's server): exit 1 with the
    // change to make.
    let vercel = tempfile::tempdir().unwrap();
    for (name, text) in [
        (
            "package.json",
            r#"{"devDependencies":{"@sveltejs/kit":"2"}}"#,
        ),
        (
            "svelte.config.js",
            "import adapter from '@sveltejs/adapter-vercel';",
        ),
    ] {
        std::fs::write(vercel.path().join(name), text).unwrap();
    }
    let out = server.cli(vercel.path(), &["deploy", "--dry", "--json"]);
    out.assert_code(1);
    assert!(out.json()["problem"]
        .as_str()
        .unwrap()
        .contains("@sveltejs/adapter-static"));

    // Nothing reached the server.
    let ls = server.cli(astro.path(), &["ls", "--json"]);
    ls.assert_code(0);
    assert_eq!(
        ls.json().as_array().map(|a| a.len()),
        Some(0),
        "{}",
        ls.stdout
    );
}

#[test]
fn deploy_from_a_workspace_package_uploads_the_workspace() {
    let server = Server::start();
    let tmp = fixture("npm-monorepo");
    let repo = tmp.path().join("npm-monorepo");
    let _ = std::fs::remove_file(repo.join("cdeploy.toml"));
    git(&repo, &["init", "-q"]);
    // Run where a developer works: in the app's own folder, no flags.
    let out = server.cli(&repo.join("apps/web"), &["deploy", "--json"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("is part of the workspace at"),
        "{}",
        out.stderr
    );
    assert_eq!(out.json()["slug"], "web");
    assert_workspace_site(&server, "web");
}

/// `cdeploy` with a fresh `$HOME`, aimed at a local API nothing listens on yet.
struct FreshMachine {
    home: tempfile::TempDir,
    api: String,
    proxy_port: u16,
}

impl FreshMachine {
    fn cli(&self, args: &[&str]) -> CliOutput {
        std::process::Command::new(bin("cdeploy"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("CDEPLOY_API", &self.api)
            .env(
                "CDEPLOY_PROXY_LISTEN",
                format!("127.0.0.1:{}", self.proxy_port),
            )
            .env("CDEPLOY_DOMAIN", format!("localhost:{}", self.proxy_port))
            // The tests' shared caches (toolchains, npm): only to keep the suite fast.
            .env("CDEPLOY_CACHE_DIR", shared_cache_dir())
            .env("NO_COLOR", "1")
            .output()
            .expect("run cdeploy")
            .into()
    }
}

impl Drop for FreshMachine {
    fn drop(&mut self) {
        let _ = self.cli(&["server", "stop"]);
    }
}

#[test]
fn the_first_deploy_starts_the_local_server_by_itself() {
    let machine = FreshMachine {
        home: traversable_tempdir(),
        api: format!("http://127.0.0.1:{}", free_port()),
        proxy_port: free_port(),
    };
    let app = fixture("vite-app");
    let out = machine.cli(&["deploy", app.path().join("vite-app").to_str().unwrap()]);
    out.assert_code(0);
    assert!(
        out.stderr
            .contains("Started a local cdeploy server in the background"),
        "{}",
        out.stderr
    );
    let url = format!("http://vite-app.localhost:{}", machine.proxy_port);
    assert_eq!(out.stdout.trim(), url, "the live URL: {}", out.stderr);
    let page = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{}/", machine.proxy_port))
        .header("host", format!("vite-app.localhost:{}", machine.proxy_port))
        .send()
        .unwrap();
    assert!(page.status().is_success());

    // Running now: the next deploy just uses it; `server` manages it.
    let again = machine.cli(&["deploy", app.path().join("vite-app").to_str().unwrap()]);
    again.assert_code(0);
    assert!(
        !again.stderr.contains("Started a local"),
        "{}",
        again.stderr
    );
    let status = machine.cli(&["server", "status"]);
    status.assert_code(0);
    assert!(status.stdout.starts_with("running at"), "{}", status.stdout);
    let logs = machine.cli(&["server", "logs", "-n", "50"]);
    assert!(logs.stdout.contains("build finished"), "{}", logs.stdout);
    assert!(!logs.stdout.contains('\u{1b}'), "a log file has no colors");
    machine.cli(&["server", "stop"]).assert_code(0);
    machine.cli(&["server", "status"]).assert_code(3);
}

/// Root's home is closed (`/root` is 0700): builds and server apps run as an
/// unprivileged uid, so their folders go to /var/lib/cdeploy/<hash of the data dir>,
/// made passable, and the quick start works there too.
#[test]
fn the_quick_start_works_in_a_closed_home() {
    let machine = FreshMachine {
        home: tempfile::tempdir().unwrap(),
        api: format!("http://127.0.0.1:{}", free_port()),
        proxy_port: free_port(),
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(machine.home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = machine.home.path().join(".local/share/cdeploy");
    let moved = std::path::Path::new("/var/lib/cdeploy")
        .join(&sha256_hex(data.display().to_string().as_bytes())[..12]);
    let app = fixture("vite-app");
    let out = machine.cli(&["deploy", app.path().join("vite-app").to_str().unwrap()]);
    let log = std::fs::read_to_string(data.join("server.log")).unwrap_or_default();
    out.assert_code(0);
    assert!(
        out.stdout.contains("vite-app.localhost"),
        "{}\n{log}",
        out.stderr
    );
    assert!(log.contains("builds are sandboxed"), "{log}");
    // As root the closed home moves them (as another user nothing moves, and nothing
    // needs to: builds run as that user).
    if rustix::process::geteuid().is_root() {
        assert!(
            moved.join("runtimes").is_dir() && moved.join("builds").is_dir(),
            "{log}"
        );
    }
    machine.cli(&["server", "stop"]).assert_code(0);
    let _ = std::fs::remove_dir_all(&moved);
}

#[test]
fn a_pnpm_workspace_deploys_and_redeploys_with_root_set() {
    // pnpm links workspace packages into each package's own node_modules, so keeping
    // only the root's node_modules would break the next build: it is not kept.
    let server = Server::start();
    let tmp = fixture("pnpm-monorepo");
    let dir = tmp.path().join("pnpm-monorepo");
    let slug = fresh_slug("pnpm-mono");
    for round in 0..2 {
        // A change each round: the same source again would not be built at all
        // (docs/skipping.md).
        write_files(&dir, &[("NOTES.md", &format!("round {round}\n"))]);
        let out = server.cli(&dir, &["deploy", "--slug", &slug, "--json"]);
        out.assert_code(0);
        assert!(
            out.stderr.contains("$ pnpm install --frozen-lockfile"),
            "round {round}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(
                "Build cache: not kept: workspace packages have node_modules of their own"
            ),
            "round {round}: {}",
            out.stderr
        );
        assert_workspace_site(&server, &slug);
    }
}

/// The monorepo fixtures' page: built by the app with its sibling workspace package.
fn assert_workspace_site(server: &Server, slug: &str) {
    let page = server.site(slug, "/");
    assert!(
        page.body
            .contains("Hello from the @acme/greet workspace package, monorepo!"),
        "{}",
        page.body
    );
}
