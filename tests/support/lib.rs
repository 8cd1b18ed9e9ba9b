//! Test support: spawns the real binaries on free loopback ports, plus the real parts
//! they talk to (a `git daemon`, headless Chromium), and cleans up after itself.
//!
//! Set `TEST_LOG=1` to see the servers' logs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use tempfile::TempDir;

pub mod distributed;
pub mod origin;
pub mod services;

/// The directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/e2e-… → target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    let built = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run `cargo build --workspace` before the e2e tests",
                p.display()
            )
        });
    // `cargo test` does not rebuild other packages' binaries: never test a stale one.
    if let Some(newest) = newest_source(name) {
        assert!(
            built >= newest,
            "{} is older than the sources: run `cargo build --workspace` before the e2e tests",
            p.display()
        );
    }
    p
}

/// The newest modification time among the Rust sources a binary is built from.
fn newest_source(binary: &str) -> Option<std::time::SystemTime> {
    let crates: &[&str] = match binary {
        "cdeploy" => &["cli", "core"],
        "cdeploy-server" => &["server", "builder", "proxy", "storage", "conn", "core"],
        "cdeploy-builder" => &["builder", "storage", "core"],
        "cdeploy-proxy" => &["proxy", "storage", "conn", "core"],
        "cdeploy-test-ecs-agent" => &["tests/agent", "tests/support"],
        _ => return None,
    };
    let root = repo_root();
    // Another crate's `src/main.rs` is its own binary, not part of this one.
    let own_main = crates.first().map(|c| root.join(c).join("src/main.rs"));
    let mut stack: Vec<PathBuf> = crates
        .iter()
        .map(|c| {
            if c.contains('/') {
                root.join(c)
            } else {
                root.join(c).join("src")
            }
        })
        .collect();
    let mut newest = None;
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            stack.extend(
                std::fs::read_dir(&p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else if p.extension().is_some_and(|e| e == "rs") {
            let other_binary = p.ends_with("src/main.rs") && Some(&p) != own_main.as_ref();
            if !other_binary {
                newest = newest.max(meta.modified().ok());
            }
        }
    }
    newest
}

/// Repository root (for fixtures). `cargo test` sets CARGO_MANIFEST_DIR when it runs the
/// tests; the compile-time value is the fallback. (With one target dir shared by two
/// checkouts, cargo can reuse this library built in the other one, and the compile-time
/// path then names that checkout.)
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Build caches shared by every test server (each project has its own inside), on the
/// same filesystem as the servers' build directories: kept node_modules move between
/// them with rename. Under the temp dir, where the unprivileged uid sandboxed builds run
/// as (when the tests run as root) can pass through every parent.
pub fn shared_cache_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("cdeploy-test-cache");
    std::fs::create_dir_all(&dir).expect("cache dir");
    traversable(&dir);
    dir
}

/// A temporary directory the build uid can pass through (tempfile makes them 0700).
pub fn traversable_tempdir() -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    traversable(dir.path());
    dir
}

fn traversable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir).expect("dir").permissions().mode();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o711)).expect("chmod");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The port a `--ready-file` names under `key`, once the process has written it.
pub fn ready_port(file: &Path, key: &str) -> Option<u16> {
    let text = std::fs::read_to_string(file).ok()?;
    let ready: serde_json::Value = serde_json::from_str(&text).ok()?;
    ready[key].as_str()?.rsplit_once(':')?.1.parse().ok()
}

pub fn wait_for_port(port: u16, timeout: Duration) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < timeout,
            "nothing listens on port {port} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `cdeploy-server` in embedded mode, with its own data dir and ports.
