//! Following the build after the deployment is queued: its log drawn by the
//! [`Renderer`] until the terminal event, `--timeout`, or Ctrl-C (which stops only the
//! CLI: the build goes on on the server).

use std::time::{Duration, Instant};

use cdeploy_core::api;

use super::report;
use crate::client::Client;
use crate::exit::{CliResult, ExitStatus};
use crate::printer::Renderer;
use crate::Globals;

/// Follows `deployment` to its end and reports it; exit 130 on Ctrl-C.
pub(super) async fn follow(
    g: &Globals,
    client: &Client,
    renderer: &mut Renderer,
    deployment: api::Deployment,
    timeout: Option<u64>,
) -> CliResult {
    let deadline = timeout.map(|s| Instant::now() + Duration::from_secs(s));
    let following =
        crate::follow::follow(client, &deployment.id, 0, deadline, |e| renderer.event(e));
    let followed = tokio::select! {
        r = following => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    match followed {
        Some(Ok(terminal)) => Ok(report::finished(g, client, deployment, &terminal).await),
        Some(Err(e)) => {
            renderer.finish(false);
            Err(e)
        }
        None => {
            renderer.finish(false);
            interrupted(g, &deployment);
            Ok(ExitStatus::Interrupted)
        }
    }
}

/// Says that only the CLI stopped, and how to follow or stop the build.
fn interrupted(g: &Globals, deployment: &api::Deployment) {
    let (id, slug) = (&deployment.id, &deployment.slug);
    let msg = format!(
        "Stopped following {id}; the build keeps running on the server. `cdeploy logs {slug}` follows it again, `cdeploy cancel {id}` stops it."
    );
    if g.printer.json {
        g.printer.json_result(&serde_json::json!({
            "error": { "code": "interrupted", "message": msg },
            "id": id,
        }));
    } else {
        eprintln!("\n{msg}");
    }
}
