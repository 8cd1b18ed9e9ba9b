//! The real services of distributed mode, each started on a free loopback port and
//! stopped when dropped: `redis-server`, moto's server (S3, ECS and EC2 APIs), Postgres,
//! and a fault-injecting proxy in front of S3.
//!
//! AWS calls here are raw JSON/query/REST requests: moto checks no signatures, only the
//! credential scope of the `Authorization` header, which tells it the service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{free_port, wait_for_port, wait_until, TempDir};

fn log_target() -> Stdio {
    if std::env::var_os("TEST_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// A program from `$VAR`, else the first existing candidate path, else `name` on PATH.
fn find_program(var: &str, candidates: &[PathBuf], name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| PathBuf::from(name))
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
}

/// The virtualenv `install.sh --dev` puts moto in.
pub fn dev_venv() -> PathBuf {
    std::env::var_os("CDEPLOY_DEV_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache/cdeploy-dev-venv"))
}

// ---------------------------------------------------------------------------- Redis

/// A throwaway `redis-server` without persistence: a restart loses everything, the
/// hardest case for the log bus. [`Redis::start_tls`] serves TLS only, with a CA of its own.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    tls: Option<TempDir>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
            tls: None,
        };
        r.spawn();
        r
    }

    /// TLS on the port (no plain port), a certificate for `localhost` signed by a test CA.
    pub fn start_tls() -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |name: &str| dir.path().join(name).display().to_string();
        let openssl = |args: &[&str]| run_ok(Command::new("openssl").args(args));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=cdeploy test CA",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &p("redis.key"),
            "-out",
            &p("redis.csr"),
        ]);
        std::fs::write(
            dir.path().join("ext.cnf"),
            "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("write ext.cnf");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &p("redis.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p("ext.cnf"),
            "-out",
            &p("redis.pem"),
        ]);
        let mut r = Redis {
            port: free_port(),
            child: None,
            tls: Some(dir),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(find_program("REDIS_SERVER", &[], "redis-server"));
        match &self.tls {
            None => {
                cmd.args(["--port", &self.port.to_string()]);
            }
            Some(dir) => {
                let p = |name: &str| dir.path().join(name);
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(p("redis.pem"))
                    .arg("--tls-key-file")
                    .arg(p("redis.key"))
                    .arg("--tls-ca-cert-file")
                    .arg(p("ca.pem"))
                    .args(["--tls-auth-clients", "no"]);
            }
        }
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(log_target())
            .stderr(log_target())
            .spawn()
            .expect("start redis-server (install it with ./install.sh --dev)");
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10));
    }

    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://127.0.0.1:{}/", self.port),
            Some(_) => format!("rediss://localhost:{}/", self.port),
        }
    }

    /// The CA that signed a TLS server's certificate (for `REDIS_CA_CERT`).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|d| d.path().join("ca.pem"))
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill and start again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------- moto

/// moto's server: S3, ECS and EC2 APIs in one process, state in memory.
pub struct Moto {
    pub port: u16,
    child: Child,
    api: Aws,
}

impl std::ops::Deref for Moto {
    type Target = Aws;
    fn deref(&self) -> &Aws {
        &self.api
    }
}

/// Raw calls to an AWS-compatible endpoint (moto): ECS JSON, EC2 query, S3 REST.
pub struct Aws {
    endpoint: String,
    http: reqwest::blocking::Client,
}

/// The region everything is created in.
pub const REGION: &str = "us-east-1";

