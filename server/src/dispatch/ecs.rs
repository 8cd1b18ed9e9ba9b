//! The ECS dispatcher (distributed mode): each build is an ECS Fargate task running the
//! `cdeploy-builder` image, which appends its log to Redis and writes to S3 itself.
//!
//! * **RunTask** — `FARGATE`, awsvpc from `ECS_SUBNETS`/`ECS_SECURITY_GROUPS`, and one
//!   container override (`ECS_CONTAINER_NAME`, default `builder-image`) carrying only
//!   the deployment's ids, where the API is (`--builder-api`) and a one-time claim: the
//!   builder claims its spec and a capability through the builder API
//!   ([`crate::api::builds`]) and holds no credential. Overrides are readable by anyone
//!   allowed `ecs:DescribeTasks`, so no build setting, env value or git URL is in them.
//!   ECS `failures[]` or an API error fail the deployment at once, with ECS's reason.
//! * **Watching** — every replica watches every running ECS build: it applies the status
//!   events the builder writes to the log (the stored status follows the log) and asks
//!   DescribeTasks how the task is doing. A task that stops without the builder's final
//!   event ends the deployment `failed` with the stop reason (`canceled` when it was
//!   stopped by a cancel). All of this is idempotent, so replicas need no leader, and a
//!   replica that restarts picks the running builds up again.
//! * **Cancel** — StopTask; Fargate sends the builder SIGTERM and it reports `canceled`.
//!
//! Prebuilt deployments need no build: they are activated in this process.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::Region;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, ContainerOverride, KeyValuePair, LaunchType,
    NetworkConfiguration, TaskOverride,
};
use aws_sdk_ecs::Client;
use cdeploy_core::event::{EventBody, Status};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ClaimRefused, DispatchError, Dispatcher, Job, JobKind, LocalDispatcher};
use crate::db::DeploymentRow;
use crate::lifecycle::Lifecycle;

/// The stop reason a cancel gives StopTask; a task stopped with it ends `canceled`.
const CANCEL_REASON: &str = "cdeploy: deployment canceled";
/// The stop reason of a build stopped at its deadline.
const TIMEOUT_REASON: &str = "cdeploy: build deadline exceeded";
/// A deployment with no task this long after its last change was never started (the
/// replica handling it stopped before RunTask answered).
const ORPHAN_AFTER: Duration = Duration::from_secs(120);

/// ECS settings, from the seed's variable names.
#[derive(Debug, Clone)]
pub struct EcsSettings {
    /// `CLUSTER`
    pub cluster: String,
    /// `TASK`: task definition family, `family:revision` or ARN.
    pub task_definition: String,
    /// `ECS_CONTAINER_NAME` (default `builder-image`).
    pub container: String,
    /// `ECS_SUBNETS`, comma-separated.
    pub subnets: Vec<String>,
    /// `ECS_SECURITY_GROUPS`, comma-separated.
    pub security_groups: Vec<String>,
    /// `ECS_ASSIGN_PUBLIC_IP=1` for tasks in public subnets without a NAT gateway.
    pub assign_public_ip: bool,
    /// `ECS_REGION`, else the standard chain.
    pub region: Option<String>,
    /// `ECS_ACCESS_KEY`/`ECS_SECRET_ACCESS_KEY`, else the standard chain (task role…).
    pub credentials: Option<(String, String)>,
    /// `AWS_ENDPOINT_URL_ECS`/`AWS_ENDPOINT_URL`, for ECS-compatible endpoints.
    pub endpoint: Option<String>,
    pub poll: Duration,
    pub stop_grace: Duration,
    /// Where builders reach the control plane's API (`--builder-api`): a load balancer
    /// in front of the replicas, or several URLs, comma-separated.
    pub builder_api: String,
    /// A build still running this long after it was created is stopped and failed,
    /// whatever ECS or the log say (the builder enforces `BUILD_TIMEOUT` itself; this
    /// covers a task that never started or a watcher that cannot reach ECS).
    pub deadline: Duration,
    /// `ECS_CLAIM_FROM`: where a build's claim must come from.
    pub claim_from: ClaimFrom,
}

