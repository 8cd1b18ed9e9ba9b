//! `POST /v1/webhooks/{forge}/{slug}`: a forge's delivery, authenticated by the
//! project's secret (see [`super::forge`]), then handled by
//! [`crate::service::git::deliver`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use cdeploy_core::api::Delivery;
use cdeploy_core::ids;

use super::error::ApiError;
use super::forge::ForgeHeaders;
use crate::service::git::deliver::{self, Incoming, Outcome};
use crate::service::git::{self, Forge};
use crate::service::limits::count_failure;
use crate::service::App;

/// Largest delivery accepted (GitHub caps its payloads at 25 MB; pushes of thousands of
/// commits are far below this).
pub const MAX_PAYLOAD_BYTES: usize = 5 * 1024 * 1024;

/// `POST /v1/webhooks/{forge}/{slug}`: answers `202` with the recorded delivery when it
/// deploys, `200` when it is ignored, `401` when it is refused.
#[utoipa::path(post, path = "/v1/webhooks/{forge}/{slug}", tag = "git", params(("forge" = String, Path, description = "github, gitlab, gitea or forgejo"), super::openapi::SlugPath), request_body(content = serde_json::Value, content_type = "application/json", description = "The forge's payload"), responses((status = 202, description = "Accepted: a deployment was made", body = Delivery), (status = 200, description = "Ignored, or an alias was removed", body = Delivery), (status = 401, description = "Refused: the signature or token does not match", body = Delivery), (status = 400, description = "Refused: the payload is not what its event needs", body = Delivery), super::openapi::HookErrors))]
pub async fn receive(
    State(app): State<Arc<App>>,
    Path((forge, slug)): Path<(String, String)>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Delivery>), ApiError> {
    let Some(forge) = Forge::parse(&forge) else {
        return Err(ApiError::not_found(format!(
            "forge {forge:?} (github, gitlab, gitea or forgejo)"
        )));
    };
    if ids::validate_slug(&slug).is_err() {
        return Err(ApiError::not_found(format!("project {slug:?}")));
    }
    // Unlinked or unknown projects record nothing: anyone may call this route.
    let link = match app.store.git_link(&slug).await? {
        Some(l) => l,
        None => {
            return Err(ApiError::not_found(format!(
                "a repository link of project {slug}"
            )))
        }
    };
    let event = forge
        .event(&headers)
        .unwrap_or_else(|| "(no event header)".into());
    let incoming = Incoming {
        slug: &slug,
        forge: forge.as_str(),
        event: &event,
        delivery: forge.delivery(&headers),
        payload: Some(cdeploy_core::sha256_hex(&body)),
    };
    let secret = git::forge_secret(
        &git::open_secret(&app, &link)?,
        forge,
        link.per_forge_secrets,
    );
    if let Err(why) = forge.verify(&headers, &body, &secret) {
        // Refusals are recorded, within the limit of failed authentications an address
        // has: past it, a flood of forged deliveries gets 429s and costs no rows.
        count_failure(
            &app.auth_failures,
            super::access::peer_ip(peer),
            "too many refused deliveries from this address; check the webhook's secret",
        )?;
        let d = incoming.record(&app, "refused", &why, None).await?;
        return Ok((StatusCode::UNAUTHORIZED, Json(d)));
    }
    let (outcome, d) = deliver::handle(&app, &link, &incoming, forge, &body).await?;
    Ok((status(outcome), Json(d)))
}

pub(super) fn status(outcome: Outcome) -> StatusCode {
    match outcome {
        Outcome::Deployed => StatusCode::ACCEPTED,
        Outcome::Done => StatusCode::OK,
        Outcome::Malformed => StatusCode::BAD_REQUEST,
    }
}
