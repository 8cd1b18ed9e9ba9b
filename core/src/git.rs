//! Validation of git URLs and refs that come from users.
//!
//! git interprets some URL forms as commands (`ext::`), local paths or options (`-u…`).
//! Only network transports are accepted; the builder additionally passes `--` before the
//! URL and restricts `protocol.allow`, so this is the first of two fences.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GitUrlError {
    #[error("the git URL is empty")]
    Empty,
    #[error("the git URL may not start with '-' (git would read it as an option)")]
    LeadingDash,
    #[error("the git URL contains whitespace or control characters")]
    BadChar,
    #[error("the git URL is too long")]
    TooLong,
    #[error("git transport helpers like '{0}::' are not allowed")]
    Transport(String),
    #[error("'{0}://' URLs are not allowed; use https://, http://, git:// or ssh://")]
    Scheme(String),
    #[error(
        "local paths are not allowed; give a URL the server can clone (https://, git://, ssh://)"
    )]
    LocalPath,
    #[error("the git URL has no host")]
    NoHost,
}

const ALLOWED_SCHEMES: &[&str] = &["https", "http", "git", "ssh"];

/// Checks that `url` names a remote repository over an allowed transport.
pub fn validate_git_url(url: &str) -> Result<(), GitUrlError> {
    if url.is_empty() {
        return Err(GitUrlError::Empty);
    }
    if url.len() > 2048 {
        return Err(GitUrlError::TooLong);
    }
    if url.starts_with('-') {
        return Err(GitUrlError::LeadingDash);
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(GitUrlError::BadChar);
    }
    if let Some((helper, _)) = url.split_once("::") {
        if !helper.contains('/') {
            return Err(GitUrlError::Transport(helper.to_string()));
        }
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if !ALLOWED_SCHEMES.contains(&scheme.as_str()) {
            return Err(GitUrlError::Scheme(scheme));
        }
        let parsed = url::Url::parse(url).map_err(|_| GitUrlError::NoHost)?;
        if parsed.host_str().is_none_or(str::is_empty) || rest.starts_with('/') {
            return Err(GitUrlError::NoHost);
        }
        return Ok(());
    }
    // scp-like syntax `user@host:path`; git treats it as ssh only when no '/' precedes ':'.
    if let Some((host, _path)) = url.split_once(':') {
        if !host.is_empty() && !host.contains('/') && !host.starts_with('-') {
            return Ok(());
        }
    }
    Err(GitUrlError::LocalPath)
}

/// Credentials written into a git URL (`https://user:token@host/…`).
#[derive(Clone, PartialEq, Eq)]
pub struct GitCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for GitCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GitCredentials(***)")
    }
}

/// Splits the credentials off an `http(s)://` URL, so the URL can be shown and given to
/// git while the secret reaches git out of band (a credential helper). Other URLs, and
/// URLs without credentials, come back unchanged.
pub fn split_credentials(url: &str) -> (String, Option<GitCredentials>) {
    let Ok(mut u) = url::Url::parse(url) else {
        return (url.to_string(), None);
    };
    if !matches!(u.scheme(), "http" | "https")
        || (u.username().is_empty() && u.password().is_none())
    {
        return (url.to_string(), None);
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let creds = GitCredentials {
        username: decode(u.username()),
        password: u.password().map(decode).unwrap_or_default(),
    };
    let _ = u.set_username("");
    let _ = u.set_password(None);
    (u.to_string(), Some(creds))
}

/// A git URL safe to show in logs, API answers and errors: credentials of an
/// `http(s)://` URL become `***`, a password in any other URL too.
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return url.to_string();
    };
    if matches!(u.scheme(), "http" | "https") && !u.username().is_empty() {
        let _ = u.set_username("***");
    }
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    u.to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "invalid git ref {0:?}: use a branch, tag or commit name (letters, digits, '/', '.', '_', '-')"
)]
pub struct GitRefError(pub String);

/// Checks a branch, tag or commit name (a subset of `git check-ref-format`).
pub fn validate_git_ref(r: &str) -> Result<(), GitRefError> {
    let bad = r.is_empty()
        || r.len() > 255
        || r.starts_with('-')
        || r.starts_with('/')
        || r.ends_with('/')
        || r.ends_with(".lock")
        || r.contains("..")
        || r.contains("//")
        || r.contains("@{")
        || !r
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+'));
    if bad {
        Err(GitRefError(r.to_string()))
    } else {
        Ok(())
    }
}