/// Where a build's one-time claim is taken from (`ECS_CLAIM_FROM`). The claim travels in
/// the task's overrides, which anyone allowed `ecs:DescribeTasks` reads; only the task
/// itself sends from its network interface's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimFrom {
    /// `task` (the default): the caller's address must be exactly one of the task's ENI
    /// addresses. `ECS_CLAIM_PROXIES=CIDR,…`: the load balancers between the tasks and
    /// the API; from a peer inside those ranges (and only then), the caller is the
    /// rightmost `X-Forwarded-For` entry outside them.
    Task { proxies: Vec<ipnet::IpNet> },
    /// `anywhere`: the claim alone admits (the builder API is reached through a NAT or a
    /// proxy that hides the task's address); docs/aws.md says what that leaves open.
    Anywhere,
}

impl ClaimFrom {
    /// The address a claim came from: the peer, or behind a trusted load balancer the
    /// rightmost forwarded address that is not one of them. Canonical (an IPv4-mapped
    /// IPv6 address is its IPv4 address), never widened to a network.
    pub fn caller(
        proxies: &[ipnet::IpNet],
        headers: &axum::http::HeaderMap,
        peer: IpAddr,
    ) -> IpAddr {
        let trusted = |a: &IpAddr| proxies.iter().any(|n| n.contains(a));
        let peer = peer.to_canonical();
        if !trusted(&peer) {
            return peer;
        }
        for entry in cdeploy_proxy::forwarded_for(headers).iter().rev() {
            let Some(a) = cdeploy_proxy::parse_forwarded(entry) else {
                // Unreadable: nothing further left can be believed.
                return peer;
            };
            if !trusted(&a) {
                return a;
            }
        }
        peer
    }
}

impl EcsSettings {
    pub fn from_env(
        get: impl Fn(&str) -> Option<String>,
        builder_api: Option<&str>,
        poll: Duration,
        stop_grace: Duration,
        build_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let list = |k: &str| -> Vec<String> {
            get(k)
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let required = |k: &str, what: &str| {
            get(k).ok_or_else(|| anyhow::anyhow!("--dispatcher ecs: set {k} ({what})"))
        };
        let settings = EcsSettings {
            cluster: required("CLUSTER", "the ECS cluster name or ARN")?,
            task_definition: required("TASK", "the builder's task definition")?,
            container: get("ECS_CONTAINER_NAME").unwrap_or_else(|| "builder-image".into()),
            subnets: list("ECS_SUBNETS"),
            security_groups: list("ECS_SECURITY_GROUPS"),
            assign_public_ip: matches!(
                get("ECS_ASSIGN_PUBLIC_IP").as_deref(),
                Some("1" | "true" | "ENABLED" | "yes")
            ),
            region: get("ECS_REGION"),
            credentials: match (get("ECS_ACCESS_KEY"), get("ECS_SECRET_ACCESS_KEY")) {
                (Some(k), Some(s)) => Some((k, s)),
                (None, None) => None,
                _ => anyhow::bail!("set both ECS_ACCESS_KEY and ECS_SECRET_ACCESS_KEY, or neither (to use the task role or AWS_* credentials)"),
            },
            endpoint: get("AWS_ENDPOINT_URL_ECS").or_else(|| get("AWS_ENDPOINT_URL")),
            builder_api: builder_api.map(str::trim).unwrap_or("").to_string(),
            poll,
            stop_grace,
            // Room for Fargate to provision the task and pull the image.
            deadline: build_timeout + Duration::from_secs(600),
            claim_from: match get("ECS_CLAIM_FROM").as_deref() {
                None | Some("task") => ClaimFrom::Task {
                    proxies: list("ECS_CLAIM_PROXIES")
                        .iter()
                        .map(|n| {
                            n.parse::<ipnet::IpNet>()
                                .or_else(|_| n.parse::<IpAddr>().map(ipnet::IpNet::from))
                                .map_err(|_| anyhow::anyhow!("ECS_CLAIM_PROXIES: {n:?} is not an address range; expected the load balancers' ranges between the build tasks and the API, e.g. 10.0.0.0/24,10.0.1.0/24"))
                        })
                        .collect::<anyhow::Result<_>>()?,
                },
                Some("anywhere") => ClaimFrom::Anywhere,
                Some(other) => anyhow::bail!(
                    "ECS_CLAIM_FROM={other:?}: expected `task` (the claim must come from the build task's address) or `anywhere`"
                ),
            },
        };
        if settings.subnets.is_empty() {
            anyhow::bail!(
                "--dispatcher ecs: set ECS_SUBNETS (comma-separated subnet ids for the build tasks)"
            );
        }
        if settings.builder_api.is_empty() {
            anyhow::bail!("--dispatcher ecs: set --builder-api (CDEPLOY_BUILDER_API): the URL build tasks reach this API at, e.g. https://deploy.internal");
        }
        for url in settings.builder_api.split(',') {
            let url = url.trim();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                anyhow::bail!("--builder-api {url:?}: expected http(s):// URLs, comma-separated");
            }
        }
        Ok(settings)
    }