pub struct Server {
    pub dir: TempDir,
    pub api_port: u16,
    pub proxy_port: u16,
    pub extra_args: Vec<String>,
    pub extra_env: Vec<(String, String)>,
    /// A soft open-file limit the server starts under.
    pub nofile: Option<u64>,
    child: Option<Child>,
    /// The test chose the ports (`start_at`): never moved to others.
    fixed_ports: bool,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[], &[])
    }

    /// On ports the system chooses (`--listen 127.0.0.1:0`), read from its ready file.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_full(0, 0, args, env, None, false)
    }

    /// On given ports (known before it starts, e.g. for `--builder-api`).
    pub fn start_at(api_port: u16, proxy_port: u16, args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_full(api_port, proxy_port, args, env, None, true)
    }

    /// Under a soft open-file limit of `nofile` (a common service default is 1024).
    pub fn start_with_nofile(args: &[&str], nofile: u64) -> Server {
        Self::start_full(0, 0, args, &[], Some(nofile), false)
    }

    fn start_full(
        api_port: u16,
        proxy_port: u16,
        args: &[&str],
        env: &[(&str, &str)],
        nofile: Option<u64>,
        fixed_ports: bool,
    ) -> Server {
        let mut s = Server {
            // Beside the shared cache, on its filesystem: the dependency cache moves
            // node_modules in and out of builds with rename.
            dir: traversable_tempdir(),
            api_port,
            proxy_port,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            nofile,
            child: None,
            fixed_ports,
        };
        s.spawn();
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where the server's log goes (unless TEST_LOG is set).
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// `cdeploy-server` with this server's settings (data dir, storage, database), for
    /// one-off commands (`gc`, `metrics-token`) beside it: append the command.
    pub fn admin_command(&self) -> Command {
        admin_command(&self.data_dir(), &self.extra_args, &self.extra_env)
    }

    /// The server's resident memory now and at its peak, in bytes.
    pub fn rss(&self) -> (u64, u64) {
        proc_memory(self.pid())
    }

    pub fn config_home(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// Starts the server and waits until it is healthy. A first start binds port 0 and
    /// reads the ports the system chose from the server's ready file; a restart asks
    /// for the same ones again (URLs and saved credentials stay valid). When one was
    /// taken meanwhile, the server exits saying so and starts again on new ports
    /// (unless the test chose them).
    fn spawn(&mut self) {
        for attempt in 1..=3 {
            match self.spawn_once() {
                Ok(()) => return,
                Err(log) if log.contains("in use") && !self.fixed_ports && attempt < 3 => {
                    self.api_port = 0;
                    self.proxy_port = 0;
                }
                Err(log) => panic!("cdeploy-server did not start:\n{log}"),
            }
        }
    }

    fn ready_file(&self) -> PathBuf {
        self.dir.path().join("ready.json")
    }

    /// The ports in the ready file, once the server has written it.
    fn read_ready(&self) -> Option<(u16, u16)> {
        let file = self.ready_file();
        Some((ready_port(&file, "api")?, ready_port(&file, "proxy")?))
    }

    /// One start; the server's log since it started when it exits before it is healthy.
    fn spawn_once(&mut self) -> Result<(), String> {
        let log_start = std::fs::metadata(self.log_file())
            .map(|m| m.len())
            .unwrap_or(0);
        // The log goes to the terminal with TEST_LOG, else to `<dir>/server.log`.
        let log = if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_file())
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null())
        };
        let mut cmd = Command::new(bin("cdeploy-server"));
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    let mut lim = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                    lim.rlim_cur = n.min(lim.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let _ = std::fs::remove_file(self.ready_file());
        let child = cmd
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen", &format!("127.0.0.1:{}", self.api_port)])
            .args(["--proxy-listen", &format!("127.0.0.1:{}", self.proxy_port)])
            .args(["--domain", &format!("localhost:{}", self.proxy_port)])
            .arg("--ready-file")
            .arg(self.ready_file())
            .arg("--cache-dir")
            .arg(shared_cache_dir())
            .args(["--build-host-ports", &git_daemon_port().to_string()])
            .args(&self.extra_args)
            .env("XDG_CONFIG_HOME", self.config_home())
            .env(
                "RUST_LOG",
                "cdeploy_server=debug,cdeploy_proxy=info,cdeploy_conn=info",
            )
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start cdeploy-server");
        self.child = Some(child);
        // The API answers only once start-up (token bootstrap, recovery) is done. Two
        // cores busy with framework builds (Next.js, Nuxt) can slow a start well past
        // its usual second.
        let deadline = Instant::now() + Duration::from_secs(90);
        let new_log = |this: &Self| {
            let all = std::fs::read(this.log_file()).unwrap_or_default();
            String::from_utf8_lossy(&all[(log_start as usize).min(all.len())..]).into_owned()
        };
        let ready = loop {
            if let Some(ports) = self.read_ready() {
                break ports;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("exited ({status}):\n{}", new_log(self)));
            }
            assert!(
                Instant::now() < deadline,
                "timed out after 90s waiting for cdeploy-server's ready file:\n{}",
                new_log(self)
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        (self.api_port, self.proxy_port) = ready;
        let health = format!("http://127.0.0.1:{}/healthz", self.api_port);
        while !reqwest::blocking::get(&health).is_ok_and(|r| r.status().is_success()) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("exited ({status}):\n{}", new_log(self)));
            }
            assert!(
                Instant::now() < deadline,
                "timed out after 90s waiting for cdeploy-server to be healthy:\n{}",
                new_log(self)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The server process's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("admin-token"))
            .expect("admin token")
            .trim()
            .to_string()
    }

    /// SIGKILL: a crash, no cleanup.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: a graceful stop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: sending a signal to our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "server still running");
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Runs the CLI against this server with its admin token.
    pub fn cli(&self, cwd: &Path, args: &[&str]) -> CliOutput {
        self.cli_env(cwd, args, &[("CDEPLOY_TOKEN", &self.token())])
    }

    /// The CLI against this server with its admin token (no colors).
    fn cli_command(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("cdeploy"));
        cmd.args(args)
            .current_dir(cwd)
            .env("CDEPLOY_API", self.api())
            .env("CDEPLOY_TOKEN", self.token())
            .env("XDG_CONFIG_HOME", self.config_home())
            .env("NO_COLOR", "1");
        cmd
    }

    /// Starts the CLI in the background (stdout and stderr captured).
    pub fn cli_spawn(&self, cwd: &Path, args: &[&str]) -> Child {
        self.cli_command(cwd, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run cdeploy")
    }

    /// Runs the CLI with the admin token and `input` on its stdin.
    pub fn cli_input(&self, cwd: &Path, args: &[&str], input: &str) -> CliOutput {
        use std::io::Write;
        let mut child = self
            .cli_command(cwd, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run cdeploy");
        let mut stdin = child.stdin.take().expect("stdin");
        // A CLI that refuses its arguments exits without reading: a broken pipe then.
        let _ = stdin.write_all(input.as_bytes());
        drop(stdin);
        CliOutput::from(child.wait_with_output().expect("run cdeploy"))
    }

    pub fn cli_env(&self, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
        let out = Command::new(bin("cdeploy"))
            .args(args)
            .current_dir(cwd)
            .env("CDEPLOY_API", self.api())
            .env_remove("CDEPLOY_TOKEN")
            .env("XDG_CONFIG_HOME", self.config_home())
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run cdeploy");
        CliOutput::from(out)
    }

    /// `cdeploy tokens create …` as the admin; returns the token (stdout).
    pub fn create_token(&self, args: &[&str]) -> String {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut all = vec!["tokens", "create"];
        all.extend_from_slice(args);
        let out = self.cli(tmp.path(), &all);
        out.assert_code(0);
        let token = out.stdout.trim().to_string();
        assert!(token.starts_with("cdp_"), "{}", out.stdout);
        token
    }

    /// A `deploy` token named `ci` for one project.
    pub fn deploy_token(&self, slug: &str) -> String {
        self.create_token(&["--name", "ci", "--project", slug, "--role", "deploy"])
    }

    /// An HTTP client for the API with the admin token.
    pub fn client(&self) -> Api {
        Api {
            base: self.api(),
            token: Some(self.token()),
            http: reqwest::blocking::Client::new(),
        }
    }

    /// GET through the embedded proxy with a `Host` of `<host>.localhost:<port>`.
    pub fn site(&self, host_label: &str, path: &str) -> Page {
        let url = format!("http://127.0.0.1:{}{path}", self.proxy_port);
        let resp = reqwest::blocking::Client::new()
            .get(url)
            .header(
                "host",
                format!("{host_label}.localhost:{}", self.proxy_port),
            )
            .send()
            .expect("proxy request");
        Page::from(resp)
    }

    pub fn site_url(&self, host_label: &str, path: &str) -> String {
        format!("http://{host_label}.localhost:{}{path}", self.proxy_port)
    }

    /// Number of blobs in storage (variants excluded).
    pub fn blob_count(&self) -> usize {
        std::fs::read_dir(self.data_dir().join("storage/blobs"))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| !e.file_name().to_string_lossy().contains('.'))
                    .count()
            })
            .unwrap_or(0)
    }

    /// `cdeploy deploy --slug SLUG --no-wait --json` in `dir`; returns the deployment id.
    pub fn deploy_no_wait(&self, dir: &Path, slug: &str) -> String {
        let out = self.cli(dir, &["deploy", "--slug", slug, "--no-wait", "--json"]);
        out.assert_code(0);
        out.json()["id"]
            .as_str()
            .expect("a deployment id")
            .to_string()
    }

    pub fn deployment(&self, id: &str) -> serde_json::Value {
        self.client().get(&format!("/v1/deployments/{id}")).json()
    }

    pub fn wait_status(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        wait_until(&format!("deployment {id} status"), timeout, || {
            last = self.deployment(id);
            pred(last["status"].as_str().unwrap_or(""))
        });
        last
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for CliOutput {
    fn from(o: Output) -> Self {
        CliOutput {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl CliOutput {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl From<reqwest::blocking::Response> for Page {
    fn from(r: reqwest::blocking::Response) -> Self {
        Page {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.text().unwrap_or_default(),
        }
    }
}

impl Page {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

pub struct Api {
    pub base: String,
    pub token: Option<String>,
    pub http: reqwest::blocking::Client,
}

pub struct ApiResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl ApiResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

impl Api {
    pub fn without_token(mut self) -> Self {
        self.token = None;
        self
    }

    pub fn with_token(mut self, t: &str) -> Self {
        self.token = Some(t.to_string());
        self
    }

    fn send(&self, rb: reqwest::blocking::RequestBuilder) -> ApiResponse {
        let rb = match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        };
        let r = rb.send().expect("API request");
        ApiResponse {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            text: r.text().unwrap_or_default(),
        }
    }

    pub fn get(&self, path: &str) -> ApiResponse {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> ApiResponse {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
    }

    pub fn post_bytes(&self, path: &str, body: Vec<u8>) -> ApiResponse {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body),
        )
    }

    pub fn delete(&self, path: &str) -> ApiResponse {
        self.send(self.http.delete(format!("{}{path}", self.base)))
    }

    pub fn put(&self, path: &str, body: &serde_json::Value) -> ApiResponse {
        self.send(self.http.put(format!("{}{path}", self.base)).json(body))
    }

    pub fn put_bytes(&self, path: &str, body: Vec<u8>) -> ApiResponse {
        self.send(self.http.put(format!("{}{path}", self.base)).body(body))
    }
}

/// Writes a `cdeploy.toml` whose build runs `command` (plus any `extra` TOML).
pub fn write_build_command(dir: &Path, command: &str, extra: &str) {
    let toml = format!("[build]\ncommand = {}\n{extra}", toml_string(command));
    write_files(dir, &[("cdeploy.toml", &toml)]);
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Writes files (creating folders) under `root`.
pub fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (name, body) in files {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, body).expect("write");
    }
}

/// A project name of this run's own: the tests share a build cache, and a cached install
/// would skip the install (its scripts' attacks, or the install a test looks for).
pub fn fresh_slug(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A fresh temp directory holding a copy of `tests/fixtures/<name>` (no node_modules/dist).
pub fn fixture(name: &str) -> TempDir {
    let src = repo_root().join("tests/fixtures").join(name);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join(name);
    copy_dir(&src, &dest);
    tmp
}

fn copy_dir(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).expect("mkdir");
    for entry in std::fs::read_dir(src).expect("read fixture") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name == "node_modules" || name == "dist" {
            continue;
        }
        let (from, to) = (entry.path(), dest.join(&name));
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&from, &to);
        } else {
            std::fs::copy(&from, &to).expect("copy");
        }
    }
}

