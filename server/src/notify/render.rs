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
        // Branch names and build errors are the tenant's: Slack's control characters are
        // escaped (no `<!channel>`), Discord is told to ping no one (no `@everyone`).
        NotifyFormat::Slack => serde_json::json!({ "text": slack_escaped(&line(&data)) }),
        NotifyFormat::Discord => serde_json::json!({
            "content": line(&data),
            "allowed_mentions": { "parse": [] },
        }),
    };
    serde_json::to_vec(&value).expect("serializes")
}

/// Text as Slack shows it literally: `&`, `<` and `>` escaped, as its docs say.
fn slack_escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One line a person reads in a chat (at most 1,900 characters: Discord takes 2,000).
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
        .chars()
        .take(1900)
        .collect()
}

/// `url` as lists and logs show it: its scheme, host and port. Its path and query are
/// not shown, whatever the format: many services' webhook URLs carry their secret there
/// (Slack's `/services/…`, Discord's `/api/webhooks/…`, Mattermost's `/hooks/…`).
pub fn shown_url(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return "(not a URL)".into();
    };
    let host = parsed.host_str().unwrap_or_default();
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    let rest = match (parsed.path().len() > 1, parsed.query().is_some()) {
        (false, false) => "",
        _ => "/…",
    };
    format!("{}://{host}{port}{rest}", parsed.scheme())
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
        assert_eq!(discord["allowed_mentions"]["parse"], serde_json::json!([]));
        // A tenant's branch name pings no one.
        let mut loud = data(NotifyEvent::Ready);
        loud.branch = Some("@everyone-<!channel>".into());
        let slack: serde_json::Value =
            serde_json::from_slice(&body(NotifyFormat::Slack, "t", loud)).unwrap();
        assert!(
            slack["text"]
                .as_str()
                .unwrap()
                .contains("[@everyone-&lt;!channel&gt;]"),
            "{slack}"
        );
    }

    #[test]
    fn secrets_in_urls_are_not_shown() {
        let slack = "https://hooks.slack.com/services/T000/B000/XXXXSECRET";
        assert_eq!(shown_url(slack), "https://hooks.slack.com/…");
        assert_eq!(
            shown_url("https://u:p@ci.example.com:8443/hook?token=abc"),
            "https://ci.example.com:8443/…"
        );
        assert_eq!(shown_url("http://127.0.0.1:9000/"), "http://127.0.0.1:9000");
        assert_eq!(
            shown_url("http://127.0.0.1:9000/?k=v"),
            "http://127.0.0.1:9000/…"
        );
    }
}
