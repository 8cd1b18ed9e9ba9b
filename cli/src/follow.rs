//! Following a deployment's events over the WebSocket. A dropped connection is resumed
//! with `after=<last seq>`, so the caller sees every event exactly once, in order.

use std::time::{Duration, Instant};

use cdeploy_core::event::{Event, EventBody};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::Client;
use crate::exit::CliError;

/// The WebSocket a deployment's events arrive on.
type EventSocket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Calls `on_event` for each event after `after` until the terminal one, which is returned.
/// Gives up at `deadline` (exit status 3) or after repeated failures to connect.
pub async fn follow(
    client: &Client,
    id: &str,
    mut after: u64,
    deadline: Option<Instant>,
    mut on_event: impl FnMut(&Event),
) -> Result<Event, CliError> {
    let base = if let Some(rest) = client.api.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = client.api.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        return Err(CliError::usage(format!(
            "--api {}: expected an http:// or https:// URL",
            client.api
        )));
    };
    let mut failures = 0u32;
    loop {
        let remaining = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(r) if !r.is_zero() => Some(r),
                _ => return Err(timeout_error(id)),
            },
            None => None,
        };
        let after_at_start = after;
        let attempt = stream_once(client, &base, id, &mut after, &mut on_event);
        let result = match remaining {
            Some(r) => match tokio::time::timeout(r, attempt).await {
                Ok(res) => res,
                Err(_) => return Err(timeout_error(id)),
            },
            None => attempt.await,
        };
        let before = after_at_start;
        match result {
            Ok(Some(terminal)) => return Ok(terminal),
            // The connection ended early (a restart, a proxy timeout): resume.
            Ok(None) if after > before => failures = 0,
            Ok(None) => {
                // Ended without anything new: ask the API whether it is over.
                failures += 1;
                if failures >= 3 {
                    let d = client.deployment(id).await?;
                    if d.status.is_terminal() {
                        let body = EventBody::Status {
                            status: d.status,
                            url: Some(d.url),
                            error: d.error,
                        };
                        return Ok(Event::new(after + 1, body));
                    }
                }
                if failures >= 8 {
                    return Err(CliError::api(
                        "stream_ended",
                        format!("the event stream of deployment {id} keeps ending without a final status"),
                    )
                    .with_hint(format!("check it with `cdeploy inspect {id}`")));
                }
            }
            // A limit that outlasts --max-wait: waiting more here would not help.
            Err(e) if e.code == "rate_limited" => return Err(e),
            Err(e) => {
                failures += 1;
                if failures >= 8 {
                    return Err(e);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250 * u64::from(failures.clamp(1, 8)))).await;
    }
}

fn timeout_error(id: &str) -> CliError {
    CliError::api("timeout", format!("timed out waiting for deployment {id}")).with_hint(format!(
        "it keeps running on the server; follow it with `cdeploy inspect {id} --wait`"
    ))
}

/// One connection: the events after `after` until the terminal one (`Some`), or until
/// the connection ends (`None`: the caller resumes).
async fn stream_once(
    client: &Client,
    base: &str,
    id: &str,
    after: &mut u64,
    on_event: &mut impl FnMut(&Event),
) -> Result<Option<Event>, CliError> {
    let url = format!("{base}/v1/deployments/{id}/events?after={after}");
    let mut ws = connect(client, &url, id).await?;
    while let Some(msg) = ws.next().await {
        let msg = match msg {
            Ok(m) => m,
            Err(_) => return Ok(None),
        };
        let Message::Text(text) = msg else { continue };
        let Ok(event) = serde_json::from_str::<Event>(text.as_str()) else {
            continue;
        };
        if event.seq <= *after {
            continue;
        }
        *after = event.seq;
        on_event(&event);
        if event.is_terminal() {
            return Ok(Some(event));
        }
    }
    Ok(None)
}

/// Opens the event WebSocket at `url` with the token, waiting out `429`s within
/// `--max-wait`.
async fn connect(client: &Client, url: &str, id: &str) -> Result<EventSocket, CliError> {
    let request = || {
        let mut req = url
            .into_client_request()
            .map_err(|e| CliError::usage(format!("bad URL {url}: {e}")))?;
        if let Some(t) = client.token().as_deref() {
            let v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| CliError::usage("the token has invalid characters"))?;
            req.headers_mut().insert("authorization", v);
        }
        Ok::<_, CliError>(req)
    };
    loop {
        let e = match tokio_tungstenite::connect_async(request()?).await {
            Ok((ws, _)) => return Ok(ws),
            Err(e) => e,
        };
        return Err(match e {
            Error::Http(resp) if resp.status() == 429 => {
                let wait = crate::client::retry_after(resp.headers());
                let reason = resp
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<cdeploy_core::api::ErrorBody>(b).ok())
                    .map(|b| b.error.message)
                    .unwrap_or_else(|| "the server is busy".to_string());
                if client.wait_out(wait, &reason).await {
                    continue;
                }
                CliError::api("rate_limited", reason)
                    .with_hint(client.outlasted(wait.unwrap_or(Duration::from_secs(1))))
            }
            other => connect_error(client, id, other),
        });
    }
}

/// A refused or failed connection, as the CLI's error.
fn connect_error(client: &Client, id: &str, e: Error) -> CliError {
    match e {
        Error::Http(resp) if resp.status() == 401 => {
            CliError::api("unauthorized", "the server refused the token")
                .with_hint("run `cdeploy login` again")
        }
        Error::Http(resp) if resp.status() == 404 => {
            CliError::api("not_found", format!("deployment {id} not found"))
        }
        Error::Io(_) => CliError::api(
            "unreachable",
            format!("cannot reach the cdeploy server at {}", client.api),
        )
        .with_hint("start it with `cdeploy-server` (or pass --api / set CDEPLOY_API)"),
        other => CliError::api("websocket", format!("cannot follow the log: {other}")),
    }
}