    async fn client(&self) -> Client {
        let credentials = self
            .credentials
            .as_ref()
            .map(|(k, s)| (k.as_str(), s.as_str()));
        let sdk = cdeploy_core::s3::aws_config_with(
            self.region.as_deref(),
            credentials,
            self.endpoint.as_deref(),
            "cdeploy-ecs-env",
        )
        .await;
        let mut conf = aws_sdk_ecs::config::Builder::from(&sdk);
        if sdk.region().is_none() {
            conf = conf.region(Region::new("us-east-1"));
        }
        Client::from_conf(conf.build())
    }
}

pub struct EcsDispatcher {
    client: Client,
    settings: EcsSettings,
    /// Prebuilt activations run here.
    local: Arc<LocalDispatcher>,
    lifecycle: Arc<Lifecycle>,
    /// Deployments this replica is starting or watching.
    watching: Mutex<HashSet<String>>,
    tracker: TaskTracker,
    stop: CancellationToken,
    /// This dispatcher, for the watchers `submit` spawns.
    me: std::sync::Weak<EcsDispatcher>,
}

impl EcsDispatcher {
    pub async fn start(
        settings: EcsSettings,
        local: Arc<LocalDispatcher>,
        lifecycle: Arc<Lifecycle>,
    ) -> Arc<Self> {
        let client = settings.client().await;
        let d = Arc::new_cyclic(|me| EcsDispatcher {
            client,
            settings,
            local,
            lifecycle,
            watching: Mutex::new(HashSet::new()),
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            me: me.clone(),
        });
        let me = d.clone();
        d.tracker.spawn(async move { me.reconcile_forever().await });
        d
    }

