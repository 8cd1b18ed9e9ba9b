//! `cdeploy tokens create|ls|revoke`, `cdeploy whoami`, `cdeploy audit`: scoped API
//! tokens, who the current token is, and what tokens did.

use cdeploy_core::api::{AuditEntry, CreateToken, CreatedToken, Role, TokenInfo};

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
    #[arg(long, default_value = "deploy", value_parser = parse_role)]
    role: Role,
    /// A project the token acts on (deploy and read tokens; repeat for more).
    #[arg(long = "project", value_name = "SLUG")]
    projects: Vec<String>,
    /// Lifetime: 30d, 12h, 90m or 3600s; the token stops working after it.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    expires: Option<u64>,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

/// `30d`, `12h`, `90m`, `3600s` (or bare seconds) → seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: a number followed by d, h, m or s (e.g. 30d)"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{s:?}: the unit is d, h, m or s (e.g. 30d)")),
    };
    match n.checked_mul(unit_secs) {
        Some(0) => Err("a token's lifetime must be more than 0".into()),
        Some(secs) => Ok(secs),
        None => Err(format!("{s:?} is too long")),
    }
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let client = Client::new(g)?;
    match args.command {
        Command::Create(a) => {
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
        }
        Command::Ls => {
            let tokens: Vec<TokenInfo> = client.get("/v1/tokens").await?;
            if g.printer.json {
                g.printer.json_result(&tokens);
            } else {
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
            }
        }
        Command::Revoke { which: token } => {
            let id = if token.starts_with("tok_") {
                token.clone()
            } else {
                let tokens: Vec<TokenInfo> = client.get("/v1/tokens").await?;
                let named: Vec<&TokenInfo> = tokens.iter().filter(|t| t.name == token).collect();
                match named.as_slice() {
                    [one] => one.id.clone(),
                    [] => {
                        return Err(CliError::usage(format!("no token is named {token:?}"))
                            .with_hint("`cdeploy tokens ls` lists them"))
                    }
                    _ => {
                        return Err(CliError::usage(format!(
                            "{} tokens are named {token:?}: revoke one by its id",
                            named.len()
                        ))
                        .with_hint("`cdeploy tokens ls` shows their ids"))
                    }
                }
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
        }
    }
    Ok(ExitStatus::Success)
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

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// How many entries, newest first (at most 1000).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Only the entries of this token (its id or name). (`--token` is the token this
    /// command runs with, as for every command.)
    #[arg(long, value_name = "TOKEN")]
    by: Option<String>,
    /// Only actions containing this, any case (`tokens`, `POST /v1/projects`).
    #[arg(long)]
    action: Option<String>,
    /// Only entries of this project.
    #[arg(long)]
    project: Option<String>,
    /// Only entries since then: an RFC 3339 time, or an age such as 30m, 12h or 7d.
    #[arg(long)]
    since: Option<String>,
    /// Only this status (403) or class (4xx).
    #[arg(long)]
    status: Option<String>,
    /// The next page: entries before this cursor (the one the previous page ended with).
    #[arg(long)]
    before: Option<String>,
}

/// `--since`: an RFC 3339 time as given, or an age (`90s`, `30m`, `12h`, `7d`) before now.
fn since(value: &str) -> Result<String, CliError> {
    let v = value.trim();
    if chrono::DateTime::parse_from_rfc3339(v).is_ok() {
        return Ok(v.to_string());
    }
    let bad = || {
        CliError::usage(format!(
            "--since {value:?}: an RFC 3339 time (2026-12-01T00:00:00Z) or an age (30m, 12h, 7d)"
        ))
    };
    let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    // Ages past a century are a century: older than any entry.
    let secs = n.saturating_mul(unit_secs).min(100 * 365 * 86_400);
    let at = chrono::Utc::now() - chrono::Duration::seconds(secs);
    Ok(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

pub async fn audit(g: &Globals, args: AuditArgs) -> CliResult {
    if args.limit == 0 || args.limit > 1000 {
        return Err(CliError::usage("--limit: 1 to 1000"));
    }
    let mut query: Vec<(&str, String)> = vec![("limit", args.limit.to_string())];
    for (key, value) in [
        ("token", args.by.clone()),
        ("action", args.action.clone()),
        ("project", args.project.clone()),
        ("status", args.status.clone()),
        ("before", args.before.clone()),
    ] {
        if let Some(v) = value {
            query.push((key, v));
        }
    }
    if let Some(s) = &args.since {
        query.push(("since", since(s)?));
    }
    let encoded: String = query
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    let client = Client::new(g)?;
    let entries: Vec<AuditEntry> = client.get(&format!("/v1/audit?{encoded}")).await?;
    if g.printer.json {
        g.printer.json_result(&entries);
    } else {
        for e in &entries {
            let count = if e.count > 1 {
                format!(" ×{}", e.count)
            } else {
                String::new()
            };
            g.printer.result(format!(
                "{}  {:<20} {:<44} {:<30} {}{count}{}",
                e.at,
                e.token,
                e.action,
                e.target.as_deref().unwrap_or("-"),
                e.status,
                e.detail
                    .as_deref()
                    .map(|d| format!("  {d}"))
                    .unwrap_or_default()
            ));
        }
        if entries.len() == args.limit as usize {
            if let Some(last) = entries.last() {
                g.printer
                    .info(format!("More: cdeploy audit --before {} …", last.cursor));
            }
        }
    }
    Ok(ExitStatus::Success)
}
