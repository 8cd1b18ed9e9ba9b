//! A deployment's outcome as the user sees it: the "queued" line, then the URL on
//! stdout (or one JSON document with `--json`), and the exit status CI relies on.

use cdeploy_core::api;
use cdeploy_core::event::{Event, EventBody, Status};
use serde_json::{json, Value};

use crate::client::{Client, Waited};
use crate::exit::ExitStatus;
use crate::Globals;

/// Says the deployment is queued, and where it will be served.
pub(super) fn queued(g: &Globals, deployment: &api::Deployment) {
    match &deployment.branch_url {
        Some(branch_url) => g.printer.info(format!(
            "Preview {} queued · {} · {branch_url}",
            deployment.id, deployment.preview_url
        )),
        None if deployment.preview => g.printer.info(format!(
            "Preview {} queued · {}",
            deployment.id, deployment.preview_url
        )),
        None => g.printer.info(format!(
            "Deployment {} queued · {}",
            deployment.id, deployment.preview_url
        )),
    }
}

/// Reports the build that ended with `terminal`: 0 when it is ready, 1 when it failed
/// or was canceled.
pub(super) async fn finished(
    g: &Globals,
    client: &Client,
    deployment: api::Deployment,
    terminal: &Event,
) -> ExitStatus {
    let status = terminal.body.terminal_status().unwrap_or(Status::Failed);
    let mut final_state = client
        .deployment(&deployment.id)
        .await
        .unwrap_or(deployment);
    // The log's terminal event is the last word; with remote builders the stored status
    // can trail it for a moment.
    final_state.status = status;
    let event_error = match &terminal.body {
        EventBody::Status { error, .. } => error.clone(),
        _ => None,
    };
    let error = event_error.or_else(|| final_state.error.clone());
    report(g, &final_state, error.as_deref(), client.waited());
    match status {
        Status::Ready => ExitStatus::Success,
        _ => ExitStatus::BuildFailed,
    }
}

/// Prints the result: the URL on stdout, or the JSON document (with the time spent
/// waiting out `429`s, when there was any).
pub(super) fn report(g: &Globals, d: &api::Deployment, error: Option<&str>, waited: Waited) {
    if g.printer.json {
        g.printer.json_result(&document(d, error, waited));
    } else {
        print(g, d, error);
    }
}

/// The `--json` document of a deployment's outcome.
fn document(d: &api::Deployment, error: Option<&str>, waited: Waited) -> Value {
    let mut v = json!({
        "id": d.id,
        "slug": d.slug,
        "status": d.status,
        "url": d.url,
        "preview_url": d.preview_url,
        "preview": d.preview,
    });
    if let Some(b) = &d.branch_url {
        v["branch_url"] = json!(b);
    }
    if waited.retries > 0 {
        v["rate_limited"] = json!({
            "retries": waited.retries,
            "waited_s": (waited.total.as_secs_f64() * 10.0).round() / 10.0,
        });
    }
    if let Some(e) = error.filter(|_| d.status == Status::Failed || d.status == Status::Canceled) {
        v["error"] = json!({ "code": "build_failed", "message": e });
    }
    v
}

/// The outcome for a person: a check mark and the URL, or why it failed and where the
/// full log is.
fn print(g: &Globals, d: &api::Deployment, error: Option<&str>) {
    match d.status {
        Status::Ready if d.preview => {
            g.printer.info(format!(
                "{} preview of {} is live{}",
                console::style("✓").green().bold(),
                d.slug,
                d.branch_url
                    .as_deref()
                    .map(|b| format!(" (also at {b})"))
                    .unwrap_or_default()
            ));
            g.printer.result(&d.preview_url);
        }
        Status::Ready => {
            g.printer.info(format!(
                "{} {} is live",
                console::style("✓").green().bold(),
                d.slug
            ));
            g.printer.result(&d.url);
        }
        Status::Failed => {
            eprintln!(
                "{} {}",
                console::style("✗ deployment failed:").red().bold(),
                error.unwrap_or("unknown error")
            );
            eprintln!(
                "  {} cdeploy logs {} --deployment {}",
                console::style("full log:").cyan(),
                d.slug,
                d.id
            );
        }
        Status::Canceled => eprintln!("{}", console::style("deployment canceled").yellow()),
        _ => g.printer.result(&d.preview_url),
    }
}