impl Moto {
    pub fn start() -> Moto {
        let port = free_port();
        let program = find_program(
            "MOTO_SERVER",
            &[dev_venv().join("bin/moto_server")],
            "moto_server",
        );
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(log_target())
            .stderr(log_target())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {} ({e}): install moto with ./install.sh --dev",
                    program.display()
                )
            });
        let http = reqwest::blocking::Client::new();
        let ready = format!("http://127.0.0.1:{port}/moto-api/");
        wait_until("moto to answer", Duration::from_secs(60), || {
            http.get(&ready)
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        // moto moves a task one step towards STOPPED each time it is described; Fargate
        // stops a task when its container exits or StopTask is called, never otherwise.
        let r = http
            .post(format!(
                "http://127.0.0.1:{port}/moto-api/state-manager/set-transition"
            ))
            .json(&json!({
                "model_name": "ecs::task",
                "transition": { "progression": "manual", "times": 1_000_000_000u64 },
            }))
            .send()
            .expect("moto state manager");
        assert!(r.status().is_success(), "set-transition: {}", r.status());
        Moto {
            port,
            child,
            api: Aws::new(&format!("http://127.0.0.1:{port}")),
        }
    }
}

impl Aws {
    pub fn new(endpoint: &str) -> Aws {
        Aws {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// The variables that point an AWS client at moto with test credentials.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", "test-key".into()),
            ("AWS_SECRET_ACCESS_KEY", "test-secret".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn auth(service: &str) -> String {
        format!("AWS4-HMAC-SHA256 Credential=test/20260101/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0")
    }

    /// An ECS JSON API call; returns the status and the parsed answer.
    pub fn ecs_call(&self, action: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.endpoint())
            .header("authorization", Self::auth("ecs"))
            .header(
                "x-amz-target",
                format!("AmazonEC2ContainerServiceV20141113.{action}"),
            )
            .header("content-type", "application/x-amz-json-1.1")
            .body(body.to_string())
            .send()
            .expect("ECS request");
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// An ECS call that must succeed.
    pub fn ecs(&self, action: &str, body: &Value) -> Value {
        let (status, v) = self.ecs_call(action, body);
        assert!(status < 300, "ECS {action} → {status}: {v}");
        v
    }

    /// An EC2 query API call; returns the XML answer.
    pub fn ec2(&self, params: &[(&str, &str)]) -> String {
        let mut form: Vec<(&str, &str)> = vec![("Version", "2016-11-15")];
        form.extend_from_slice(params);
        let r = self
            .http
            .post(self.endpoint())
            .header("authorization", Self::auth("ec2"))
            .form(&form)
            .send()
            .expect("EC2 request");
        let status = r.status();
        let text = r.text().unwrap_or_default();
        assert!(status.is_success(), "EC2 {params:?} → {status}: {text}");
        text
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.s3_put(bucket, &[], "CreateBucket");
    }

    /// Lets anyone read the bucket's objects (a public-read ACL: what moto honours for
    /// anonymous GETs; on AWS a bucket policy does this, see docs/aws.md).
    pub fn make_public(&self, bucket: &str) {
        self.s3_put(
            &format!("{bucket}?acl"),
            &[("x-amz-acl", "public-read")],
            "PutBucketAcl",
        );
    }

    /// An empty-bodied S3 PUT that must succeed.
    fn s3_put(&self, path: &str, headers: &[(&str, &str)], what: &str) {
        let mut req = self
            .http
            .put(format!("{}/{path}", self.endpoint))
            .header("authorization", Self::auth("s3"))
            .header("content-length", "0");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().expect("S3 request");
        assert!(r.status().is_success(), "{what} {path}: {}", r.status());
    }

    /// Every key under `prefix` in `bucket` (ListObjectsV2, all pages).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = vec![
                ("list-type", "2".to_string()),
                ("prefix", prefix.to_string()),
            ];
            if let Some(t) = &token {
                q.push(("continuation-token", t.clone()));
            }
            let text = self
                .http
                .get(format!("{}/{bucket}", self.endpoint()))
                .header("authorization", Self::auth("s3"))
                .query(&q)
                .send()
                .expect("S3 request")
                .text()
                .unwrap_or_default();
            keys.extend(xml_values(&text, "Key"));
            token = xml_values(&text, "NextContinuationToken")
                .into_iter()
                .next();
            if token.is_none() {
                return keys;
            }
        }
    }