/// True when `r` is a full commit id, which needs a fetch by object id rather than `--branch`.
pub fn is_commit_id(r: &str) -> bool {
    (r.len() == 40 || r.len() == 64) && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A slug guessed from a repository URL: its last path segment without `.git`.
pub fn repo_name(url: &str) -> Option<&str> {
    let trimmed = url.trim_end_matches('/');
    let last = trimmed.rsplit(['/', ':']).next()?;
    let last = last.strip_suffix(".git").unwrap_or(last);
    (!last.is_empty()).then_some(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_split_and_redacted() {
        let (url, creds) = split_credentials("https://ci:tok%2Fen@git.example.com/a/b.git");
        assert_eq!(url, "https://git.example.com/a/b.git");
        let creds = creds.unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("ci", "tok/en")
        );
        assert_eq!(format!("{creds:?}"), "GitCredentials(***)");
        let (url, creds) = split_credentials("https://ghp_TOKEN@github.com/a/b");
        assert_eq!(url, "https://github.com/a/b");
        assert_eq!(creds.unwrap().username, "ghp_TOKEN");
        assert_eq!(
            split_credentials("git://example.com/a.git"),
            ("git://example.com/a.git".to_string(), None)
        );
        assert_eq!(
            redact_url("https://ci:secret@git.example.com/a.git"),
            "https://***:***@git.example.com/a.git"
        );
        assert_eq!(
            redact_url("https://ghp_TOKEN@github.com/a"),
            "https://***@github.com/a"
        );
        assert_eq!(redact_url("ssh://git@host/a.git"), "ssh://git@host/a.git");
        assert_eq!(redact_url("git@host:a.git"), "git@host:a.git");
    }

    #[test]
    fn accepts_network_urls() {
        for u in [
            "https://github.com/you/app.git",
            "http://127.0.0.1:8080/app.git",
            "git://127.0.0.1:9418/app",
            "ssh://git@github.com/you/app.git",
            "git@github.com:you/app.git",
        ] {
            assert_eq!(validate_git_url(u), Ok(()), "{u}");
        }
    }

    #[test]
    fn refuses_hostile_urls() {
        assert_eq!(validate_git_url("-uxterm"), Err(GitUrlError::LeadingDash));
        assert_eq!(
            validate_git_url("--upload-pack=touch /tmp/x"),
            Err(GitUrlError::LeadingDash)
        );
        assert!(matches!(
            validate_git_url("ext::sh -c touch% /tmp/pwned"),
            Err(GitUrlError::BadChar)
        ));
        assert!(matches!(
            validate_git_url("ext::sh"),
            Err(GitUrlError::Transport(_))
        ));
        assert!(matches!(
            validate_git_url("fd::17"),
            Err(GitUrlError::Transport(_))
        ));
        assert!(matches!(
            validate_git_url("file:///etc"),
            Err(GitUrlError::Scheme(_))
        ));
        assert!(matches!(
            validate_git_url("FILE:///etc"),
            Err(GitUrlError::Scheme(_))
        ));
        assert_eq!(
            validate_git_url("/srv/repo.git"),
            Err(GitUrlError::LocalPath)
        );
        assert_eq!(validate_git_url("./repo"), Err(GitUrlError::LocalPath));
        assert_eq!(validate_git_url("../x:y"), Err(GitUrlError::LocalPath));
        assert_eq!(validate_git_url("https:///x"), Err(GitUrlError::NoHost));
    }

    #[test]
    fn refs() {
        assert!(validate_git_ref("main").is_ok());
        assert!(validate_git_ref("v1.2.3").is_ok());
        assert!(validate_git_ref("feature/x").is_ok());
        assert!(validate_git_ref("--upload-pack=x").is_err());
        assert!(validate_git_ref("a..b").is_err());
        assert!(validate_git_ref("a b").is_err());
        assert!(is_commit_id(&"a".repeat(40)));
        assert_eq!(repo_name("https://x.com/you/My-App.git"), Some("My-App"));
        assert_eq!(repo_name("git@x.com:you/app"), Some("app"));
    }
}
