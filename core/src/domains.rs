//! Custom domains: a project served at its own name (`www.example.com`), production or
//! a branch's newest preview, with a certificate the platform gets and renews.
//!
//! What the proxies read is in storage, like every route: `domains/<name>.json` names
//! the project ([`DomainRoute`]), `certs/<name>.json` holds the certificate
//! ([`StoredCert`], its key sealed when the operator has a protection key), and
//! `acme/http-01/<token>` the answer to a CA's HTTP-01 challenge. The database holds
//! who owns a domain, its state and every attempt (`cdeploy domains inspect`).

use serde::{Deserialize, Serialize};

/// Longest domain name (RFC 1035).
pub const MAX_NAME_LEN: usize = 253;

/// Why a name is not a domain cdeploy can serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{0:?} is not a domain name: {1}")]
    Invalid(String, &'static str),
    #[error("{0} is under the platform's own domain ({1}): projects are already served there")]
    Platform(String, String),
}

/// Checks and normalizes a domain a user adds: lower case, no trailing dot, ASCII (an
/// internationalized name is written in its `xn--` form), at least two labels, each 1–63
/// letters, digits or `-` not at either end.
pub fn validate_domain(name: &str, platform: &str) -> Result<String, DomainError> {
    let bad = |why| DomainError::Invalid(name.to_string(), why);
    let lower = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if lower.is_empty() || lower.len() > MAX_NAME_LEN {
        return Err(bad("empty, or longer than 253 characters"));
    }
    if !lower.is_ascii() {
        return Err(bad(
            "write an internationalized name in its xn-- (punycode) form",
        ));
    }
    if lower.starts_with("*.") {
        return Err(bad(
            "a wildcard is the operator's (`*.<domain>`), not a project's",
        ));
    }
    let labels: Vec<&str> = lower.split('.').collect();
    if labels.len() < 2 {
        return Err(bad("it needs at least two labels (example.com)"));
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(bad(
                "each label is 1-63 letters, digits or '-', not starting or ending with '-'",
            ));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("an IP address is not a domain"));
    }
    let platform = platform
        .split(':')
        .next()
        .unwrap_or(platform)
        .to_ascii_lowercase();
    if lower == platform || lower.ends_with(&format!(".{platform}")) {
        return Err(DomainError::Platform(lower, platform));
    }
    if psl::suffix(lower.as_bytes())
        .is_some_and(|s| s.typ() == Some(psl::Type::Icann) && s.as_bytes() == lower.as_bytes())
    {
        return Err(bad(
            "it is a public suffix (like co.uk or github.io), which no one owns: add a name under it",
        ));
    }
    Ok(lower)
}

/// Whether `name` (lower case, no trailing dot) is an apex, the name its owner
/// registered (`example.com`, `example.co.uk`), where DNS allows no CNAME record: by the
/// Public Suffix List (the `psl` crate's copy, in the binary). Under a suffix the list
/// does not know (`shop.test`), the last label is taken as the suffix.
pub fn is_apex(name: &str) -> bool {
    psl::domain(name.as_bytes()).is_some_and(|d| d.as_bytes() == name.as_bytes())
}

/// `domains/<name>.json`: what a custom domain serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRoute {
    pub slug: String,
    /// Serves this branch's newest preview (its alias label) instead of production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Redirects every request to this other domain (same path), permanently: the
    /// apex to its `www`, or the other way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
    /// Plain HTTP redirects to HTTPS once a certificate exists.
    #[serde(default)]
    pub https_redirect: bool,
    /// `Strict-Transport-Security` sent over HTTPS (`max-age=…`), when opted in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<String>,
}

/// `certs/<name>.json`: a certificate the proxies serve for `name` (a domain, or
/// `*.<domain>`), its private key sealed with the operator's protection keyring when
/// there is one (storage readable by others must not give keys away).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCert {
    /// The chain, leaf first, PEM.
    pub chain_pem: String,
    pub key: StoredKey,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Who issued it (the CA's directory URL, or `operator` for a supplied one).
    pub issuer: String,
}

/// A private key (PKCS#8 PEM), sealed or not.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StoredKey {
    Sealed { key: String, sealed: String },
    Plain { pem: String },
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoredKey::Sealed { key, .. } => write!(f, "Sealed({key})"),
            StoredKey::Plain { .. } => f.write_str("Plain(…)"),
        }
    }
}

/// Why a stored key does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyUnreadable {
    #[error("the key of {0} is sealed and this process has no protection key (CDEPLOY_PROTECTION_KEY, as on the server)")]
    NoKey(String),
    #[error("the key of {0} does not open: {1}")]
    DoesNotOpen(String, crate::seal::OpenError),
}

impl StoredKey {
    fn aad(what: &str) -> Vec<u8> {
        format!("cdeploy-key\0{what}").into_bytes()
    }

