//! `cdeploy login`: check a token against the server and save it for that API URL.

use std::io::IsTerminal;

use cdeploy_core::api;
use cdeploy_core::credentials::Credentials;

use crate::client::Client;
use crate::exit::{CliError, CliResult, ExitStatus};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub async fn run(g: &Globals, _args: Args) -> CliResult {
    let token = match &g.token {
        Some(t) => t.clone(),
        None if std::io::stdin().is_terminal() => dialoguer::Password::new()
            .with_prompt(format!("Token for {}", g.api))
            .interact()
            .map_err(|e| CliError::usage(format!("prompt failed: {e}")))?,
        None => {
            return Err(CliError::usage("no token given").with_hint(
                "pass --token or set CDEPLOY_TOKEN (the server writes its admin token to <data-dir>/admin-token)",
            ))
        }
    };
    let globals = Globals {
        api: g.api.clone(),
        token: Some(token.trim().to_string()),
        printer: g.printer,
        max_wait: g.max_wait,
    };
    let client = Client::new(&globals)?;
    // whoami answers any valid token, whatever its role.
    let me: api::TokenInfo = client.get("/v1/whoami").await?;
    let path = Credentials::save_token(&g.api, token.trim())
        .map_err(|e| CliError::usage(format!("cannot save the credentials: {e}")))?;
    g.printer.info(format!(
        "Logged in to {} as {} ({}) (saved in {})",
        g.api,
        me.name,
        me.role,
        path.display()
    ));
    Ok(ExitStatus::Success)
}

#[derive(clap::Args, Debug)]
pub struct LogoutArgs {}

/// `cdeploy logout`: forget the token saved for this API URL (the token itself keeps
/// working until an admin revokes it: `cdeploy tokens revoke`).
pub async fn logout(g: &Globals, _args: LogoutArgs) -> CliResult {
    let removed = Credentials::remove_token(&g.api)
        .map_err(|e| CliError::usage(format!("cannot update the credentials: {e}")))?;
    if g.printer.json {
        g.printer
            .json_result(&serde_json::json!({ "api": g.api, "removed": removed }));
    } else if removed {
        g.printer.info(format!(
            "Logged out of {} (its saved token is forgotten; `cdeploy tokens revoke` ends the token itself)",
            g.api
        ));
    } else {
        g.printer.info(format!("No token was saved for {}", g.api));
    }
    Ok(ExitStatus::Success)
}
