//! Creating the deployment: `POST /v1/projects/{slug}/deployments` under an
//! Idempotency-Key, uploading the blobs the server reports missing, and waiting out a
//! full build queue.

use std::time::Duration;

use cdeploy_core::api::{self, codes, CreateDeployment};
use cdeploy_core::ids;
use reqwest::Method;

use crate::client::Client;
use crate::exit::CliError;
use crate::files::FileSet;
use crate::printer::Renderer;
use crate::upload::upload_missing;

/// Creates the deployment, uploading what the server reports missing, and retrying with
/// the same Idempotency-Key so a lost answer never makes a second deployment.
pub(super) async fn create(
    client: &Client,
    renderer: &Renderer,
    slug: &str,
    body: &CreateDeployment,
    uploads: &FileSet,
) -> Result<api::Deployment, CliError> {
    let mut key = ids::random_id(24);
    let path = format!("/v1/projects/{slug}/deployments");
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        let rb = client
            .request(Method::POST, &path)
            .header("Idempotency-Key", &key)
            .json(body);
        match client.send_raw::<api::Deployment>(rb).await {
            Ok(Ok(d)) => return Ok(d),
            // The server recorded that deployment as failed for want of room: wait, and
            // ask for a new one (under a new key, or the failed one would be the answer).
            Ok(Err(f))
                if f.body
                    .as_ref()
                    .is_some_and(|b| b.error.code == codes::QUEUE_FULL) =>
            {
                let reason = f.body.as_ref().map(|b| b.error.message.clone());
                let waited = client
                    .wait_out(f.retry_after, reason.as_deref().unwrap_or("busy"))
                    .await;
                if !waited {
                    return Err(client.failure(f));
                }
                key = ids::random_id(24);
                attempt = 0;
            }
            Ok(Err(f)) => {
                let missing = f
                    .body
                    .as_ref()
                    .filter(|b| b.error.code == codes::MISSING_FILES)
                    .and_then(|b| b.error.missing.clone());
                match missing {
                    Some(m) if attempt < 4 => {
                        upload_missing(client, renderer, uploads, Some(m)).await?
                    }
                    _ => return Err(client.failure(f)),
                }
            }
            Err(e) if attempt < 4 && e.code != "unreachable" => {
                tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