/// Runs git with a fixed identity; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=cdeploy test",
            "-c",
            "user.email=test@cdeploy.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes `dir` a git repository with one commit of everything in it.
pub fn git_commit_all(dir: &Path) {
    if !dir.join(".git").exists() {
        git(dir, &["init", "-q"]);
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "test commit"]);
}

/// The one loopback `git daemon` of this test process, serving bare repositories from a
/// temp dir. Sandboxed builds reach no port of the host's loopback but those a server
/// allows (`--build-host-ports`): every test server allows this one.
struct SharedDaemon {
    root: PathBuf,
    port: u16,
}

fn shared_daemon() -> &'static SharedDaemon {
    static DAEMON: std::sync::OnceLock<SharedDaemon> = std::sync::OnceLock::new();
    DAEMON.get_or_init(|| {
        let root = traversable_tempdir().keep();
        let port = free_port();
        let (tx, rx) = std::sync::mpsc::channel();
        let base = root.clone();
        // Spawned from a thread that lives as long as the process, with a parent-death
        // signal: the daemon ends with the test process, whichever test started it.
        std::thread::spawn(move || {
            use std::os::unix::process::CommandExt;
            let mut cmd = Command::new("git");
            cmd.arg("daemon")
                .arg("--reuseaddr")
                .arg(format!("--base-path={}", base.display()))
                .arg("--export-all")
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg(&base)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl only sets this child's parent-death signal.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                    Ok(())
                });
            }
            let child = cmd.spawn().expect("start git daemon");
            tx.send(()).expect("report");
            let _child = child;
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("git daemon started");
        wait_for_port(port, Duration::from_secs(10));
        SharedDaemon { root, port }
    })
}

