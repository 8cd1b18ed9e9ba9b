//! Resolved settings other modules read: where the keyring comes from, the forges'
//! APIs, what GC keeps.

use std::path::PathBuf;
use std::time::Duration;

/// Where the keyring comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `--secrets-key-file`: the operator's file.
    File(PathBuf),
    /// `CDEPLOY_SECRETS_KEY`: the keys themselves.
    Env(String),
    /// One machine (SQLite): a key made on first start, beside the database.
    Generated(PathBuf),
    /// Several servers share a database, and none was given: no secrets.
    None,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "File({})", p.display()),
            KeySource::Env(_) => f.write_str("Env(<redacted>)"),
            KeySource::Generated(p) => write!(f, "Generated({})", p.display()),
            KeySource::None => f.write_str("None"),
        }
    }
}

/// A forge's API, and the token statuses are posted with.
#[derive(Clone, PartialEq, Eq)]
pub struct ForgeApi {
    /// e.g. `https://api.github.com`, `https://gitlab.com/api/v4`,
    /// `https://gitea.example.com/api/v1`.
    pub base: String,
    pub token: String,
}

impl std::fmt::Debug for ForgeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgeApi")
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The forges this server reports to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForgeSettings {
    pub github: Option<ForgeApi>,
    pub gitlab: Option<ForgeApi>,
    pub gitea: Option<ForgeApi>,
}

impl ForgeSettings {
    pub fn api(&self, forge: &str) -> Option<&ForgeApi> {
        match forge {
            "github" => self.github.as_ref(),
            "gitlab" => self.gitlab.as_ref(),
            "gitea" => self.gitea.as_ref(),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.github.is_none() && self.gitlab.is_none() && self.gitea.is_none()
    }
}

/// How long the audit log keeps an entry.
pub const AUDIT_KEEP: Duration = Duration::from_secs(365 * 86_400);

/// What to keep.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub keep_deployments: usize,
    pub keep_for: Duration,
    /// Unreferenced blobs younger than this (or touched within it) stay.
    pub grace: Duration,
    /// How long the audit log keeps an entry.
    pub audit_for: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_deployments: 20,
            keep_for: Duration::from_secs(30 * 24 * 3600),
            grace: Duration::from_secs(3600),
            audit_for: AUDIT_KEEP,
        }
    }
}

/// Where deploy events may go and how their sending is retried.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// After the first attempt fails, the wait before each next one; when they are
    /// spent the message is given up.
    pub retry: Vec<Duration>,
    /// Networks endpoints may be at besides public addresses.
    pub allow: cdeploy_proxy::upstream::ProxyAllow,
}

impl NotifySettings {
    /// From `--notify-retry` and `--notify-allow`.
    pub fn from_flags(s: &super::settings::ServeSettings) -> anyhow::Result<NotifySettings> {
        Ok(NotifySettings {
            retry: parse_waits(s.notify_retry.as_deref().unwrap_or(NOTIFY_RETRY))
                .map_err(|e| anyhow::anyhow!("--notify-retry: {e}"))?,
            allow: cdeploy_proxy::upstream::ProxyAllow::parse(
                s.notify_allow.as_deref().unwrap_or_default(),
            )
            .map_err(|e| anyhow::anyhow!("--notify-allow: {e}"))?,
        })
    }
}

/// `--api-url`, checked: an `http(s)://` URL, without its trailing `/`.
pub fn api_url(s: &super::settings::ServeSettings) -> anyhow::Result<Option<String>> {
    let Some(url) = s
        .api_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    else {
        return Ok(None);
    };
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(Some(url.trim_end_matches('/').to_string()))
        }
        _ => anyhow::bail!(
            "--api-url {url:?}: an http:// or https:// URL (https://cdeploy.example.com)"
        ),
    }
}

/// The default retry schedule, as Standard Webhooks' senders commonly have it: eight
/// attempts over about a day.
pub const NOTIFY_RETRY: &str = "5s,5m,30m,2h,5h,10h,10h";

/// `5s,5m,30m,2h` as waits: each a number and `ms`, `s`, `m` or `h`. (Written here: a
/// duration crate for one list of four units is not worth its dependency.)
pub fn parse_waits(text: &str) -> Result<Vec<Duration>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(|w| {
            let split = w.find(|c: char| !c.is_ascii_digit()).unwrap_or(w.len());
            let (n, unit) = w.split_at(split);
            let n: u64 = n
                .parse()
                .map_err(|_| format!("{w:?} is not a wait such as 5s, 5m or 2h"))?;
            let ms = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => return Err(format!("{w:?} is not a wait such as 5s, 5m or 2h")),
            };
            n.checked_mul(ms)
                .filter(|&ms| ms <= 7 * 24 * 3_600_000)
                .map(Duration::from_millis)
                .ok_or_else(|| format!("{w:?} is longer than a week"))
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|waits| match waits.len() {
            0..=20 => Ok(waits),
            _ => Err("at most 20 retries".into()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_as_written() {
        assert_eq!(
            parse_waits("200ms, 5s,5m,2h").unwrap(),
            [200, 5_000, 300_000, 7_200_000].map(Duration::from_millis)
        );
        assert!(parse_waits("").unwrap().is_empty());
        assert!(parse_waits("5").is_err());
        assert!(parse_waits("5d").is_err());
        assert!(parse_waits("-5s").is_err());
        assert!(parse_waits("200h").is_err());
        assert_eq!(parse_waits(NOTIFY_RETRY).unwrap().len(), 7);
    }
}