    /// Keeps a watcher on every running ECS build, and fails deployments nobody started.
    async fn reconcile_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.poll);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.stop.cancelled() => return,
            }
            let running = match self.lifecycle.store.non_terminal_deployments().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list running deployments");
                    continue;
                }
            };
            for d in running {
                if self.local.knows(&d.id) || self.is_watching(&d.id) {
                    continue;
                }
                match &d.task {
                    Some(task) => self.watch(
                        d.id.clone(),
                        d.slug.clone(),
                        task.clone(),
                        age_of(&d.created_at),
                    ),
                    None if age_of(&d.updated_at) > ORPHAN_AFTER => {
                        self.lifecycle
                            .event(
                                &d.id,
                                &d.slug,
                                EventBody::failed(
                                    "no build task was started: the server handling this deployment stopped; deploy again",
                                ),
                            )
                            .await;
                    }
                    None => {}
                }
            }
        }
    }

    fn is_watching(&self, id: &str) -> bool {
        self.watching.lock().expect("not poisoned").contains(id)
    }

    /// Watches a task until its deployment ends (at most one watcher per deployment here).
    fn watch(self: &Arc<Self>, id: String, slug: String, task: String, age: Duration) {
        self.watching
            .lock()
            .expect("not poisoned")
            .insert(id.clone());
        let me = self.clone();
        let watched = &self.lifecycle.metrics.ecs_builds_watched;
        watched.inc();
        self.tracker.spawn(async move {
            let created = std::time::Instant::now()
                .checked_sub(age)
                .unwrap_or_else(std::time::Instant::now);
            tokio::select! {
                () = me.follow(&id, &slug, &task, created) => {}
                () = me.stop.cancelled() => {}
            }
            me.watching.lock().expect("not poisoned").remove(&id);
            me.lifecycle.metrics.ecs_builds_watched.dec();
        });
    }

    async fn follow(&self, id: &str, slug: &str, task: &str, created: std::time::Instant) {
        let bus = &self.lifecycle.bus;
        let mut sub = bus.subscribe(id, 0).await;
        let mut last = 0;
        for e in &sub.backlog {
            last = e.seq;
            self.lifecycle.apply(id, slug, &e.body).await;
            if e.is_terminal() {
                bus.seal(id).await;
                return;
            }
        }
        let mut poll = tokio::time::interval(self.settings.poll);
        let mut stopped: Option<(tokio::time::Instant, Ending)> = None;
        loop {
            let next = async {
                match sub.live.as_mut() {
                    Some(live) => live.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = next => {
                    let events = match received {
                        Ok(e) if e.seq <= last => continue,
                        Ok(e) if e.seq == last + 1 => vec![e],
                        Ok(_) | Err(RecvError::Lagged(_)) => bus.history(id, last).await,
                        Err(RecvError::Closed) => {
                            sub = bus.subscribe(id, last).await;
                            std::mem::take(&mut sub.backlog)
                        }
                    };
                    for e in events {
                        last = e.seq;
                        self.lifecycle.apply(id, slug, &e.body).await;
                        if e.is_terminal() {
                            bus.seal(id).await;
                            return;
                        }
                    }
                }
                _ = poll.tick() => {
                    if stopped.is_none() && created.elapsed() > self.settings.deadline {
                        tracing::warn!(deployment = id, task, "build past its deadline; stopping the task");
                        self.stop_task(task, TIMEOUT_REASON).await;
                        stopped = Some((tokio::time::Instant::now(), Ending {
                            body: EventBody::failed(format!(
                                "the build did not finish within {}s (the task was stopped)",
                                self.settings.deadline.as_secs()
                            )),
                            urgent: true,
                        }));
                    }
                    if stopped.is_none() {
                        if let Some(ending) = self.task_ending(task).await {
                            tracing::info!(deployment = id, task, ?ending, "the build task is stopping");
                            stopped = Some((tokio::time::Instant::now(), ending));
                        }
                    }
                    let Some((since, ending)) = &stopped else { continue };
                    // A stop by ECS (not a cancel) is told at once, with ECS's reason: the
                    // builder, stopped by SIGTERM, waits for it. Otherwise the builder has
                    // its say first; this is the word for a builder that never spoke.
                    if ending.urgent || since.elapsed() >= self.settings.stop_grace {
                        if let Some(e) = bus.publish(id, ending.body.clone()).await {
                            self.lifecycle.apply(id, slug, &e.body).await;
                            bus.seal(id).await;
                            return;
                        }
                    }
                }
            }
        }
    }

    /// How the deployment ends, once ECS stops (or is stopping) its task.
    async fn task_ending(&self, task: &str) -> Option<Ending> {
        let out = match self
            .client
            .describe_tasks()
            .cluster(&self.settings.cluster)
            .tasks(task)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(task, error = %sdk_error(e), "DescribeTasks failed");
                return None;
            }
        };
        let Some(t) = out.tasks().first() else {
            let why = out
                .failures()
                .first()
                .and_then(|f| f.reason())
                .unwrap_or("unknown");
            return Some(Ending {
                body: EventBody::failed(format!("the build task {task} is gone from ECS ({why})")),
                urgent: false,
            });
        };
        let exited = t.last_status() == Some("STOPPED");
        if !exited && t.desired_status() != Some("STOPPED") {
            return None;
        }
        let reason = t
            .stopped_reason()
            .filter(|r| !r.is_empty())
            .unwrap_or("no reason given");
        if reason == CANCEL_REASON {
            return Some(Ending {
                body: EventBody::status(Status::Canceled),
                urgent: false,
            });
        }
        let container = t
            .containers()
            .iter()
            .find(|c| c.name() == Some(self.settings.container.as_str()));
        let mut detail = String::new();
        let container_exited = container.is_some_and(|c| c.last_status() == Some("STOPPED"));
        if let Some(code) = container
            .and_then(|c| c.exit_code())
            .filter(|_| container_exited)
        {
            detail.push_str(&format!(", exit code {code}"));
        }
        if let Some(r) = container.and_then(|c| c.reason()) {
            detail.push_str(&format!(", {r}"));
        }
        Some(Ending {
            body: EventBody::failed(format!(
                "the build task stopped before the build finished: {reason}{detail}"
            )),
            // Still stopping: its builder is alive and waiting to hear why.
            urgent: !exited,
        })
    }

    /// The addresses of a task's network interfaces, as DescribeTasks gives them, while
    /// the task is starting or running (a stopped task's address may be another's now).
    async fn task_addresses(&self, task: &str) -> Result<Vec<IpAddr>, ClaimRefused> {
        let out = self
            .client
            .describe_tasks()
            .cluster(&self.settings.cluster)
            .tasks(task)
            .send()
            .await
            .map_err(|e| ClaimRefused::NotYet(format!("DescribeTasks failed: {}", sdk_error(e))))?;
        let t = out
            .tasks()
            .first()
            .ok_or_else(|| ClaimRefused::Elsewhere("the build's task is gone from ECS".into()))?;
        let live = matches!(
            t.last_status(),
            Some("PROVISIONING" | "PENDING" | "ACTIVATING" | "RUNNING")
        ) && t.desired_status() != Some("STOPPED");
        if !live {
            return Err(ClaimRefused::Elsewhere(
                "the build's task is stopping or stopped".into(),
            ));
        }
        Ok(t.attachments()
            .iter()
            .filter(|a| a.r#type() == Some("ElasticNetworkInterface"))
            .flat_map(|a| a.details())
            .filter(|d| {
                matches!(
                    d.name(),
                    Some("privateIPv4Address" | "privateIPv6Address" | "ipv6Address")
                )
            })
            .filter_map(|d| d.value()?.parse::<IpAddr>().ok())
            .map(|a| a.to_canonical())
            .collect())
    }

    async fn stop_task(&self, task: &str, reason: &str) -> bool {
        match self
            .client
            .stop_task()
            .cluster(&self.settings.cluster)
            .task(task)
            .reason(reason)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(task, error = %sdk_error(e), "StopTask failed");
                false
            }
        }
    }

    async fn run_task(&self, job: &Job) -> Result<String, String> {
        // The claim is spent in the builder's first request; its hash alone is stored.
        let claim = cdeploy_core::ids::generate_token();
        self.lifecycle
            .store
            .set_build_claim(&job.id, &cdeploy_core::ids::token_hash(&claim))
            .await
            .map_err(|e| format!("cannot record the build claim: {e}"))?;
        use cdeploy_builder::env;
        let environment: Vec<KeyValuePair> = [
            (env::PROJECT_ID, job.slug.clone()),
            (env::DEPLOYMENT_ID, job.id.clone()),
            (env::CDEPLOY_API, self.settings.builder_api.clone()),
            (env::BUILD_CLAIM, claim),
        ]
        .into_iter()
        .map(|(name, value)| KeyValuePair::builder().name(name).value(value).build())
        .collect();
        let vpc = AwsVpcConfiguration::builder()
            .set_subnets(Some(self.settings.subnets.clone()))
            .set_security_groups(
                (!self.settings.security_groups.is_empty())
                    .then(|| self.settings.security_groups.clone()),
            )
            .assign_public_ip(if self.settings.assign_public_ip {
                AssignPublicIp::Enabled
            } else {
                AssignPublicIp::Disabled
            })
            .build()
            .map_err(|e| format!("invalid network settings: {e}"))?;
        let out = self
            .client
            .run_task()
            .cluster(&self.settings.cluster)
            .task_definition(&self.settings.task_definition)
            .launch_type(LaunchType::Fargate)
            .count(1)
            .started_by("cdeploy")
            .reference_id(&job.id)
            // Idempotent: a retried RunTask never starts a second build.
            .client_token(&job.id)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(vpc)
                    .build(),
            )
            .overrides(
                TaskOverride::builder()
                    .container_overrides(
                        ContainerOverride::builder()
                            .name(&self.settings.container)
                            .set_environment(Some(environment))
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .map_err(|e| format!("ECS RunTask failed: {}", sdk_error(e)))?;
        if let Some(f) = out.failures().first() {
            return Err(format!(
                "ECS could not start the build task: {}{}",
                f.reason().unwrap_or("unknown reason"),
                f.detail().map(|d| format!(" ({d})")).unwrap_or_default()
            ));
        }
        out.tasks()
            .first()
            .and_then(|t| t.task_arn())
            .map(str::to_string)
            .ok_or_else(|| "ECS RunTask started no task and gave no reason".to_string())
    }
}

