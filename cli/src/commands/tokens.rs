//! `cdeploy tokens create|ls|revoke` and `cdeploy whoami`: scoped API tokens, and who
//! the current token is.

use cdeploy_core::api::{CreateToken, CreatedToken, Role, TokenInfo};

use crate::client::Client;
use crate::exit::{CliError, CliResult, ExitStatus};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Create a token; it is printed once (stdout) and never shown again.
    Create(CreateArgs),
    /// List tokens (never their secrets).
    Ls,
    /// Revoke a token by id or name: it stops working at once.
    Revoke {
        /// The token's id (`tok_…`) or its name. (Not `token`: that is the global
        /// --token's name, and clap would take one for the other.)
        #[arg(value_name = "ID_OR_NAME")]
        which: String,
    },
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// What the token is for (shown in `tokens ls` and the audit log).
    #[arg(long)]
    name: String,
    /// admin (everything), deploy (deploy and read its projects), read (read its
    /// projects' deployments and logs) or metrics (GET /metrics).
    #[arg(long, default_value = "deploy")]
    role: Role,
    /// A project the token acts on (deploy and read tokens; repeat for more).
    #[arg(long = "project", value_name = "SLUG")]
    projects: Vec<String>,
    /// Lifetime: 30d, 12h, 90m or 3600s; the token stops working after it.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    expires: Option<u64>,
}

/// Why a `--expires` value was refused (clap prints it after the value).
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?}: a number followed by d, h, m or s (e.g. 30d)")]
    NotANumber(String),
    #[error("{0:?}: the unit is d, h, m or s (e.g. 30d)")]
    UnknownUnit(String),
    #[error("a token's lifetime must be more than 0")]
    Zero,
    #[error("{0:?} is too long")]
    TooLong(String),
}

/// `30d`, `12h`, `90m`, `3600s` (or bare seconds) → seconds.
pub fn parse_duration(s: &str) -> Result<u64, DurationError> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| DurationError::NotANumber(s.to_string()))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(DurationError::UnknownUnit(s.to_string())),
    };
    match n.checked_mul(unit_secs) {
        Some(0) => Err(DurationError::Zero),
        Some(secs) => Ok(secs),
        None => Err(DurationError::TooLong(s.to_string())),
    }
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let client = Client::new(g)?;
    match args.command {
        Command::Create(a) => create(g, &client, a).await?,
        Command::Ls => ls(g, &client).await?,
        Command::Revoke { which } => revoke(g, &client, which).await?,
    }
    Ok(ExitStatus::Success)
}

/// `tokens create`: the secret on stdout, once.
async fn create(g: &Globals, client: &Client, a: CreateArgs) -> Result<(), CliError> {
    for p in &a.projects {
        cdeploy_core::ids::validate_slug(p)
            .map_err(|e| CliError::usage(format!("invalid project {p:?}: {e}")))?;
    }
    let created: CreatedToken = client
        .post(
            "/v1/tokens",
            &CreateToken {
                name: a.name,
                role: a.role,
                projects: a.projects,
                expires_in_secs: a.expires,
            },
        )
        .await?;
    if g.printer.json {
        g.printer.json_result(&created);
    } else {
        g.printer.info(format!(
            "Created token {} ({}): {}{}. It is shown once; keep it in your CI's secrets.",
            created.info.name,
            created.info.id,
            scope(&created.info),
            expiry(&created.info)
        ));
        g.printer.result(&created.token);
    }
    Ok(())
}

/// `tokens ls`: one line per token, never its secret.
async fn ls(g: &Globals, client: &Client) -> Result<(), CliError> {
    let tokens: Vec<TokenInfo> = client.get("/v1/tokens").await?;
    if g.printer.json {
        g.printer.json_result(&tokens);
        return Ok(());
    }
    for t in tokens {
        g.printer.result(format!(
            "{:<22} {:<20} {:<28} last used {:<26} {}",
            t.id,
            t.name,
            scope(&t),
            t.last_used_at.as_deref().unwrap_or("never"),
            t.expires_at
                .as_deref()
                .map(|e| format!("expires {e}"))
                .unwrap_or_else(|| "no expiry".into())
        ));
    }
    Ok(())
}

/// `tokens revoke`: by id, or by a name only one token has.
async fn revoke(g: &Globals, client: &Client, token: String) -> Result<(), CliError> {
    let id = if token.starts_with("tok_") {
        token.clone()
    } else {
        id_of_name(client, &token).await?
    };
    client
        .send::<serde_json::Value>(
            client.request(reqwest::Method::DELETE, &format!("/v1/tokens/{id}")),
        )
        .await?;
    if g.printer.json {
        g.printer.json_result(&serde_json::json!({ "revoked": id }));
    } else {
        g.printer.info(format!("Revoked {id}: it no longer works"));
    }
    Ok(())
}

/// The id of the one token named `token`.
async fn id_of_name(client: &Client, token: &str) -> Result<String, CliError> {
    let tokens: Vec<TokenInfo> = client.get("/v1/tokens").await?;
    let named: Vec<&TokenInfo> = tokens.iter().filter(|t| t.name == token).collect();
    match named.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(CliError::usage(format!("no token is named {token:?}"))
            .with_hint("`cdeploy tokens ls` lists them")),
        _ => Err(CliError::usage(format!(
            "{} tokens are named {token:?}: revoke one by its id",
            named.len()
        ))
        .with_hint("`cdeploy tokens ls` shows their ids")),
    }
}

/// `, expires <when>`, or nothing for a token that does not expire.
fn expiry(t: &TokenInfo) -> String {
    t.expires_at
        .as_deref()
        .map(|e| format!(", expires {e}"))
        .unwrap_or_default()
}

/// `deploy: app, docs` or `admin`.
fn scope(t: &TokenInfo) -> String {
    if t.projects.is_empty() {
        t.role.to_string()
    } else {
        format!("{}: {}", t.role, t.projects.join(", "))
    }
}

#[derive(clap::Args, Debug)]
pub struct WhoamiArgs {}

pub async fn whoami(g: &Globals, _args: WhoamiArgs) -> CliResult {
    let client = Client::new(g)?;
    let me: TokenInfo = client.get("/v1/whoami").await?;
    if g.printer.json {
        g.printer.json_result(&me);
    } else {
        g.printer.result(format!(
            "{} ({}, {}) on {}{}",
            me.name,
            me.id,
            scope(&me),
            g.api,
            expiry(&me)
        ));
    }
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    /// clap prints these after "invalid value '…' for '--expires <DURATION>':".
    #[test]
    fn durations_and_their_refusals() {
        assert_eq!(parse_duration("30d").unwrap(), 30 * 86_400);
        assert_eq!(parse_duration(" 90m ").unwrap(), 5400);
        assert_eq!(parse_duration("3600").unwrap(), 3600);
        let refused = |s: &str| parse_duration(s).unwrap_err().to_string();
        assert_eq!(
            refused("d"),
            "\"d\": a number followed by d, h, m or s (e.g. 30d)"
        );
        assert_eq!(refused("5x"), "\"5x\": the unit is d, h, m or s (e.g. 30d)");
        assert_eq!(refused("0h"), "a token's lifetime must be more than 0");
        assert_eq!(
            refused("999999999999999999d"),
            "\"999999999999999999d\" is too long"
        );
    }
}
