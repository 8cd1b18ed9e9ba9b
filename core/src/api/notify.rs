//! Deploy events out: a project's notification endpoints, what is sent to them, and
//! each delivery attempt.

use serde::{Deserialize, Serialize};

use super::UnknownName;

/// A deployment event an endpoint may subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// A deployment was created (queued).
    Created,
    /// It is built and serving at its URL.
    Ready,
    /// Its build failed, was killed, or the server stopped during it.
    Failed,
    /// Someone canceled it.
    Canceled,
    /// It was made production by hand, newer than the production it replaced.
    Promoted,
    /// It was made production by hand, older than the production it replaced.
    RolledBack,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 6] = [
        NotifyEvent::Created,
        NotifyEvent::Ready,
        NotifyEvent::Failed,
        NotifyEvent::Canceled,
        NotifyEvent::Promoted,
        NotifyEvent::RolledBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Created => "created",
            NotifyEvent::Ready => "ready",
            NotifyEvent::Failed => "failed",
            NotifyEvent::Canceled => "canceled",
            NotifyEvent::Promoted => "promoted",
            NotifyEvent::RolledBack => "rolled_back",
        }
    }

    /// The event a deployment's new status makes, if any.
    pub fn of_status(status: crate::event::Status) -> Option<NotifyEvent> {
        use crate::event::Status;
        match status {
            Status::Ready => Some(NotifyEvent::Ready),
            Status::Failed => Some(NotifyEvent::Failed),
            Status::Canceled => Some(NotifyEvent::Canceled),
            Status::Queued | Status::Uploading | Status::Building => None,
        }
    }
}

impl std::fmt::Display for NotifyEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NotifyEvent {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        NotifyEvent::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "event",
                given: s.to_string(),
                expected: "created, ready, failed, canceled, promoted, rolled_back",
            })
    }
}

/// How an endpoint's bodies are shaped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NotifyFormat {
    /// A [`DeployEventBody`].
    #[default]
    Json,
    /// A Slack incoming webhook's `{"text": …}`.
    Slack,
    /// A Discord webhook's `{"content": …}`.
    Discord,
}

impl NotifyFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyFormat::Json => "json",
            NotifyFormat::Slack => "slack",
            NotifyFormat::Discord => "discord",
        }
    }
}

impl std::str::FromStr for NotifyFormat {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "json" => Ok(NotifyFormat::Json),
            "slack" => Ok(NotifyFormat::Slack),
            "discord" => Ok(NotifyFormat::Discord),
            _ => Err(UnknownName {
                what: "format",
                given: s.to_string(),
                expected: "json, slack, discord",
            }),
        }
    }
}

/// `POST /v1/projects/{slug}/notifications`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateNotification {
    /// Where events are POSTed (`http://` or `https://`).
    pub url: String,
    /// What is sent; none is every event.
    #[serde(default)]
    pub events: Vec<NotifyEvent>,
    #[serde(default)]
    pub format: NotifyFormat,
}

/// A notification endpoint as listed. Its `url` is shown without its query, and for
/// Slack and Discord without its path (the URL is their secret); `secret`, the key its
/// bodies are signed with, is in the answer that creates it only.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Notification {
    pub id: String,
    pub project: String,
    pub url: String,
    pub events: Vec<NotifyEvent>,
    pub format: NotifyFormat,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// One attempt at sending an event to an endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotificationDelivery {
    /// The message's id (`webhook-id`): the same on every attempt at one event.
    pub message: String,
    pub event: NotifyEvent,
    pub deployment: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub at: String,
    /// The endpoint's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why the attempt failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
    /// `delivered`, `retrying` (another attempt is scheduled) or `failed` (given up).
    pub outcome: String,
    /// When the next attempt is due, while `retrying`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

/// The body sent to a `json` endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeployEventBody {
    /// `deployment.<event>` (`deployment.ready`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// When the event happened (RFC 3339).
    pub timestamp: String,
    pub data: DeployEventData,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeployEventData {
    pub event: NotifyEvent,
    pub project: String,
    pub deployment: String,
    /// The deployment's own URL.
    pub url: String,
    /// The status the event left the deployment in.
    pub status: String,
    /// Why it failed, for `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `production` or `preview` (what it was built as).
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}