#[async_trait]
impl Dispatcher for EcsDispatcher {
    async fn submit(&self, job: Job) -> Result<(), DispatchError> {
        if self.stop.is_cancelled() {
            return Err(DispatchError::ShuttingDown);
        }
        if let JobKind::Activate { .. } = &job.kind {
            return self.local.submit(job).await;
        }
        // Claimed before RunTask, so the reconciler leaves it alone meanwhile.
        self.watching
            .lock()
            .expect("not poisoned")
            .insert(job.id.clone());
        let started = self.run_task(&job).await;
        self.watching.lock().expect("not poisoned").remove(&job.id);
        let task = started.map_err(|e| {
            tracing::warn!(deployment = %job.id, error = %e, "cannot start the build task");
            DispatchError::Rejected(e)
        })?;
        tracing::info!(deployment = %job.id, slug = %job.slug, task, "build task started");
        if let Err(e) = self.lifecycle.store.set_task(&job.id, &task).await {
            tracing::error!(deployment = %job.id, error = %e, "cannot record the build task");
        }
        // `submit` runs on an API request: the watcher lives on in the dispatcher.
        if let Some(me) = self.me.upgrade() {
            me.watch(job.id, job.slug, task, Duration::ZERO);
        }
        Ok(())
    }

    async fn vouch_claim(
        &self,
        d: &DeploymentRow,
        headers: &axum::http::HeaderMap,
        from: IpAddr,
    ) -> Result<(), ClaimRefused> {
        let ClaimFrom::Task { proxies } = &self.settings.claim_from else {
            return Ok(());
        };
        let Some(task) = &d.task else {
            // RunTask has not answered yet (the claim can't be older than its task).
            return Err(ClaimRefused::NotYet(
                "the build's task is not recorded yet".into(),
            ));
        };
        let from = ClaimFrom::caller(proxies, headers, from);
        let addresses = self.task_addresses(task).await?;
        // Exactly the task's own address: a subnet (an IPv6 /64 is a whole subnet) holds
        // other tasks, other builds among them.
        if addresses.contains(&from) {
            return Ok(());
        }
        if addresses.is_empty() {
            return Err(ClaimRefused::NotYet(format!(
                "the build task {task} has no network address yet"
            )));
        }
        Err(ClaimRefused::Elsewhere(format!(
            "the claim came from {from}, which is not an address of the build's task"
        )))
    }

