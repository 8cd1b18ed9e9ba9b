//! A project's notification endpoints: adding one (checked, its signing secret made and
//! sealed), listing them without their secrets, removing one, its delivery attempts;
//! and the `promoted` / `rolled_back` events a change of production makes.

use cdeploy_core::api::{
    CreateNotification, Notification, NotificationDelivery, NotifyEvent, NotifyFormat,
};

use super::error::{Error, Result};
use super::keyring::{notify_secret_aad, Keyring};
use super::App;
use crate::db::{DeploymentRow, NotifyAttemptRow, NotifyHookRow};
use crate::notify::{render, sign};

/// How the sender opens an endpoint's signing secret: with the keyring.
pub fn secret_opener(keyring: Option<std::sync::Arc<Keyring>>) -> crate::notify::OpenSecret {
    std::sync::Arc::new(move |h: &NotifyHookRow| {
        let keys = keyring
            .as_ref()
            .ok_or("this server has no secrets key (CDEPLOY_SECRETS_KEY or --secrets-key-file)")?;
        let aad = notify_secret_aad(&h.slug, &h.id);
        keys.open_with(&aad, &h.key_id, &h.sealed_secret)
            .map_err(|e| e.to_string())
    })
}

/// Endpoints one project may have.
pub const MAX_ENDPOINTS: usize = 20;
/// The longest endpoint URL.
pub const MAX_URL: usize = 2048;
/// Attempts `notify deliveries` lists at most.
pub const MAX_LISTED: u32 = 200;

/// The endpoint as listed (its secret only when `secret` is given: at creation).
pub fn json(h: &NotifyHookRow, secret: Option<String>) -> Notification {
    let format: NotifyFormat = h.format.parse().unwrap_or_default();
    Notification {
        id: h.id.clone(),
        project: h.slug.clone(),
        url: render::shown_url(&h.url),
        events: h.events.iter().filter_map(|e| e.parse().ok()).collect(),
        format,
        created_at: h.created_at.clone(),
        secret,
    }
}

/// Adds an endpoint to a project; the answer holds its signing secret, shown once.
pub async fn add(app: &App, slug: &str, req: &CreateNotification) -> Result<Notification> {
    let project = app.project(slug).await?;
    if project.deleting {
        return Err(super::validate::being_deleted(slug));
    }
    check_url(&req.url, &app.config.notify.allow)?;
    let keys = app.keys()?;
    if app.store.list_notify_hooks(Some(slug)).await?.len() >= MAX_ENDPOINTS {
        return Err(Error::conflict(format!(
            "project {slug} has {MAX_ENDPOINTS} notification endpoints, the most it may; remove one first"
        )));
    }
    let mut events = match req.events.is_empty() {
        true => NotifyEvent::ALL.to_vec(),
        false => req.events.clone(),
    };
    events.sort();
    events.dedup();
    let id = format!("nh_{}", cdeploy_core::ids::random_id(12));
    let secret = sign::new_secret();
    let (key_id, sealed_secret) = keys.seal_with(&notify_secret_aad(slug, &id), &secret);
    let row = NotifyHookRow {
        id,
        slug: slug.to_string(),
        url: req.url.trim().to_string(),
        events: events.iter().map(|e| e.as_str().to_string()).collect(),
        format: req.format.as_str().to_string(),
        key_id,
        sealed_secret,
        created_at: cdeploy_core::now_rfc3339(),
    };
    app.store.insert_notify_hook(&row).await?;
    Ok(json(&row, Some(secret)))
}

/// Why an endpoint URL is refused: not http(s), no host, too long, credentials in it,
/// or an address written in it that is not public (and not allowed by the operator).
fn check_url(url: &str, allow: &cdeploy_proxy::upstream::ProxyAllow) -> Result<()> {
    let url = url.trim();
    if url.len() > MAX_URL {
        return Err(Error::bad_request(format!(
            "url: at most {MAX_URL} characters"
        )));
    }
    let parsed =
        url::Url::parse(url).map_err(|e| Error::bad_request(format!("url: not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::bad_request("url: http:// or https:// only"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::bad_request(
            "url: no user or password in it (endpoints check the signature instead)",
        ));
    }
    if parsed.host().is_none() {
        return Err(Error::bad_request("url: no host"));
    }
    if let Some(ip) = allow.refused_literal(&parsed) {
        return Err(Error::bad_request(format!(
            "url: {ip} is not a public address; the server's operator may allow its network (--notify-allow)"
        )));
    }
    Ok(())
}

pub async fn list(app: &App, slug: &str) -> Result<Vec<Notification>> {
    app.project(slug).await?;
    let hooks = app.store.list_notify_hooks(Some(slug)).await?;
    Ok(hooks.iter().map(|h| json(h, None)).collect())
}

pub async fn remove(app: &App, slug: &str, id: &str) -> Result<()> {
    app.project(slug).await?;
    if !app.store.delete_notify_hook(slug, id).await? {
        return Err(Error::not_found(format!(
            "notification endpoint {id:?} of project {slug:?}"
        )));
    }
    Ok(())
}

/// An endpoint's newest attempts first.
pub async fn deliveries(
    app: &App,
    slug: &str,
    id: &str,
    limit: u32,
) -> Result<Vec<NotificationDelivery>> {
    app.project(slug).await?;
    match app.store.get_notify_hook(id).await? {
        Some(h) if h.slug == slug => {}
        _ => {
            return Err(Error::not_found(format!(
                "notification endpoint {id:?} of project {slug:?}"
            )))
        }
    }
    let rows = app
        .store
        .notification_attempts(id, limit.clamp(1, MAX_LISTED))
        .await?;
    Ok(rows.iter().filter_map(delivery_json).collect())
}

fn delivery_json(a: &NotifyAttemptRow) -> Option<NotificationDelivery> {
    Some(NotificationDelivery {
        message: a.message.clone(),
        event: a.event.parse().ok()?,
        deployment: a.deployment.clone(),
        attempt: u32::try_from(a.attempt).unwrap_or(u32::MAX),
        at: a.at.clone(),
        status: a.status.and_then(|s| u16::try_from(s).ok()),
        error: a.error.clone(),
        duration_ms: u64::try_from(a.ms).unwrap_or(0),
        outcome: a.outcome.clone(),
        next_attempt_at: a.next_us.and_then(|us| {
            chrono::DateTime::from_timestamp_micros(us)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        }),
    })
}

/// The event production moving by hand from `from` to `to` makes: `promoted` when `to`
/// is newer, `rolled_back` when older, none when it does not move.
pub fn production_event(from: Option<&DeploymentRow>, to: &DeploymentRow) -> Option<NotifyEvent> {
    match from {
        Some(f) if f.id == to.id => None,
        Some(f) if (&to.created_at, &to.id) < (&f.created_at, &f.id) => {
            Some(NotifyEvent::RolledBack)
        }
        _ => Some(NotifyEvent::Promoted),
    }
}

/// The message key of such an event (it may happen again to the same deployment).
pub fn production_event_key(id: &str, event: NotifyEvent) -> String {
    format!("{id}.{event}.{}", chrono::Utc::now().timestamp_micros())
}
