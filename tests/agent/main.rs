//! `cdeploy-test-ecs-agent`: does for the tests what Fargate does in production. moto
//! records ECS tasks but runs nothing, so this process polls it for new tasks, runs
//! `cdeploy-builder` with the task definition's container environment merged with the
//! task's overrides (overrides win, as in ECS), and stops the task when the builder exits.
//! A task stopped by someone else (StopTask) gets SIGTERM, then SIGKILL after a grace
//! period — Fargate's `stopTimeout`.
//!
//! Usage: `cdeploy-test-ecs-agent ENDPOINT CLUSTER BUILDER [START_DELAY_MS]`: a task's
//! container starts that long after the agent first sees it (Fargate's provisioning,
//! default 0). Prints one JSON line per task it starts
//! (`{"task","overrides":[{name,value}…]}`) and per task that ends.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cdeploy_tests::services::Aws;
use serde_json::{json, Value};

const CONTAINER: &str = "builder-image";
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

struct Running {
    child: Child,
    /// When SIGTERM was sent because the task was stopped.
    terminating: Option<Instant>,
    /// The task's disk, deleted when it ends.
    work: Option<tempfile::TempDir>,
}

fn env_pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|kv| {
                    Some((
                        kv["name"].as_str()?.to_string(),
                        kv["value"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn say(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (endpoint, cluster, builder, delay) = match args.as_slice() {
        [_, e, c, b] => (e, c, b, Duration::ZERO),
        [_, e, c, b, ms] if ms.parse::<u64>().is_ok() => {
            (e, c, b, Duration::from_millis(ms.parse().unwrap_or(0)))
        }
        _ => {
            eprintln!("usage: cdeploy-test-ecs-agent ENDPOINT CLUSTER BUILDER [START_DELAY_MS]");
            std::process::exit(2);
        }
    };
    let mut first_seen: HashMap<String, Instant> = HashMap::new();
    let aws = Aws::new(endpoint);
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut seen: std::collections::HashSet<String> = Default::default();
    loop {
        let (status, listed) = aws.ecs_call(
            "ListTasks",
            &json!({ "cluster": cluster, "desiredStatus": "RUNNING" }),
        );
        if status >= 300 {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let active: Vec<String> = listed["taskArns"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();

        for arn in &active {
            if seen.contains(arn) {
                continue;
            }
            if first_seen
                .entry(arn.clone())
                .or_insert_with(Instant::now)
                .elapsed()
                < delay
            {
                continue;
            }
            if !seen.insert(arn.clone()) {
                continue;
            }
            let task = aws.describe_task(cluster, arn);
            let def = aws.ecs(
                "DescribeTaskDefinition",
                &json!({ "taskDefinition": task["taskDefinitionArn"] }),
            );
            let container = def["taskDefinition"]["containerDefinitions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["name"] == CONTAINER))
                .cloned()
                .unwrap_or(Value::Null);
            let overrides = task["overrides"]["containerOverrides"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["name"] == CONTAINER))
                .map(|c| c["environment"].clone())
                .unwrap_or(Value::Null);
            let mut env: Vec<(String, String)> = env_pairs(&container["environment"]);
            for (k, v) in env_pairs(&overrides) {
                env.retain(|(name, _)| *name != k);
                env.push((k, v));
            }
            let work = cdeploy_tests::traversable_tempdir();
            let spawned = Command::new(builder)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", work.path())
                .env("WORK_DIR", work.path().join("build"))
                .envs(env)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(if std::env::var_os("TEST_LOG").is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                })
                .spawn();
            match spawned {
                Ok(child) => {
                    say(json!({ "task": arn, "overrides": overrides }));
                    running.insert(
                        arn.clone(),
                        Running {
                            child,
                            terminating: None,
                            work: Some(work),
                        },
                    );
                }
                Err(e) => {
                    aws.stop_task(cluster, arn, &format!("CannotStartContainerError: {e}"));
                }
            }
        }

        running.retain(|arn, r| {
            if let Ok(Some(status)) = r.child.try_wait() {
                say(json!({ "task": arn, "exit": status.code() }));
                if r.terminating.is_none() {
                    aws.stop_task(cluster, arn, "Essential container in task exited");
                }
                // Deleted aside, as Fargate discards a task's storage: a build's
                // node_modules is ~10,000 files, and this loop starts the next task.
                if let Some(work) = r.work.take() {
                    let arn = arn.clone();
                    std::thread::spawn(move || {
                        drop(work);
                        say(json!({ "task": arn, "deleted": true }));
                    });
                }
                return false;
            }
            match r.terminating {
                None if !active.contains(arn) => {
                    // SAFETY: signalling our own child.
                    unsafe { libc::kill(r.child.id() as i32, libc::SIGTERM) };
                    r.terminating = Some(Instant::now());
                }
                Some(since) if since.elapsed() > STOP_TIMEOUT => {
                    let _ = r.child.kill();
                }
                _ => {}
            }
            true
        });
        std::thread::sleep(Duration::from_millis(200));
    }
}