    async fn cancel(&self, id: &str, slug: &str) -> bool {
        if self.local.cancel(id, slug).await {
            return true;
        }
        let task = match self.lifecycle.store.get_deployment(id).await {
            Ok(Some(DeploymentRow { task: Some(t), .. })) => t,
            _ => return false,
        };
        if let Err(e) = self.lifecycle.bus.request_cancel(id).await {
            tracing::warn!(deployment = id, error = %e, "cannot mark the cancel in the log bus");
        }
        self.stop_task(&task, CANCEL_REASON).await
    }

    async fn shutdown(&self, grace: Duration) {
        // Build tasks keep running: another replica, or this one once restarted, watches them.
        self.stop.cancel();
        self.tracker.close();
        self.local.shutdown(grace).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
    }

    /// ECS builds outlive this process: the reconciler picks them up, so nothing is
    /// marked failed here. (Prebuilt activations that a crash interrupted have no task
    /// and are failed by the reconciler after [`ORPHAN_AFTER`].)
    async fn recover(&self, _reason: &str) {}

    async fn forget_project(&self, slug: &str) {
        self.local.forget_project(slug).await;
    }
}

/// ECS's own words for a failed call (`ClientException: Unable to describe task
/// definition.`), or the transport error when there was no answer.
fn sdk_error<E, R>(e: aws_sdk_ecs::error::SdkError<E, R>) -> String
where
    E: aws_sdk_ecs::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    cdeploy_core::s3::sdk_error_message(&e)
}