    /// `pem` as stored for `what` (a domain, `acme-account`): sealed when there are keys.
    pub fn store(what: &str, pem: &str, keys: Option<&crate::seal::Keyring>) -> StoredKey {
        match keys {
            None => StoredKey::Plain {
                pem: pem.to_string(),
            },
            Some(keys) => {
                let (key, sealed) = keys.seal(&Self::aad(what), pem.as_bytes());
                StoredKey::Sealed { key, sealed }
            }
        }
    }

    /// Whether it is sealed with the keyring's current key (else it is plain, or under
    /// a retiring key, and is sealed again at start).
    pub fn sealed_with(&self, keys: &crate::seal::Keyring) -> bool {
        matches!(self, StoredKey::Sealed { key, .. } if key == keys.current_id())
    }

    /// Opened for `what` and sealed again with the keyring's current key.
    pub fn resealed(
        &self,
        what: &str,
        keys: &crate::seal::Keyring,
    ) -> Result<StoredKey, KeyUnreadable> {
        let pem = self.open(what, Some(keys))?;
        Ok(StoredKey::store(what, &pem, Some(keys)))
    }

    /// The PEM, opened for `what` (a key copied to another name does not open).
    pub fn open(
        &self,
        what: &str,
        keys: Option<&crate::seal::Keyring>,
    ) -> Result<String, KeyUnreadable> {
        match self {
            StoredKey::Plain { pem } => Ok(pem.clone()),
            StoredKey::Sealed { key, sealed } => {
                let keys = keys.ok_or_else(|| KeyUnreadable::NoKey(what.to_string()))?;
                let bytes = keys
                    .open(&Self::aad(what), key, sealed)
                    .map_err(|e| KeyUnreadable::DoesNotOpen(what.to_string(), e))?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
        }
    }
}

/// The name a certificate for `host` is stored under: the host itself, else the
/// wildcard of its parent (`a.example.com` → `*.example.com`).
pub fn cert_names(host: &str) -> impl Iterator<Item = String> + '_ {
    let wildcard = host
        .split_once('.')
        .map(|(_, parent)| format!("*.{parent}"));
    std::iter::once(host.to_string()).chain(wildcard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_normalized() {
        let ok = |n| validate_domain(n, "cdeploy.test:8000");
        assert_eq!(ok("WWW.Example.COM.").unwrap(), "www.example.com");
        assert_eq!(
            ok("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        for bad in [
            "",
            "localhost",
            "bücher.example",
            "*.example.com",
            "-a.example.com",
            "a..example.com",
            "a_b.example.com",
            "10.0.0.1",
            "example.com/path",
            "co.uk",
            "com.au",
        ] {
            assert!(matches!(ok(bad), Err(DomainError::Invalid(..))), "{bad}");
        }
        assert!(matches!(
            ok("app.cdeploy.test"),
            Err(DomainError::Platform(..))
        ));
        assert!(matches!(ok("cdeploy.test"), Err(DomainError::Platform(..))));
        // Names under a suffix are anyone's to add (and prove).
        assert_eq!(ok("shop.co.uk").unwrap(), "shop.co.uk");
        assert_eq!(ok("me.github.io").unwrap(), "me.github.io");
        // A private section's suffix is a name someone owns.
        assert_eq!(ok("github.io").unwrap(), "github.io");
    }

    #[test]
    fn an_apex_is_the_registered_name() {
        for apex in ["example.com", "example.co.uk", "shop.test", "me.github.io"] {
            assert!(is_apex(apex), "{apex}");
        }
        for below in [
            "www.example.com",
            "www.example.co.uk",
            "a.shop.test",
            "co.uk",
        ] {
            assert!(!is_apex(below), "{below}");
        }
    }

    #[test]
    fn keys_seal_for_their_name_only() {
        let keys = crate::seal::Keyring::parse(&crate::seal::Keyring::generate()).unwrap();
        let pem = "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n";
        let stored = StoredKey::store("a.example", pem, Some(&keys));
        let json = serde_json::to_string(&stored).unwrap();
        assert!(!json.contains("abc"), "{json}");
        let read: StoredKey = serde_json::from_str(&json).unwrap();
        assert_eq!(read.open("a.example", Some(&keys)).unwrap(), pem);
        assert!(read.open("b.example", Some(&keys)).is_err());
        assert!(matches!(
            read.open("a.example", None),
            Err(KeyUnreadable::NoKey(_))
        ));
        let plain = StoredKey::store("a.example", pem, None);
        assert_eq!(plain.open("a.example", None).unwrap(), pem);
    }

    #[test]
    fn certificates_by_name_then_wildcard() {
        let names: Vec<String> = cert_names("a.b.example").collect();
        assert_eq!(names, ["a.b.example", "*.b.example"]);
    }
}
