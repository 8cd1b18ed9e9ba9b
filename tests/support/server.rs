//! [`Server`]: a running `cdeploy-server` in embedded mode, with its own data dir,
//! ports, tokens and CLI, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{
    bin, git_daemon_port, proc_memory, ready_port, shared_cache_dir, traversable_tempdir,
    wait_until, Api, CliOutput, Page, TempDir,
};

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
            .args(if self.extra_args.iter().any(|a| a == "--domain") {
                Vec::new()
            } else {
                vec![
                    "--domain".to_string(),
                    format!("localhost:{}", self.proxy_port),
                ]
            })
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
            crate::signal(c.id(), rustix::process::Signal::TERM);
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

    /// `cdeploy deploy --slug SLUG --json` in `dir`, ready; returns the deployment id.
    pub fn deploy_id(&self, dir: &Path, slug: &str) -> String {
        let out = self.cli(dir, &["deploy", "--slug", slug, "--json"]);
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
