//! Build log events: the frames of `GET /v1/deployments/{id}/events` and the entries of
//! the log bus. `seq` is per deployment, starts at 1 and has no gaps; the last event is
//! always a terminal [`EventBody::Status`].

use serde::{Deserialize, Serialize};

/// The phases of a deployment, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Clone,
    Install,
    Build,
    Upload,
    Activate,
}

impl Step {
    pub const ALL: [Step; 5] = [
        Step::Clone,
        Step::Install,
        Step::Build,
        Step::Upload,
        Step::Activate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Clone => "clone",
            Step::Install => "install",
            Step::Build => "build",
            Step::Upload => "upload",
            Step::Activate => "activate",
        }
    }
}

/// Where a log line came from. `system` lines are written by cdeploy itself
/// (the command being run, timings, warnings), not by the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    System,
}

/// Deployment states: `queued → building → uploading → ready | failed | canceled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Status {
    Queued,
    Building,
    Uploading,
    Ready,
    Failed,
    Canceled,
}

impl Status {
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Ready | Status::Failed | Status::Canceled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Building => "building",
            Status::Uploading => "uploading",
            Status::Ready => "ready",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "queued" => Status::Queued,
            "building" => Status::Building,
            "uploading" => Status::Uploading,
            "ready" => Status::Ready,
            "failed" => Status::Failed,
            "canceled" => Status::Canceled,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened, without its place in the sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EventBody {
    Log {
        step: Step,
        stream: Stream,
        line: String,
    },
    Progress {
        step: Step,
        done: u64,
        total: u64,
        bytes: u64,
        total_bytes: u64,
    },
    Status {
        status: Status,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl EventBody {
    /// The event with every secret value in its text masked.
    pub fn masked(self, masker: &crate::mask::Masker) -> EventBody {
        if masker.is_empty() {
            return self;
        }
        let mask = |text: String| match masker.mask(&text) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(masked) => masked,
        };
        match self {
            EventBody::Log { step, stream, line } => EventBody::Log {
                step,
                stream,
                line: mask(line),
            },
            EventBody::Status { status, url, error } => EventBody::Status {
                status,
                url,
                error: error.map(mask),
            },
            progress @ EventBody::Progress { .. } => progress,
        }
    }

    pub fn log(step: Step, stream: Stream, line: impl Into<String>) -> Self {
        EventBody::Log {
            step,
            stream,
            line: line.into(),
        }
    }

    pub fn system(step: Step, line: impl Into<String>) -> Self {
        EventBody::log(step, Stream::System, line)
    }

    pub fn status(status: Status) -> Self {
        EventBody::Status {
            status,
            url: None,
            error: None,
        }
    }

    /// The step a log or progress event belongs to (`None` for status events).
    pub fn step(&self) -> Option<Step> {
        match self {
            EventBody::Log { step, .. } | EventBody::Progress { step, .. } => Some(*step),
            EventBody::Status { .. } => None,
        }
    }

    pub fn failed(error: impl Into<String>) -> Self {
        EventBody::Status {
            status: Status::Failed,
            url: None,
            error: Some(error.into()),
        }
    }

    /// The terminal status this event carries, if any.
    pub fn terminal_status(&self) -> Option<Status> {
        match self {
            EventBody::Status { status, .. } if status.is_terminal() => Some(*status),
            _ => None,
        }
    }
}

/// One event as sent and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub ts: String,
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    pub fn new(seq: u64, body: EventBody) -> Self {
        Event {
            seq,
            ts: crate::now_rfc3339(),
            body,
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.body.terminal_status().is_some()
    }
}

/// Longest line kept in a log event; longer output lines are cut (and say so).
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Cuts a line to [`MAX_LINE_BYTES`] on a character boundary.
pub fn clip_line(mut line: String) -> String {
    if line.len() > MAX_LINE_BYTES {
        let mut end = MAX_LINE_BYTES;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push_str(" … [line truncated]");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_matches_contract() {
        let e = Event {
            seq: 17,
            ts: "2026-11-25T10:00:00.123Z".into(),
            body: EventBody::log(Step::Build, Stream::Stderr, "vite building"),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"seq":17,"ts":"2026-11-25T10:00:00.123Z","type":"log","step":"build","stream":"stderr","line":"vite building"}"#
        );
        let p: Event = serde_json::from_str(
            r#"{"seq":18,"ts":"x","type":"progress","step":"upload","done":12,"total":40,"bytes":123456,"total_bytes":999999}"#,
        )
        .unwrap();
        assert_eq!(
            p.body,
            EventBody::Progress {
                step: Step::Upload,
                done: 12,
                total: 40,
                bytes: 123456,
                total_bytes: 999999
            }
        );
        let s: Event = serde_json::from_str(r#"{"seq":19,"ts":"x","type":"status","status":"ready","url":"http://a.localhost:8000"}"#).unwrap();
        assert!(s.is_terminal());
        assert_eq!(
            serde_json::to_string(&EventBody::status(Status::Building)).unwrap(),
            r#"{"type":"status","status":"building"}"#
        );
    }

    #[test]
    fn clip() {
        let long = "é".repeat(MAX_LINE_BYTES);
        let c = clip_line(long);
        assert!(c.len() < MAX_LINE_BYTES + 30);
        assert!(c.ends_with("[line truncated]"));
    }
}