    /// A cluster, a task definition for the builder, and the awsvpc network (a VPC with
    /// DNS hostnames, a subnet, a security group) — what the ECS runbook sets up.
    pub fn setup_ecs(
        &self,
        cluster: &str,
        family: &str,
        container_env: &[(String, String)],
    ) -> EcsSetup {
        self.ecs("CreateCluster", &json!({ "clusterName": cluster }));
        let vpc = xml_values(
            &self.ec2(&[("Action", "CreateVpc"), ("CidrBlock", "10.0.0.0/16")]),
            "vpcId",
        )
        .remove(0);
        self.ec2(&[
            ("Action", "ModifyVpcAttribute"),
            ("VpcId", &vpc),
            ("EnableDnsHostnames.Value", "true"),
        ]);
        let subnet = xml_values(
            &self.ec2(&[
                ("Action", "CreateSubnet"),
                ("VpcId", &vpc),
                ("CidrBlock", "10.0.1.0/24"),
            ]),
            "subnetId",
        )
        .remove(0);
        let security_group = xml_values(
            &self.ec2(&[
                ("Action", "CreateSecurityGroup"),
                ("VpcId", &vpc),
                ("GroupName", "cdeploy-builders"),
                ("GroupDescription", "cdeploy build tasks"),
            ]),
            "groupId",
        )
        .remove(0);
        self.register_builder(family, container_env);
        EcsSetup {
            cluster: cluster.to_string(),
            task_definition: family.to_string(),
            subnet,
            security_group,
        }
    }

    /// Registers (a revision of) the builder's task definition.
    pub fn register_builder(&self, family: &str, container_env: &[(String, String)]) {
        let environment: Vec<Value> = container_env
            .iter()
            .map(|(k, v)| json!({ "name": k, "value": v }))
            .collect();
        self.ecs(
            "RegisterTaskDefinition",
            &json!({
                "family": family,
                "networkMode": "awsvpc",
                "requiresCompatibilities": ["FARGATE"],
                "cpu": "1024",
                "memory": "2048",
                "containerDefinitions": [{
                    "name": "builder-image",
                    "image": "cdeploy-builder:test",
                    "cpu": 1024,
                    "memory": 2048,
                    "essential": true,
                    "environment": environment,
                }],
            }),
        );
    }

