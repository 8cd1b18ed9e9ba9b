//! Distributed mode assembled from real parts: moto (S3 + ECS + EC2), `redis-server`,
//! optionally Postgres, the test ECS agent, `cdeploy-server --dispatcher ecs` replicas and
//! a standalone `cdeploy-proxy` — each its own process.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::services::{EcsSetup, FaultProxy, Moto, Postgres, Redis};
use crate::{bin, free_port, shared_cache_dir, Page, Server, TempDir};

pub const BUCKET: &str = "cdeploy-sites";
pub const CLUSTER: &str = "cdeploy-builds";
pub const FAMILY: &str = "cdeploy-builder";

/// The builder's task definition environment, as docs/aws.md has it: no storage or
/// Redis setting and no credential: builders claim their build from the API (whose
/// address and the claim come in each task's overrides).
pub fn builder_env() -> Vec<(String, String)> {
    [
        // No CACHE_DIR: like a Fargate task, a builder's disk ends with it, so its
        // dependency cache is kept in storage. Fetched Node.js/npm are shared by the
        // tests' builders only to keep the suite fast (an image or EFS would hold them).
        (
            "TOOLCHAIN_DIR",
            shared_cache_dir().join("toolchains").display().to_string(),
        ),
        // The tests' git daemon listens on the host's loopback.
        ("BUILD_HOST_PORTS", crate::git_daemon_port().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub struct Distributed {
    pub moto: Moto,
    /// What the servers reach ECS through (see [`FaultProxy`]: it mends moto's answers).
    pub ecs_api: FaultProxy,
    pub redis: Redis,
    pub postgres: Option<Postgres>,
    pub ecs: EcsSetup,
    pub agent: Agent,
}

impl Distributed {
    /// moto with a bucket and an ECS cluster whose builder task definition points at
    /// `s3_endpoint` (moto itself unless a test puts a fault proxy in between).
    pub fn start(with_postgres: bool) -> Distributed {
        Self::start_with_task_start(with_postgres, Duration::ZERO)
    }

    /// As [`Distributed::start`], with tasks' containers starting `delay` after RunTask
    /// (Fargate's provisioning and image pull).
    pub fn start_with_task_start(with_postgres: bool, delay: Duration) -> Distributed {
        let moto = Moto::start();
        let redis = Redis::start();
        moto.create_bucket(BUCKET);
        let ecs = moto.setup_ecs(CLUSTER, FAMILY, &builder_env());
        let agent = Agent::start(&moto.endpoint(), delay);
        let postgres = with_postgres.then(Postgres::start);
        Distributed {
            ecs_api: FaultProxy::start(&moto.endpoint()),
            moto,
            redis,
            postgres,
            ecs,
            agent,
        }
    }

    /// A server replica: ECS builds, S3 storage, Redis bus, and Postgres when started
    /// with it (else SQLite in its data dir).
    pub fn server(&self) -> Server {
        self.server_with(&[], &[])
    }

    pub fn server_with(&self, args: &[&str], env: &[(&str, &str)]) -> Server {
        let (api, proxy) = (free_port(), free_port());
        self.replica(api, proxy, &format!("http://127.0.0.1:{api}"), args, env)
    }

    /// Replicas on one database (Postgres) whose builders fail over between them, as
    /// they would behind a load balancer.
    pub fn replicas(&self, n: usize) -> Vec<Server> {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let api: Vec<String> = ports
            .iter()
            .map(|(a, _)| format!("http://127.0.0.1:{a}"))
            .collect();
        let api = api.join(",");
        ports
            .iter()
            .map(|(a, p)| self.replica(*a, *p, &api, &[], &[]))
            .collect()
    }

    fn replica(
        &self,
        api_port: u16,
        proxy_port: u16,
        builder_api: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let storage = format!("s3://{BUCKET}");
        let redis = self.redis.url();
        let mut all_args = vec![
            "--dispatcher",
            "ecs",
            "--storage",
            &storage,
            "--bus",
            &redis,
            "--ecs-poll-secs",
            "1",
            "--ecs-stop-grace-secs",
            "2",
            "--builder-api",
            builder_api,
        ];
        let db = self.postgres.as_ref().map(|p| p.url());
        if let Some(db) = &db {
            all_args.extend(["--database", db]);
        }
        all_args.extend(args);
        let mut all_env: Vec<(String, String)> = self.moto.aws_env();
        all_env.extend(self.ecs.server_env());
        all_env.push(("AWS_ENDPOINT_URL_ECS".into(), self.ecs_api.endpoint()));
        all_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let env_refs: Vec<(&str, &str)> = all_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Server::start_at(api_port, proxy_port, &all_args, &env_refs)
    }

    /// Keys under `prefix` in the sites bucket.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.moto.keys(BUCKET, prefix)
    }

    /// Content blobs in the bucket (precompressed variants excluded).
    pub fn blob_count(&self) -> usize {
        self.keys("blobs/")
            .iter()
            .filter(|k| !k["blobs/".len()..].contains('.'))
            .count()
    }
}

/// The test ECS agent process (see `tests/agent/main.rs`).
pub struct Agent {
    child: Child,
    pub log: PathBuf,
    _dir: TempDir,
}

impl Agent {
    pub fn start(endpoint: &str, task_start: Duration) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("agent.jsonl");
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(bin("cdeploy-test-ecs-agent"))
                .arg(endpoint)
                .arg(CLUSTER)
                .arg(bin("cdeploy-builder"))
                .arg(task_start.as_millis().to_string())
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).expect("agent log"))
                .stderr(if std::env::var_os("TEST_LOG").is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                })
                // Its own process group: the builders it runs end with it.
                .process_group(0)
                .spawn()
                .expect("start the ECS agent")
        };
        Agent {
            child,
            log,
            _dir: dir,
        }
    }

    /// What the agent reported: one JSON object per started or ended task.
    pub fn reports(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        use rustix::process::{kill_process_group, Pid, Signal};
        // The agent leads a process group of its own: its builders go with it.
        if let Some(pgid) = Pid::from_raw(self.child.id() as i32) {
            let _ = kill_process_group(pgid, Signal::TERM);
            std::thread::sleep(Duration::from_millis(200));
            let _ = kill_process_group(pgid, Signal::KILL);
        }
        let _ = self.child.wait();
    }
}