/// The git daemon's port (allowed to builds of every test server).
pub fn git_daemon_port() -> u16 {
    shared_daemon().port
}

/// A test's own corner of the shared `git daemon`.
pub struct GitDaemon {
    pub root: TempDir,
    pub port: u16,
    prefix: String,
}

impl GitDaemon {
    pub fn start() -> GitDaemon {
        let shared = shared_daemon();
        let root = tempfile::Builder::new()
            .prefix("t")
            .tempdir_in(&shared.root)
            .expect("tempdir");
        traversable(root.path());
        let prefix = root
            .path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        GitDaemon {
            root,
            port: shared.port,
            prefix,
        }
    }

    /// Publishes the repository at `work` (committed) as `<name>.git`; returns its URL.
    pub fn publish(&self, work: &Path, name: &str) -> String {
        let bare = self.root.path().join(format!("{name}.git"));
        let _ = std::fs::remove_dir_all(&bare);
        git(
            self.root.path(),
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().expect("utf-8 path"),
                bare.to_str().expect("utf-8"),
            ],
        );
        format!("git://127.0.0.1:{}/{}/{name}.git", self.port, self.prefix)
    }
}

/// The DOM after scripts ran, from headless Chromium.
pub fn chromium_dom(url: &str) -> String {
    let profile = tempfile::tempdir().expect("tempdir");
    let out = Command::new(chromium_path())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium (install it with ./install.sh --dev)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chromium_path() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| {
        for c in ["chromium", "chromium-browser", "google-chrome"] {
            if Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {c}"))
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return c.to_string();
            }
        }
        panic!("no Chromium found: run ./install.sh --dev (or set CHROMIUM)")
    })
}

