//! Deploying from CI without a stored token: the job's OIDC identity token, read where
//! the CI documents it, traded at the server (`POST /v1/oidc/exchange`) for a deploy
//! token of the project that lives minutes.
//!
//! * GitHub Actions and Forgejo Actions (`permissions: id-token: write`): the token is
//!   asked of `ACTIONS_ID_TOKEN_REQUEST_URL` with `ACTIONS_ID_TOKEN_REQUEST_TOKEN`, for
//!   the API's URL as audience.
//! * GitLab CI and any other CI: the token is in `CDEPLOY_OIDC_TOKEN` (GitLab:
//!   `id_tokens: { CDEPLOY_OIDC_TOKEN: { aud: <the API's URL> } }`).

use cdeploy_core::api::{ExchangeAnswer, ExchangeRequest};

use crate::client::Client;
use crate::exit::CliError;
use crate::Globals;

/// The variable a CI puts an identity token in for cdeploy.
pub const TOKEN_VAR: &str = "CDEPLOY_OIDC_TOKEN";

/// The CI job's identity token for `audience`, if this is a CI that has one.
async fn identity_token(audience: &str) -> Result<Option<String>, CliError> {
    if let Ok(t) = std::env::var(TOKEN_VAR) {
        if !t.trim().is_empty() {
            return Ok(Some(t.trim().to_string()));
        }
    }
    let (Ok(url), Ok(bearer)) = (
        std::env::var("ACTIONS_ID_TOKEN_REQUEST_URL"),
        std::env::var("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
    ) else {
        return Ok(None);
    };
    let mut url = reqwest::Url::parse(&url)
        .map_err(|_| CliError::usage("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL".to_string()))?;
    url.query_pairs_mut().append_pair("audience", audience);
    let failed = |why: String| {
        CliError::api(
            "identity token",
            format!("cannot get the job's identity token from ACTIONS_ID_TOKEN_REQUEST_URL: {why} (does the workflow have `permissions: id-token: write`?)"),
        )
    };
    let resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(bearer)
        .send()
        .await
        .map_err(|e| failed(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(failed(format!("it answered {}", resp.status())));
    }
    let body: serde_json::Value = resp.json().await.map_err(|e| failed(e.to_string()))?;
    match body["value"].as_str() {
        Some(v) if !v.is_empty() => Ok(Some(v.to_string())),
        _ => Err(failed("its answer has no `value`".into())),
    }
}

/// When the client has no token and the CI gives an identity token, trades it for a
/// deploy token of `slug` and uses that.
pub async fn use_ci_identity(g: &Globals, client: &Client, slug: &str) -> Result<(), CliError> {
    if client.token().is_some() {
        return Ok(());
    }
    let audience = g.api.trim_end_matches('/');
    let Some(token) = identity_token(audience).await? else {
        return Ok(());
    };
    let answer: ExchangeAnswer = client
        .post(
            "/v1/oidc/exchange",
            &ExchangeRequest {
                project: slug.to_string(),
                token,
            },
        )
        .await?;
    g.printer.info(format!(
        "Deploying with the CI job's identity (trust {}): a token for {} until {}",
        answer.trust, answer.project, answer.expires_at
    ));
    client.use_token(answer.token);
    Ok(())
}