    /// Task ARNs of the cluster with this desired status (`RUNNING`, `STOPPED`).
    pub fn tasks(&self, cluster: &str, desired: &str) -> Vec<String> {
        let v = self.ecs(
            "ListTasks",
            &json!({ "cluster": cluster, "desiredStatus": desired }),
        );
        v["taskArns"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn describe_task(&self, cluster: &str, task: &str) -> Value {
        let v = self.ecs(
            "DescribeTasks",
            &json!({ "cluster": cluster, "tasks": [task] }),
        );
        v["tasks"][0].clone()
    }

    pub fn stop_task(&self, cluster: &str, task: &str, reason: &str) {
        self.ecs(
            "StopTask",
            &json!({ "cluster": cluster, "task": task, "reason": reason }),
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What [`Moto::setup_ecs`] made.
#[derive(Debug, Clone)]
pub struct EcsSetup {
    pub cluster: String,
    pub task_definition: String,
    pub subnet: String,
    pub security_group: String,
}

impl EcsSetup {
    /// The server's ECS settings, by the seed's names.
    pub fn server_env(&self) -> Vec<(String, String)> {
        vec![
            ("CLUSTER".into(), self.cluster.clone()),
            ("TASK".into(), self.task_definition.clone()),
            ("ECS_SUBNETS".into(), self.subnet.clone()),
            ("ECS_SECURITY_GROUPS".into(), self.security_group.clone()),
        ]
    }
}

/// The text of every `<tag>…</tag>` in an XML document (enough for AWS's answers).
pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(after[..j].to_string());
        rest = &after[j + close.len()..];
    }
    out
}

// ---------------------------------------------------------------------------- Postgres

/// A Postgres cluster of its own (initdb + pg_ctl), trusting local connections.
pub struct Postgres {
    pub port: u16,
    dir: TempDir,
    bin: PathBuf,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = find_program("PG_BIN", &pg_bin_dirs(), "");
        let tool = |name: &str| {
            if bin.as_os_str().is_empty() {
                PathBuf::from(name)
            } else {
                bin.join(name)
            }
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let data = dir.path().join("data");
        if running_as_root() {
            // initdb refuses to run as root: the cluster belongs to the postgres user.
            run_ok(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir.path()),
            );
        }
        run_ok(as_postgres(tool("initdb")).arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]));
        run_ok(
            as_postgres(tool("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-o")
                .arg(format!(
                    "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                    dir.path().display()
                ))
                .arg("-l")
                .arg(dir.path().join("log"))
                .args(["-w", "start"]),
        );
        wait_for_port(port, Duration::from_secs(30));
        Postgres {
            port,
            dir,
            bin: tool("pg_ctl"),
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut c = as_postgres(self.bin.clone());
        let _ = c
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A Postgres tool run as the cluster's owner: the `postgres` user when we are root.
fn as_postgres(program: PathBuf) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Debian keeps the server binaries per version: the newest first.
fn pg_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.reverse();
    dirs.into_iter()
        .filter(|d| d.join("initdb").exists())
        .collect()
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------- faults

/// What the [`FaultProxy`] does with requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Forward everything.
    None = 0,
    /// Answer every write (PUT/POST/DELETE) with S3's `500 InternalError`.
    FailWrites = 1,
    /// Unreachable: open connections are cut and new ones closed at once.
    Down = 2,
}

/// An HTTP proxy in front of moto that injects faults on command. It also mends one
/// deviation of moto from the ECS API: task containers' `cpu` and `memory`, strings in
/// ECS's answers, come from moto as numbers, which an SDK rightly refuses; and gives each
/// task's network interface the address its builder really sends from here (loopback).
pub struct FaultProxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    /// Writes answered with an injected error so far.
    failed_writes: Arc<AtomicU64>,
    /// Fail only this many more writes (then forward again); `u64::MAX` for all.
    budget: Arc<AtomicU64>,
    generation: Arc<AtomicU64>,
    runtime: tokio::runtime::Runtime,
}

impl FaultProxy {
    pub fn start(upstream: &str) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let p = FaultProxy {
            port,
            mode: Arc::new(AtomicU8::new(Fault::None as u8)),
            failed_writes: Arc::new(AtomicU64::new(0)),
            budget: Arc::new(AtomicU64::new(u64::MAX)),
            generation: Arc::new(AtomicU64::new(0)),
            runtime,
        };
        let state = ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            mode: p.mode.clone(),
            failed_writes: p.failed_writes.clone(),
            budget: p.budget.clone(),
            generation: p.generation.clone(),
        };
        p.runtime.spawn(accept_loop(listener, Arc::new(state)));
        p
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, fault: Fault) {
        self.budget.store(u64::MAX, Ordering::SeqCst);
        self.mode.store(fault as u8, Ordering::SeqCst);
        // Connections opened before the change are cut, so the fault applies at once.
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Fails the next `n` writes, then forwards again.
    pub fn fail_next_writes(&self, n: u64) {
        self.budget.store(n, Ordering::SeqCst);
        self.mode.store(Fault::FailWrites as u8, Ordering::SeqCst);
    }

    pub fn failed_writes(&self) -> u64 {
        self.failed_writes.load(Ordering::SeqCst)
    }
}

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    mode: Arc<AtomicU8>,
    failed_writes: Arc<AtomicU64>,
    budget: Arc<AtomicU64>,
    generation: Arc<AtomicU64>,
}