/// How a deployment ends because its task stopped.
#[derive(Debug, Clone)]
struct Ending {
    body: EventBody,
    /// Publish at once rather than after the stop grace.
    urgent: bool,
}

/// How long ago an RFC 3339 timestamp was.
fn age_of(ts: &str) -> Duration {
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .and_then(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .to_std()
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_claim_comes_from_the_peer_unless_a_trusted_balancer_forwards_it() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let albs: Vec<ipnet::IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        // No balancer trusted: the header is never read.
        assert_eq!(
            ClaimFrom::caller(&[], &headers(&["10.1.2.3"]), ip("10.0.9.9")),
            ip("10.0.9.9")
        );
        // A peer outside the balancers' ranges (a build task sending the header itself).
        assert_eq!(
            ClaimFrom::caller(&albs, &headers(&["10.1.2.3"]), ip("10.0.9.9")),
            ip("10.0.9.9")
        );
        // Through the balancer: the rightmost entry it did not write, whatever a caller
        // put further left.
        assert_eq!(
            ClaimFrom::caller(&albs, &headers(&["10.1.2.3, 10.7.7.7"]), ip("10.0.0.5")),
            ip("10.7.7.7")
        );
        assert_eq!(
            ClaimFrom::caller(
                &albs,
                &headers(&["10.1.2.3", "10.7.7.7:4444, 10.0.0.6"]),
                ip("10.0.0.5")
            ),
            ip("10.7.7.7")
        );
        // Unreadable or missing: the balancer itself, which is no task.
        assert_eq!(
            ClaimFrom::caller(&albs, &headers(&["10.1.2.3, junk"]), ip("10.0.0.5")),
            ip("10.0.0.5")
        );
        assert_eq!(
            ClaimFrom::caller(&albs, &headers(&[]), ip("10.0.0.5")),
            ip("10.0.0.5")
        );
        // IPv4-mapped IPv6 is its IPv4 address; IPv6 is compared whole, never by /64.
        assert_eq!(
            ClaimFrom::caller(&[], &headers(&[]), ip("::ffff:10.0.9.9")),
            ip("10.0.9.9")
        );
        assert_eq!(
            ClaimFrom::caller(&[], &headers(&[]), ip("2001:db8::1234")),
            ip("2001:db8::1234")
        );
        assert_eq!(
            ClaimFrom::caller(&albs, &headers(&["[2001:db8::5]:99"]), ip("10.0.0.5")),
            ip("2001:db8::5")
        );
    }
}