/// A standalone `cdeploy-proxy` process.
pub struct ProxyProcess {
    pub port: u16,
    child: Child,
}

impl ProxyProcess {
    /// Serves `storage` (`None`: whatever `env` says, e.g. `BASE_PATH`) with the AWS
    /// settings in `env` and a 1 s route cache.
    pub fn start(storage: Option<&str>, env: &[(String, String)]) -> ProxyProcess {
        Self::start_with(storage, env, &[])
    }

    /// [`ProxyProcess::start`] with more flags (`--runtime-dir …`).
    pub fn start_with(
        storage: Option<&str>,
        env: &[(String, String)],
        args: &[&str],
    ) -> ProxyProcess {
        // Port 0: the proxy tells the port it bound in its ready file.
        let dir = tempfile::tempdir().expect("temp dir");
        let ready = dir.path().join("ready.json");
        let mut cmd = Command::new(bin("cdeploy-proxy"));
        if let Some(storage) = storage {
            cmd.args(["--storage", storage]);
        }
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0", "--domain", "localhost:0"])
            .arg("--ready-file")
            .arg(&ready)
            .args(["--route-ttl", "1"])
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("start cdeploy-proxy");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(port) = crate::ready_port(&ready, "proxy") {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("cdeploy-proxy exited ({status}) before it was ready");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "cdeploy-proxy wrote no ready file in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        ProxyProcess { port, child }
    }

    pub fn get(&self, host_label: &str, path: &str) -> Page {
        self.get_with(host_label, path, &[])
    }

    /// A GET with extra request headers.
    pub fn get_with(&self, host_label: &str, path: &str, headers: &[(&str, &str)]) -> Page {
        let mut req = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .header("host", format!("{host_label}.localhost:{}", self.port));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Page::from(req.send().expect("proxy request"))
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
