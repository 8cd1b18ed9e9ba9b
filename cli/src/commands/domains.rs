//! `cdeploy domains add|ls|inspect|rm`: a project's own domains, the DNS records they
//! need, and — when a certificate does not come — every attempt and the fix.

use cdeploy_core::api::{AddDomain, Domain, DomainAttempt, DomainReport};
use reqwest::Method;

use crate::client::Client;
use crate::commands::ProjectArg;
use crate::exit::{CliResult, ExitStatus};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Serve a project at a domain (HTTPS by ACME when the server has --tls-listen);
    /// prints the DNS record to create.
    Add {
        domain: String,
        #[command(flatten)]
        project: ProjectArg,
        /// Serve this branch's newest preview instead of production.
        #[arg(long)]
        branch: Option<String>,
        /// Redirect every request to this other domain instead (apex ↔ www).
        #[arg(long, value_name = "DOMAIN")]
        redirect_to: Option<String>,
        /// Keep serving plain HTTP once the certificate exists (default: redirect to HTTPS).
        #[arg(long)]
        no_https_redirect: bool,
        /// Send Strict-Transport-Security with this max-age (seconds) over HTTPS.
        #[arg(long, value_name = "SECONDS")]
        hsts: Option<u64>,
        /// Take the domain from the project that has it (admin).
        #[arg(long = "move")]
        move_from_other: bool,
    },
    /// A project's domains and their certificates.
    Ls {
        #[command(flatten)]
        project: ProjectArg,
    },
    /// A domain's state and every attempt at its certificate: what DNS answered, the
    /// self-check, the CA's words, the next retry and the fix.
    Inspect { domain: String },
    /// Stop serving a domain (its certificate is deleted).
    Rm { domain: String },
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    let client = Client::new(g)?;
    match args.command {
        Command::Add {
            domain,
            project,
            branch,
            redirect_to,
            no_https_redirect,
            hsts,
            move_from_other,
        } => {
            let slug = project.resolve()?;
            let body = AddDomain {
                name: domain,
                branch,
                redirect_to,
                https_redirect: Some(!no_https_redirect),
                hsts_max_age: hsts,
                move_from_other,
            };
            let d: Domain = client
                .send(
                    client
                        .request(Method::POST, &format!("/v1/projects/{slug}/domains"))
                        .json(&body),
                )
                .await?;
            if g.printer.json {
                g.printer.json_result(&d);
            } else {
                g.printer
                    .info(format!("{} → {} ({})", d.name, d.slug, d.url));
                g.printer
                    .info("Create this DNS record at your DNS provider:".to_string());
                g.printer.result(records(&d));
                g.printer.info(format!(
                    "Then `cdeploy domains inspect {}` follows the certificate.",
                    d.name
                ));
            }
        }
        Command::Ls { project } => {
            let slug = project.resolve()?;
            let list: Vec<Domain> = client.get(&format!("/v1/projects/{slug}/domains")).await?;
            if g.printer.json {
                g.printer.json_result(&list);
            } else if list.is_empty() {
                g.printer.info(format!("{slug} has no domains"));
            } else {
                let lines: Vec<String> = list.iter().map(summary).collect();
                g.printer.result(lines.join("\n"));
            }
        }
        Command::Inspect { domain } => {
            let r: DomainReport = client.get(&format!("/v1/domains/{domain}")).await?;
            if g.printer.json {
                g.printer.json_result(&r);
            } else {
                g.printer.result(report(&r));
            }
        }
        Command::Rm { domain } => {
            let _: serde_json::Value = client
                .send(client.request(Method::DELETE, &format!("/v1/domains/{domain}")))
                .await?;
            g.printer.info(format!("{domain} is no longer served"));
        }
    }
    Ok(ExitStatus::Success)
}

fn records(d: &Domain) -> String {
    d.dns
        .iter()
        .map(|r| format!("  {:<6} {:<30} {}", r.kind, r.name, r.value))
        .collect::<Vec<_>>()
        .join("\n")
}

fn summary(d: &Domain) -> String {
    let serves = match (&d.redirect_to, &d.branch) {
        (Some(to), _) => format!("redirects to {to}"),
        (None, Some(b)) => format!("branch {b}"),
        (None, None) => "production".into(),
    };
    let cert = match &d.certificate {
        Some(c) => format!("certificate until {}", c.not_after),
        None => "no certificate yet".into(),
    };
    format!("{:<32} {:<8} {serves}, {cert}", d.name, d.state)
}

fn report(r: &DomainReport) -> String {
    let d = &r.domain;
    let mut lines = vec![
        format!("domain      {}", d.name),
        format!("project     {}", d.slug),
        format!("state       {}", d.state),
        format!("url         {}", d.url),
    ];
    if let Some(c) = &d.certificate {
        lines.push(format!(
            "certificate {} → {} (renewed from {})",
            c.not_before, c.not_after, c.renew_at
        ));
    }
    lines.push("dns records".into());
    lines.push(records(d));
    if let Some(next) = &r.next_attempt {
        lines.push(format!("next try    {next}"));
    }
    if let Some(fix) = r.attempts.first().and_then(|a| a.fix.as_deref()) {
        lines.push(format!("fix         {fix}"));
    }
    for a in &r.attempts {
        lines.extend(attempt(a));
    }
    if r.attempts.is_empty() {
        lines.push("no attempt yet".into());
    }
    lines.join("\n")
}

fn attempt(a: &DomainAttempt) -> Vec<String> {
    let mut lines = vec![format!(
        "- {} {} at {}",
        a.at,
        if a.ok { "issued" } else { "failed" },
        a.stage
    )];
    let dns = &a.dns;
    let mut said = Vec::new();
    if !dns.cname.is_empty() {
        said.push(format!("CNAME {}", dns.cname.join(" → ")));
    }
    if !dns.addresses.is_empty() {
        said.push(dns.addresses.join(", "));
    }
    if let Some(e) = &dns.error {
        said.push(e.clone());
    }
    if !said.is_empty() {
        lines.push(format!("    dns ({})  {}", dns.server, said.join("; ")));
    }
    if !dns.caa.is_empty() {
        lines.push(format!("    caa        {}", dns.caa.join("; ")));
    }
    for (label, v) in [
        ("self-check", &a.self_check),
        ("ca said   ", &a.ca_error),
        ("fix       ", &a.fix),
        ("next retry", &a.next_retry),
    ] {
        if let Some(v) = v {
            lines.push(format!("    {label} {v}"));
        }
    }
    lines
}