async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<ProxyState>) {
    loop {
        let Ok((stream, _peer)): std::io::Result<(tokio::net::TcpStream, SocketAddr)> =
            listener.accept().await
        else {
            continue;
        };
        if state.mode.load(Ordering::SeqCst) == Fault::Down as u8 {
            drop(stream);
            continue;
        }
        let state = state.clone();
        tokio::spawn(async move {
            let generation = state.generation.load(Ordering::SeqCst);
            let svc_state = state.clone();
            let service = hyper::service::service_fn(move |req| {
                let state = svc_state.clone();
                async move {
                    // Down: the connection closes without an answer, as when unreachable.
                    if state.mode.load(Ordering::SeqCst) == Fault::Down as u8 {
                        return Err(std::io::Error::other("unreachable"));
                    }
                    Ok(forward(&state, req).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let cut = async {
                while state.generation.load(Ordering::SeqCst) == generation {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                _ = conn => {}
                () = cut => {}
            }
        });
    }
}

type ProxyBody = http_body_util::Full<bytes::Bytes>;

async fn forward(
    state: &ProxyState,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<ProxyBody> {
    use http_body_util::BodyExt;
    let write = matches!(
        *req.method(),
        hyper::Method::PUT | hyper::Method::POST | hyper::Method::DELETE
    );
    if write
        && state.mode.load(Ordering::SeqCst) == Fault::FailWrites as u8
        && state
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                (b > 0).then(|| if b == u64::MAX { b } else { b - 1 })
            })
            .is_ok()
    {
        state.failed_writes.fetch_add(1, Ordering::SeqCst);
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again. (injected by the test)</Message></Error>";
        return hyper::Response::builder()
            .status(500)
            .header("content-type", "application/xml")
            .body(ProxyBody::new(xml.into()))
            .expect("response");
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let url = format!(
        "{}{}",
        state.upstream,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut out = state.http.request(parts.method.clone(), &url).body(body);
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST && name != hyper::header::CONTENT_LENGTH {
            out = out.header(name, value);
        }
    }
    match out.send().await {
        Ok(resp) => {
            let mut builder = hyper::Response::builder().status(resp.status());
            for (name, value) in resp.headers() {
                if name != hyper::header::TRANSFER_ENCODING
                    && name != hyper::header::CONNECTION
                    && name != hyper::header::CONTENT_LENGTH
                {
                    builder = builder.header(name, value);
                }
            }
            let json = resp
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/x-amz-json"));
            let mut bytes = resp.bytes().await.unwrap_or_default();
            if json {
                bytes = mend_ecs_answer(bytes);
            }
            builder = builder.header(hyper::header::CONTENT_LENGTH, bytes.len());
            builder.body(ProxyBody::new(bytes)).expect("response")
        }
        Err(e) => hyper::Response::builder()
            .status(502)
            .body(ProxyBody::new(format!("upstream: {e}").into()))
            .expect("response"),
    }
}

/// `tasks[].containers[].cpu|memory` (and `task.…`) as ECS gives them: strings.
fn mend_ecs_answer(body: bytes::Bytes) -> bytes::Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    let mut mended = false;
    if let Some(tasks) = v.get_mut("tasks").and_then(Value::as_array_mut) {
        for t in tasks {
            mended |= mend_task(t);
        }
    }
    if let Some(t) = v.get_mut("task") {
        mended |= mend_task(t);
    }
    if mended {
        serde_json::to_vec(&v).map(Into::into).unwrap_or(body)
    } else {
        body
    }
}

fn mend_task(task: &mut Value) -> bool {
    let mut mended = false;
    // The test agent runs every task's container on this machine, so the task's network
    // interface is the loopback: moto makes up a 10.x address no process here has.
    for d in task
        .get_mut("attachments")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(|a| a.get_mut("details").and_then(Value::as_array_mut))
        .flatten()
    {
        if d["name"] == "privateIPv4Address" && d["value"] != "127.0.0.1" {
            d["value"] = Value::String("127.0.0.1".into());
            mended = true;
        }
    }
    for c in task
        .get_mut("containers")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for field in ["cpu", "memory"] {
            if let Some(n) = c.get(field).filter(|f| f.is_number()).cloned() {
                c[field] = Value::String(n.to_string());
                mended = true;
            }
        }
    }
    mended
}
