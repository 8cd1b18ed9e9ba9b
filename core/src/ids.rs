//! Naming rules: project slugs, deployment ids and API tokens.

use std::fmt;

/// Longest slug: a preview host `<slug>--<id>` must still fit one DNS label (63 bytes),
/// so 63 - 2 - [`DEPLOYMENT_ID_LEN`].
pub const SLUG_MAX_LEN: usize = 63 - 2 - DEPLOYMENT_ID_LEN;

/// Names that would shadow platform hosts or confuse users.
pub const RESERVED_SLUGS: &[&str] = &[
    "www",
    "api",
    "admin",
    "cdeploy",
    "internal",
    "localhost",
    "metrics",
    "status",
];

/// Why a slug was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    #[error("the slug is empty")]
    Empty,
    #[error("the slug is {0} characters long; at most {SLUG_MAX_LEN} are allowed")]
    TooLong(usize),
    #[error("the slug may contain only lowercase letters a-z, digits and '-' (found {0:?})")]
    BadChar(char),
    #[error("the slug must start and end with a letter or a digit")]
    BadEdge,
    #[error(
        "the slug may not contain '--' (it separates a slug from a deployment id in preview hosts)"
    )]
    DoubleDash,
    #[error("the slug {0:?} is reserved")]
    Reserved(String),
}

/// Checks a project slug: a DNS label of `[a-z0-9-]`, no leading/trailing/double dash,
/// not reserved.
pub fn validate_slug(slug: &str) -> Result<(), SlugError> {
    if slug.is_empty() {
        return Err(SlugError::Empty);
    }
    if let Some(c) = slug
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(SlugError::BadChar(c));
    }
    if slug.len() > SLUG_MAX_LEN {
        return Err(SlugError::TooLong(slug.len()));
    }
    if slug.starts_with('-') || slug.ends_with('-') {
        return Err(SlugError::BadEdge);
    }
    if slug.contains("--") {
        return Err(SlugError::DoubleDash);
    }
    if RESERVED_SLUGS.contains(&slug) {
        return Err(SlugError::Reserved(slug.to_string()));
    }
    Ok(())
}

/// Turns an arbitrary name (a directory name, a repository name) into a valid slug, or
/// `None` when nothing usable is left.
pub fn sanitize_slug(name: &str) -> Option<String> {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out = out.trim_matches('-').to_string();
    out.truncate(SLUG_MAX_LEN);
    let out = out.trim_end_matches('-').to_string();
    if validate_slug(&out).is_ok() {
        Some(out)
    } else if !out.is_empty() && RESERVED_SLUGS.contains(&out.as_str()) {
        Some(format!("{out}-site"))
    } else {
        None
    }
}

/// A git branch as the label of its alias host `<label>--<slug>` (one DNS label, so at
/// most `61 - slug.len()` characters): lowercase letters and digits, anything else
/// becomes one `-`. `None` when nothing is left.
pub fn branch_label(branch: &str, slug: &str) -> Option<String> {
    let mut out = String::new();
    for c in branch.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(61usize.saturating_sub(slug.len()));
    let out = out.trim_matches('-').to_string();
    (!out.is_empty()).then_some(out)
}

const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Random lowercase alphanumeric string of `len` characters from the OS RNG.
pub fn random_id(len: usize) -> String {
    let mut buf = vec![0u8; len];
    getrandom::fill(&mut buf).expect("the OS random number generator is available");
    // 252 is the largest multiple of 36 below 256; rejecting above it keeps the draw uniform.
    let mut out = String::with_capacity(len);
    let mut pool = buf;
    while out.len() < len {
        for b in &pool {
            if *b < 252 && out.len() < len {
                out.push(ID_ALPHABET[(*b % 36) as usize] as char);
            }
        }
        if out.len() < len {
            pool = vec![0u8; len];
            getrandom::fill(&mut pool).expect("the OS random number generator is available");
        }
    }
    out
}

