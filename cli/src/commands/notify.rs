//! `cdeploy notify add|ls|rm|deliveries`: deploy events sent to a project's endpoints
//! (a URL of yours, or a Slack or Discord webhook), signed as Standard Webhooks says.

use cdeploy_core::api::{
    CreateNotification, Notification, NotificationDelivery, NotifyEvent, NotifyFormat,
};
use reqwest::Method;

use crate::client::Client;
use crate::commands::ProjectArg;
use crate::exit::{CliError, CliResult, ExitStatus};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Send a project's deploy events to a URL (admin); prints the signing secret once.
    Add {
        /// Where events are POSTed (http:// or https://); `-` asks for it (hidden) or
        /// reads it from stdin, keeping a Slack or Discord URL — its secret — out of the
        /// shell's history and the process list.
        #[arg(long)]
        url: String,
        /// Which events, comma-separated: created, ready, failed, canceled, promoted,
        /// rolled_back [default: all].
        #[arg(long, value_delimiter = ',')]
        events: Vec<NotifyEvent>,
        /// The body: json (signed event), slack or discord (a chat line).
        #[arg(long, default_value = "json")]
        format: NotifyFormat,
        #[command(flatten)]
        project: ProjectArg,
    },
    /// A project's endpoints (Slack and Discord URLs without their secret path).
    Ls {
        #[command(flatten)]
        project: ProjectArg,
    },
    /// Stop sending to an endpoint (events waiting for it are dropped) (admin).
    Rm {
        /// The endpoint's id (nh_...).
        id: String,
        #[command(flatten)]
        project: ProjectArg,
    },
    /// Each attempt at sending an endpoint its events: the answer, or why none came.
    Deliveries {
        /// The endpoint's id (nh_...).
        id: String,
        #[command(flatten)]
        project: ProjectArg,
        /// How many, newest first (1-200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let client = Client::new(g)?;
    match args.command {
        Command::Add {
            url,
            events,
            format,
            project,
        } => {
            let url = match url.as_str() {
                "-" => crate::commands::read_secret("Endpoint URL", false, "the URL")?,
                _ => url,
            };
            let body = CreateNotification {
                url,
                events,
                format,
            };
            add(g, &client, &project.resolve()?, &body).await?;
        }
        Command::Ls { project } => ls(g, &client, &project.resolve()?).await?,
        Command::Rm { id, project } => {
            let slug = project.resolve()?;
            let _: serde_json::Value = client
                .send(client.request(
                    Method::DELETE,
                    &format!("/v1/projects/{slug}/notifications/{id}"),
                ))
                .await?;
            g.printer.info(format!("{id} removed"));
        }
        Command::Deliveries { id, project, limit } => {
            deliveries(g, &client, &project.resolve()?, &id, limit).await?
        }
    }
    Ok(ExitStatus::Success)
}

async fn add(
    g: &Globals,
    client: &Client,
    slug: &str,
    body: &CreateNotification,
) -> Result<(), CliError> {
    let n: Notification = client
        .send(
            client
                .request(Method::POST, &format!("/v1/projects/{slug}/notifications"))
                .json(body),
        )
        .await?;
    if g.printer.json {
        g.printer.json_result(&n);
    } else {
        g.printer.info(format!(
            "{} sends {} to {}",
            n.id,
            events_list(&n.events),
            n.url
        ));
        g.printer.info(
            "Its signing secret (shown once; receivers check `webhook-signature` with it):"
                .to_string(),
        );
        g.printer.result(n.secret.unwrap_or_default());
    }
    Ok(())
}

async fn ls(g: &Globals, client: &Client, slug: &str) -> Result<(), CliError> {
    let list: Vec<Notification> = client
        .get(&format!("/v1/projects/{slug}/notifications"))
        .await?;
    if g.printer.json {
        g.printer.json_result(&list);
    } else if list.is_empty() {
        g.printer.info(format!("{slug} sends no notifications"));
    } else {
        let lines: Vec<String> = list
            .iter()
            .map(|n| {
                format!(
                    "{}  {:<7}  {}  {}",
                    n.id,
                    n.format.as_str(),
                    n.url,
                    events_list(&n.events)
                )
            })
            .collect();
        g.printer.result(lines.join("\n"));
    }
    Ok(())
}

async fn deliveries(
    g: &Globals,
    client: &Client,
    slug: &str,
    id: &str,
    limit: u32,
) -> Result<(), CliError> {
    let list: Vec<NotificationDelivery> = client
        .get(&format!(
            "/v1/projects/{slug}/notifications/{id}/deliveries?limit={limit}"
        ))
        .await?;
    if g.printer.json {
        g.printer.json_result(&list);
    } else if list.is_empty() {
        g.printer.info(format!("{id} has no deliveries yet"));
    } else {
        let lines: Vec<String> = list.iter().map(delivery_line).collect();
        g.printer.result(lines.join("\n"));
    }
    Ok(())
}

fn events_list(events: &[NotifyEvent]) -> String {
    events
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn delivery_line(d: &NotificationDelivery) -> String {
    let answer = match (d.status, &d.error) {
        (Some(s), _) if (200..300).contains(&s) => format!("{s}"),
        (_, Some(e)) => e.clone(),
        (Some(s), None) => format!("{s}"),
        (None, None) => "no answer".into(),
    };
    let next = d
        .next_attempt_at
        .as_deref()
        .map(|t| format!(" (next attempt {t})"))
        .unwrap_or_default();
    format!(
        "{}  {:<11}  {}  attempt {}  {:<9}  {} ms  {answer}{next}",
        d.at,
        d.event.as_str(),
        d.deployment,
        d.attempt,
        d.outcome,
        d.duration_ms
    )
}