/// Sends raw bytes to a port and returns the raw answer (for requests a client would
/// normalize, like `/../`).
pub fn raw_http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // The server may answer (and close) before reading everything: keep its answer.
    let _ = s.write_all(request.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Hex SHA-256 of bytes (what storage names a blob), computed by `sha256sum`.
pub fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write");
    let out = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a hash")
        .to_string()
}

/// `VmRSS` and `VmHWM` (peak) of a process, in bytes.
pub fn proc_memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Raises this process's soft open-file limit to its hard limit (floods open many sockets).
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// `cdeploy-server --data-dir DIR <args>` with `env`: see [`Server::admin_command`]
/// (this form can be moved to another thread as plain data).
pub fn admin_command(data_dir: &Path, args: &[String], env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(bin("cdeploy-server"));
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd
}

/// One request an [`HttpRecorder`] received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A loopback HTTP server that answers every request `201 {}` and keeps it: a stand-in
/// for a forge's API (commit statuses), checked after the fact.
pub struct HttpRecorder {
    pub port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Recorded>>>,
}

impl HttpRecorder {
    pub fn start() -> HttpRecorder {
        use std::io::{BufRead, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let mut reader = std::io::BufReader::new(&stream);
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or("").to_string();
                    let path = parts.next().unwrap_or("").to_string();
                    let mut headers = Vec::new();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            headers.push((k.trim().to_lowercase(), v.trim().to_string()));
                        }
                    }
                    let len = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    let _ = reader.read_exact(&mut body);
                    kept.lock().expect("not poisoned").push(Recorded {
                        method,
                        path,
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    let mut w = &stream;
                    let _ = w.write_all(
                        b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                    );
                });
            }
        });
        HttpRecorder { port, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("not poisoned").clone()
    }
}