/// Length of a deployment id. 36^16 ≈ 8·10^24: collisions are not a concern.
pub const DEPLOYMENT_ID_LEN: usize = 16;

/// A deployment id: `[a-z0-9]{16}`. Short enough for a host label next to a slug.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct DeploymentId(String);

impl DeploymentId {
    pub fn generate() -> Self {
        DeploymentId(random_id(DEPLOYMENT_ID_LEN))
    }

    /// Parses an id received from outside; refuses anything that could be a path trick.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == DEPLOYMENT_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        .then(|| DeploymentId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Prefix of every API token, so leaked tokens are recognisable by secret scanners.
pub const TOKEN_PREFIX: &str = "cdp_";

/// A new API token: prefix plus 40 random characters (~206 bits).
pub fn generate_token() -> String {
    format!("{TOKEN_PREFIX}{}", random_id(40))
}

/// What the server stores for a token: its SHA-256, never the token itself.
pub fn token_hash(token: &str) -> String {
    crate::sha256_hex(token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_labels_fit_one_dns_label() {
        assert_eq!(
            branch_label("feat/Login-Page", "app").as_deref(),
            Some("feat-login-page")
        );
        assert_eq!(branch_label("--x__y--", "app").as_deref(), Some("x-y"));
        assert_eq!(branch_label("///", "app"), None);
        let long = branch_label(&"a".repeat(100), "my-app").unwrap();
        assert_eq!(long.len() + 2 + "my-app".len(), 63);
        assert!(!branch_label("a--b", "app").unwrap().contains("--"));
    }

    #[test]
    fn slug_rules() {
        assert!(validate_slug("my-app").is_ok());
        assert!(validate_slug("a").is_ok());
        assert!(validate_slug(&"a".repeat(SLUG_MAX_LEN)).is_ok());
        assert_eq!(validate_slug(&"a".repeat(46)), Err(SlugError::TooLong(46)));
        assert_eq!(validate_slug(&"a".repeat(64)), Err(SlugError::TooLong(64)));
        let preview = format!("{}--{}", "a".repeat(SLUG_MAX_LEN), DeploymentId::generate());
        assert_eq!(preview.len(), 63, "a preview host is one DNS label");
        assert_eq!(validate_slug("My-App"), Err(SlugError::BadChar('M')));
        assert_eq!(validate_slug("a/b"), Err(SlugError::BadChar('/')));
        assert_eq!(validate_slug(".."), Err(SlugError::BadChar('.')));
        assert_eq!(validate_slug("a--b"), Err(SlugError::DoubleDash));
        assert_eq!(validate_slug("--"), Err(SlugError::BadEdge));
        assert_eq!(validate_slug("-a"), Err(SlugError::BadEdge));
        assert_eq!(validate_slug(""), Err(SlugError::Empty));
        assert!(matches!(validate_slug("api"), Err(SlugError::Reserved(_))));
    }

    #[test]
    fn sanitize() {
        assert_eq!(sanitize_slug("My App_2").as_deref(), Some("my-app-2"));
        assert_eq!(sanitize_slug("--x--y--").as_deref(), Some("x-y"));
        assert_eq!(sanitize_slug("api").as_deref(), Some("api-site"));
        assert_eq!(sanitize_slug("...").as_deref(), None);
        assert_eq!(sanitize_slug(&"b".repeat(80)).unwrap().len(), SLUG_MAX_LEN);
    }

    #[test]
    fn ids() {
        let id = DeploymentId::generate();
        assert_eq!(id.as_str().len(), DEPLOYMENT_ID_LEN);
        assert!(DeploymentId::parse(id.as_str()).is_some());
        assert!(DeploymentId::parse("../../etc/passwd").is_none());
        assert!(DeploymentId::parse("ABCDEFGHIJKLMNOP").is_none());
        assert_ne!(DeploymentId::generate(), DeploymentId::generate());
        let t = generate_token();
        assert!(t.starts_with("cdp_") && t.len() == 44);
        assert_eq!(token_hash(&t).len(), 64);
    }
}
