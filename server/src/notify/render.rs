//! What an endpoint is sent for an event, in its format, and how its URL is shown.

use cdeploy_core::api::{DeployEventBody, DeployEventData, NotifyEvent, NotifyFormat};

/// The body of one event for an endpoint of `format`.
pub fn body(format: NotifyFormat, timestamp: &str, data: DeployEventData) -> Vec<u8> {
    let value = match format {
        NotifyFormat::Json => serde_json::to_value(DeployEventBody {
            kind: format!("deployment.{}", data.event),
            timestamp: timestamp.to_string(),
            data,
        })
        .expect("serializes"),
        NotifyFormat::Slack => serde_json::json!({ "text": line(&data) }),
        NotifyFormat::Discord => serde_json::json!({ "content": line(&data) }),
    };
    serde_json::to_vec(&value).expect("serializes")
}

/// One line a person reads in a chat.
fn line(d: &DeployEventData) -> String {
    let what = match d.event {
        NotifyEvent::Created => format!("deployment {} created ({})", d.deployment, d.target),
        NotifyEvent::Ready => format!("deployment {} is ready at {}", d.deployment, d.url),
        NotifyEvent::Failed => format!(
            "deployment {} failed: {}",
            d.deployment,
            d.error.as_deref().unwrap_or("the build failed")
        ),
        NotifyEvent::Canceled => format!("deployment {} was canceled", d.deployment),
        NotifyEvent::Promoted => format!("deployment {} is production now", d.deployment),
        NotifyEvent::RolledBack => {
            format!("production rolled back to deployment {}", d.deployment)
        }
    };
    let branch = d
        .branch
        .as_deref()
        .map(|b| format!(" [{b}]"))
        .unwrap_or_default();
    format!("{}{branch}: {what}", d.project)
}

/// `url` as lists and logs show it: no user, query or fragment, and for Slack and
/// Discord no path either (their URL is the secret).
pub fn shown_url(url: &str, format: NotifyFormat) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return "(not a URL)".into();
    };
    let host = parsed.host_str().unwrap_or_default();
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = match format {
        NotifyFormat::Json if parsed.path().len() > 1 => parsed.path().to_string(),
        NotifyFormat::Json => String::new(),
        NotifyFormat::Slack | NotifyFormat::Discord => "/…".into(),
    };
    let query = if parsed.query().is_some() { "?…" } else { "" };
    format!("{}://{host}{port}{path}{query}", parsed.scheme())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(event: NotifyEvent) -> DeployEventData {
        DeployEventData {
            event,
            project: "shop".into(),
            deployment: "d1".into(),
            url: "http://d1--shop.example.com".into(),
            status: "failed".into(),
            error: Some("npm run build exited with code 1".into()),
            target: "preview".into(),
            branch: Some("feature".into()),
            commit: None,
        }
    }

    #[test]
    fn each_format_has_its_shape() {
        let json: serde_json::Value =
            serde_json::from_slice(&body(NotifyFormat::Json, "t", data(NotifyEvent::Failed)))
                .unwrap();
        assert_eq!(json["type"], "deployment.failed");
        assert_eq!(json["data"]["error"], "npm run build exited with code 1");
        let slack: serde_json::Value =
            serde_json::from_slice(&body(NotifyFormat::Slack, "t", data(NotifyEvent::Failed)))
                .unwrap();
        assert_eq!(
            slack["text"],
            "shop [feature]: deployment d1 failed: npm run build exited with code 1"
        );
        let discord: serde_json::Value =
            serde_json::from_slice(&body(NotifyFormat::Discord, "t", data(NotifyEvent::Ready)))
                .unwrap();
        assert_eq!(
            discord["content"],
            "shop [feature]: deployment d1 is ready at http://d1--shop.example.com"
        );
    }

    #[test]
    fn secrets_in_urls_are_not_shown() {
        let slack = "https://hooks.slack.com/services/T000/B000/XXXXSECRET";
        assert_eq!(
            shown_url(slack, NotifyFormat::Slack),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            shown_url(
                "https://u:p@ci.example.com:8443/hook?token=abc",
                NotifyFormat::Json
            ),
            "https://ci.example.com:8443/hook?…"
        );
        assert_eq!(
            shown_url("http://127.0.0.1:9000", NotifyFormat::Json),
            "http://127.0.0.1:9000"
        );
    }
}
