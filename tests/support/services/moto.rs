//! [`Moto`]: moto's server (the S3, ECS and EC2 APIs) and [`Aws`], raw calls to it.

use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::{free_port, wait_until};

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

    /// An object's text, as the platform's own (authorized) reads get it; empty when
    /// there is none.
    pub fn object(&self, bucket: &str, key: &str) -> String {
        self.http
            .get(format!("{}/{bucket}/{key}", self.endpoint()))
            .header("authorization", Self::auth("s3"))
            .send()
            .expect("S3 request")
            .text()
            .unwrap_or_default()
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
