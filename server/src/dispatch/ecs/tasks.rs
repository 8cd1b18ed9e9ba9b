//! The ECS calls a dispatcher makes: RunTask with the claim in its overrides, StopTask,
//! and DescribeTasks for a task's addresses.

use std::net::IpAddr;
use std::time::Duration;

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, ContainerOverride, KeyValuePair, LaunchType,
    NetworkConfiguration, TaskOverride,
};
use cdeploy_core::event::EventBody;

use super::EcsDispatcher;
use crate::dispatch::{ClaimRefused, Job};

impl EcsDispatcher {
    /// The addresses of a task's network interfaces, as DescribeTasks gives them, while
    /// the task is starting or running (a stopped task's address may be another's now).
    pub(super) async fn task_addresses(&self, task: &str) -> Result<Vec<IpAddr>, ClaimRefused> {
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

    pub(super) async fn stop_task(&self, task: &str, reason: &str) -> bool {
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

    pub(super) async fn run_task(&self, job: &Job) -> Result<String, String> {
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

/// ECS's own words for a failed call (`ClientException: Unable to describe task
/// definition.`), or the transport error when there was no answer.
pub(super) fn sdk_error<E, R>(e: aws_sdk_ecs::error::SdkError<E, R>) -> String
where
    E: aws_sdk_ecs::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    cdeploy_storage::aws::sdk_error_message(&e)
}

/// How a deployment ends because its task stopped.
#[derive(Debug, Clone)]
pub(super) struct Ending {
    pub(super) body: EventBody,
    /// Publish at once rather than after the stop grace.
    pub(super) urgent: bool,
}

/// How long ago an RFC 3339 timestamp was.
pub(super) fn age_of(ts: &str) -> Duration {
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .and_then(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .to_std()
                .ok()
        })
        .unwrap_or_default()
}
