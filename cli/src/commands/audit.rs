//! `cdeploy audit`: what tokens did, newest first, filtered on the server and paged
//! with `--before`.

use cdeploy_core::api::AuditEntry;

use crate::client::Client;
use crate::exit::{CliError, CliResult, ExitStatus};
use crate::Globals;

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

pub async fn run(g: &Globals, args: AuditArgs) -> CliResult {
    if args.limit == 0 || args.limit > 1000 {
        return Err(CliError::usage("--limit: 1 to 1000"));
    }
    let query = query(&args)?;
    let client = Client::new(g)?;
    let entries: Vec<AuditEntry> = client.get(&format!("/v1/audit?{query}")).await?;
    if g.printer.json {
        g.printer.json_result(&entries);
    } else {
        print(g, &entries, args.limit);
    }
    Ok(ExitStatus::Success)
}

/// The query string of `GET /v1/audit`: the limit and each filter given, encoded.
fn query(args: &AuditArgs) -> Result<String, CliError> {
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
    Ok(query
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&"))
}

/// One line per entry; a full page ends with the command for the next one.
fn print(g: &Globals, entries: &[AuditEntry], limit: u32) {
    for e in entries {
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
    if entries.len() == limit as usize {
        if let Some(last) = entries.last() {
            g.printer
                .info(format!("More: cdeploy audit --before {} …", last.cursor));
        }
    }
}
