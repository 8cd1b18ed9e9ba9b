//! `GET /v1/deployments/{id}/events?after=<seq>`: the event stream over a WebSocket.
//! Replays history after `after`, then live events, then closes after the terminal one.
//! Every frame is sent once, in order, without gaps — a slow client that falls behind
//! the live feed is refilled from history. At each ping (20 s) the caller's token (and
//! dashboard session) must still be valid, or the stream ends with `1008`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use cdeploy_core::event::{Event, EventBody, Status};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::access::Principal;
use super::error::{ApiError, ApiQuery};
use crate::service::{sessions, App};

#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    after: u64,
}

pub async fn events(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
    Extension(me): Extension<Principal>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let d = cdeploy_core::ids::DeploymentId::parse(&id)
        .ok_or_else(|| ApiError::not_found(format!("deployment {id:?}")))?;
    app.store
        .get_deployment(d.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("deployment {id}")))?;
    Ok(ws.on_upgrade(move |socket| async move {
        if let Err(e) = stream(app, d.to_string(), q.after, me, socket).await {
            tracing::debug!(deployment = %d, error = %e, "event stream ended early");
        }
    }))
}

/// A stream outlives no credential: a revoked or expired token, or an ended dashboard
/// session, ends it (`1008`); so do three checks in a row the store could not answer
/// (`1011`: the client resumes, and is checked then). True when it ended.
async fn revoked(app: &App, me: &Principal, socket: &mut WebSocket, unknown: &mut u32) -> bool {
    let session = me.session.as_ref().map(|s| s.hash.as_str());
    let (code, reason) = match sessions::still_valid(app, &me.id, session).await {
        Some(true) => {
            *unknown = 0;
            return false;
        }
        Some(false) => (
            1008,
            "the token was revoked or expired, or the session ended",
        ),
        None if *unknown < 2 => {
            *unknown += 1;
            return false;
        }
        None => (
            1011,
            "cannot check this stream's credential; resume with after=",
        ),
    };
    let ended = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(ended))).await;
    true
}

async fn send(socket: &mut WebSocket, e: &Event) -> Result<(), axum::Error> {
    let text = serde_json::to_string(e).expect("events serialize");
    socket.send(Message::Text(text.into())).await
}

async fn stream(
    app: Arc<App>,
    id: String,
    after: u64,
    me: Principal,
    mut socket: WebSocket,
) -> Result<(), axum::Error> {
    let sub = app.lifecycle.bus.subscribe(&id, after).await;
    let mut last = after;
    let mut ended = false;
    for e in &sub.backlog {
        send(&mut socket, e).await?;
        last = e.seq;
        ended |= e.is_terminal();
    }
    if let (false, Some(mut live)) = (ended, sub.live) {
        let mut ping = tokio::time::interval(Duration::from_secs(20));
        ping.tick().await;
        let mut overdue = 0u32;
        let mut unchecked = 0u32;
        loop {
            tokio::select! {
                received = live.recv() => match received {
                    // The end of the log, at or before `after`: nothing more will come.
                    Ok(e) if e.seq <= last && e.is_terminal() => break,
                    Ok(e) if e.seq <= last => {}
                    Ok(e) if e.seq == last + 1 => {
                        send(&mut socket, &e).await?;
                        last = e.seq;
                        if e.is_terminal() { break; }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        // Fell behind the live feed: refill from history, in order.
                        if refill(&app, &id, &mut socket, &mut last).await? { break; }
                    }
                    Err(RecvError::Closed) => {
                        for e in &app.lifecycle.bus.history(&id, last).await {
                            send(&mut socket, e).await?;
                        }
                        break;
                    }
                },
                incoming = socket.recv() => match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Ok(_)) => {}
                },
                _ = ping.tick() => {
                    if revoked(&app, &me, &mut socket, &mut unchecked).await { return Ok(()); }
                    socket.send(Message::Ping(Default::default())).await?;
                    // The deployment ended but its final event has not arrived (the bus
                    // failed to take it): refill from history, and after one more quiet
                    // interval end the stream with the stored status rather than wait
                    // forever.
                    if let Some(end) = stored_end(&app, &id).await {
                        if refill(&app, &id, &mut socket, &mut last).await? { break; }
                        overdue += 1;
                        if overdue >= 2 {
                            tracing::warn!(deployment = %id, "the log has no final event; ending the stream with the stored status");
                            send(&mut socket, &Event::new(last + 1, end)).await?;
                            break;
                        }
                    }
                }
                () = app.shutdown.cancelled() => {
                    let going_away = CloseFrame { code: 1001, reason: "server shutting down; resume with after=".into() };
                    let _ = socket.send(Message::Close(Some(going_away))).await;
                    return Ok(());
                }
            }
        }
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "end of log".into(),
        })))
        .await;
    Ok(())
}

/// Sends what history holds after `last`, in order. True when that reached the end.
async fn refill(
    app: &App,
    id: &str,
    socket: &mut WebSocket,
    last: &mut u64,
) -> Result<bool, axum::Error> {
    let mut done = false;
    for e in &app.lifecycle.bus.history(id, *last).await {
        send(socket, e).await?;
        *last = e.seq;
        done |= e.is_terminal();
    }
    Ok(done)
}

/// The final status event a finished deployment's log should end with (`None` while
/// it runs).
async fn stored_end(app: &App, id: &str) -> Option<EventBody> {
    let d = app.store.get_deployment(id).await.ok()??;
    if !d.status.is_terminal() {
        return None;
    }
    Some(EventBody::Status {
        status: d.status,
        url: (d.status == Status::Ready)
            .then(|| cdeploy_core::api::site_url(&app.config.domain, &d.slug, None)),
        error: d.error,
    })
}
