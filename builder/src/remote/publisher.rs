//! Activation by the control plane, for an API builder.

use std::sync::Arc;

use async_trait::async_trait;
use cdeploy_core::api;
use cdeploy_core::config::SiteConfig;
use cdeploy_core::rules::RulesConfig;
use cdeploy_core::server::ServerOutput;
use cdeploy_storage::publish::OutputFiles;

use super::Client;
use crate::{ActivateError, BuildSpec, Publisher};

/// Activation by the control plane: it checks every blob is stored, writes the
/// manifest and its precompressed variants itself, and moves the route.
pub struct ApiPublisher {
    pub client: Arc<Client>,
}

#[async_trait]
impl Publisher for ApiPublisher {
    async fn activate(
        &self,
        _spec: &BuildSpec,
        files: &OutputFiles,
        site: &SiteConfig,
        rules: &RulesConfig,
        server: Option<&ServerOutput>,
    ) -> Result<cdeploy_core::manifest::Site, ActivateError> {
        let body = self
            .client
            .post_json(
                "activating",
                "/activate",
                &api::ActivateRequest {
                    files: files.clone(),
                    site: *site,
                    rules: rules.clone(),
                    server: server.cloned(),
                },
            )
            .await
            .map_err(|e| ActivateError::Refused(e.to_string()))?;
        serde_json::from_slice(&body)
            .map_err(|e| ActivateError::Refused(format!("activating: {e}")))
    }

    /// The control plane records the inputs and decides (it holds the earlier builds).
    async fn reuse(
        &self,
        _spec: &BuildSpec,
        inputs: &api::BuildInputs,
    ) -> Result<Option<crate::Reused>, ActivateError> {
        let body = self
            .client
            .post_json("comparing inputs", "/reuse", inputs)
            .await
            .map_err(|e| ActivateError::Refused(e.to_string()))?;
        let answer: api::Reused = serde_json::from_slice(&body)
            .map_err(|e| ActivateError::Refused(format!("comparing inputs: {e}")))?;
        Ok(match (answer.from, answer.site) {
            (Some(from), Some(site)) => Some(crate::Reused { from, site }),
            _ => None,
        })
    }
}
