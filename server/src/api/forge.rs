//! The forges' webhook protocols over HTTP: which headers name the event and the
//! delivery, and how each forge authenticates a delivery (an HMAC-SHA256 signature of
//! the body; GitLab sends the secret itself).

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::service::git::Forge;

/// What a delivery's headers say, per forge.
pub trait ForgeHeaders {
    /// The event it reports (`push`, `Merge Request Hook`, …).
    fn event(self, headers: &HeaderMap) -> Option<String>;
    /// The forge's id of the delivery (at most 100 characters).
    fn delivery(self, headers: &HeaderMap) -> Option<String>;
    /// Checks a delivery against the project's secret; the reason when it fails.
    fn verify(self, headers: &HeaderMap, body: &[u8], secret: &str) -> Result<(), String>;
}

impl ForgeHeaders for Forge {
    fn event(self, headers: &HeaderMap) -> Option<String> {
        let names: &[&str] = match self {
            Forge::GitHub => &["x-github-event"],
            Forge::GitLab => &["x-gitlab-event"],
            Forge::Gitea => &["x-gitea-event", "x-forgejo-event", "x-gogs-event"],
        };
        header(headers, names)
    }

    fn delivery(self, headers: &HeaderMap) -> Option<String> {
        let names: &[&str] = match self {
            Forge::GitHub => &["x-github-delivery"],
            Forge::GitLab => &["x-gitlab-event-uuid", "x-gitlab-webhook-uuid"],
            Forge::Gitea => &["x-gitea-delivery", "x-forgejo-delivery", "x-gogs-delivery"],
        };
        header(headers, names).filter(|d| d.len() <= 100)
    }

    fn verify(self, headers: &HeaderMap, body: &[u8], secret: &str) -> Result<(), String> {
        match self {
            Forge::GitLab => {
                let Some(token) = header(headers, &["x-gitlab-token"]) else {
                    return Err("no X-Gitlab-Token header".into());
                };
                if bool::from(token.as_bytes().ct_eq(secret.as_bytes())) {
                    Ok(())
                } else {
                    Err("the X-Gitlab-Token does not match the project's webhook secret".into())
                }
            }
            Forge::GitHub | Forge::Gitea => {
                let names: &[&str] = if self == Forge::GitHub {
                    &["x-hub-signature-256"]
                } else {
                    &["x-gitea-signature", "x-forgejo-signature"]
                };
                let Some(given) = header(headers, names) else {
                    return Err(format!("no {} header", display_header(names[0])));
                };
                let hex_sig = if self == Forge::GitHub {
                    given.strip_prefix("sha256=").unwrap_or("")
                } else {
                    given.as_str()
                };
                let Ok(sig) = hex::decode(hex_sig.trim()) else {
                    return Err(format!(
                        "the {} header is not a hex HMAC-SHA256",
                        display_header(names[0])
                    ));
                };
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                    .expect("HMAC takes any key length");
                mac.update(body);
                mac.verify_slice(&sig).map_err(|_| {
                    format!(
                        "the {} signature does not match the project's webhook secret",
                        display_header(names[0])
                    )
                })
            }
        }
    }
}

fn display_header(lower: &str) -> String {
    match lower {
        "x-hub-signature-256" => "X-Hub-Signature-256".into(),
        "x-gitea-signature" => "X-Gitea-Signature".into(),
        other => other.to_string(),
    }
}

fn header(headers: &HeaderMap, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        headers
            .get(*n)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_per_forge() {
        let body = br#"{"zen":"hi"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let sig = hex::encode(mac.finalize().into_bytes());
        let mut h = HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            format!("sha256={sig}").parse().unwrap(),
        );
        assert!(Forge::GitHub.verify(&h, body, "s3cret").is_ok());
        assert!(Forge::GitHub.verify(&h, body, "other").is_err());
        assert!(Forge::GitHub.verify(&h, b"{}", "s3cret").is_err());
        let mut g = HeaderMap::new();
        g.insert("x-gitea-signature", sig.parse().unwrap());
        assert!(Forge::Gitea.verify(&g, body, "s3cret").is_ok());
        assert!(Forge::Gitea
            .verify(&HeaderMap::new(), body, "s3cret")
            .unwrap_err()
            .contains("no X-Gitea-Signature"));
        let mut l = HeaderMap::new();
        l.insert("x-gitlab-token", "s3cret".parse().unwrap());
        assert!(Forge::GitLab.verify(&l, body, "s3cret").is_ok());
        assert!(Forge::GitLab.verify(&l, body, "s3cre").is_err());
    }
}
