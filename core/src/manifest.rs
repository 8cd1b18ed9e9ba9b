//! What storage holds about a deployment: the manifest the proxy serves from, the source
//! map of an uploaded repository, and the route pointer that makes a deployment live.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A precompressed variant stored next to a blob (`blobs/<hash>.br`, `.gz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Br,
    Gzip,
}

impl Encoding {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// The blob key suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Gzip => "gz",
        }
    }
}

/// One served file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub hash: String,
    pub size: u64,
    #[serde(rename = "type")]
    pub content_type: String,
    /// Precompressed variants available in storage, best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encodings: Vec<Encoding>,
}

/// Resolved site settings (the `[site]` table with defaults applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub spa: bool,
    pub clean_urls: bool,
}

impl Site {
    /// Applies the defaults: SPA unless the output has its own `404.html`; clean URLs on.
    pub fn resolve(cfg: &crate::config::SiteConfig, has_404: bool) -> Site {
        Site {
            spa: cfg.spa.unwrap_or(!has_404),
            clean_urls: cfg.clean_urls.unwrap_or(true),
        }
    }
}

/// `deployments/<id>/manifest.json`. Keys of `files` are absolute URL paths (`/index.html`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub id: String,
    pub slug: String,
    pub created_at: String,
    pub files: BTreeMap<String, FileEntry>,
    pub site: Site,
    /// Redirect, rewrite, proxy and header rules, compiled from the output's
    /// `_redirects` and `_headers` and cdeploy.toml when the deployment was made.
    #[serde(default, skip_serializing_if = "crate::rules::Rules::is_empty")]
    pub rules: crate::rules::Rules,
    /// A server app's server: requests no file answers go to it (see [`crate::server`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<crate::server::ServerSpec>,
    /// Whether it is a preview (its server gets the preview target's variables) or
    /// production's; unknown (`None`) in manifests written before it was recorded,
    /// whose servers get no stored variables on proxy replicas (production's would be
    /// wrong for a preview).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<bool>,
}

/// `deployments/<id>/source.json`: repository-relative path → blob hash.
pub type SourceMap = BTreeMap<String, String>;

/// `routes/<slug>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Empty while the project has previews only.
    pub production: String,
}

/// A branch alias (`aliases/<slug>/<label>.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Alias {
    pub deployment: String,
}

/// A project's preview protection (`protection/<slug>.json`), read by the proxies:
/// previews (never production) need the password, the bypass token or a cookie one of
/// them earned.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Protection {
    /// The password's Argon2id hash (PHC string); `None`: only the bypass token opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// SHA-256 (hex) of the bypass token.
    pub bypass: String,
    /// Signs the cookies visitors get (hex of 32 random bytes); replaced with every
    /// change, so a change ends every cookie.
    pub cookie_key: String,
    pub updated_at: String,
}

impl std::fmt::Debug for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protection")
            .field("password", &self.password.is_some())
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

/// What `protection/<slug>.json` holds: the record, or the record sealed with the
/// operator's protection keyring (`CDEPLOY_PROTECTION_KEY`) so that storage readable by
/// others (a public bucket) gives away neither the cookie key nor the password hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum StoredProtection {
    Sealed {
        /// The id of the key that sealed it.
        key: String,
        /// Base64 of the nonce and the ciphertext of the record's JSON.
        sealed: String,
    },
    Plain(Protection),
}

/// Why a stored protection record can't be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtectionUnreadable {
    #[error("the preview protection record of {0} is sealed, and this process has no protection key (set CDEPLOY_PROTECTION_KEY, as on the server)")]
    NoKey(String),
    #[error("the preview protection record of {0} does not open: {1}")]
    DoesNotOpen(String, crate::seal::OpenError),
    #[error("the preview protection record of {0} is not valid: {1}")]
    Invalid(String, String),
}

impl StoredProtection {
    fn aad(slug: &str) -> Vec<u8> {
        format!("cdeploy-protection\0{slug}").into_bytes()
    }

    /// The record as stored: sealed with `keys` when there are some (bound to `slug`, so
    /// a record copied to another project does not open), else plain.
    pub fn store(slug: &str, p: &Protection, keys: Option<&crate::seal::Keyring>) -> Self {
        match keys {
            None => StoredProtection::Plain(p.clone()),
            Some(keys) => {
                let json = serde_json::to_vec(p).expect("a record serializes");
                let (key, sealed) = keys.seal(&Self::aad(slug), &json);
                StoredProtection::Sealed { key, sealed }
            }
        }
    }

    /// The record itself. A sealed one needs a key that opens it: without one it is an
    /// error, never "no protection".
    pub fn open(
        self,
        slug: &str,
        keys: Option<&crate::seal::Keyring>,
    ) -> Result<Protection, ProtectionUnreadable> {
        match self {
            StoredProtection::Plain(p) => Ok(p),
            StoredProtection::Sealed { key, sealed } => {
                let keys = keys.ok_or_else(|| ProtectionUnreadable::NoKey(slug.to_string()))?;
                let json = keys
                    .open(&Self::aad(slug), &key, &sealed)
                    .map_err(|e| ProtectionUnreadable::DoesNotOpen(slug.to_string(), e))?;
                serde_json::from_slice(&json)
                    .map_err(|e| ProtectionUnreadable::Invalid(slug.to_string(), e.to_string()))
            }
        }
    }

    /// Whether it is sealed with the key that seals now (else it should be rewritten).
    pub fn sealed_with(&self, keys: &crate::seal::Keyring) -> bool {
        matches!(self, StoredProtection::Sealed { key, .. } if key == keys.current_id())
    }
}

/// Checks a path inside an uploaded tree: relative, `/`-separated, no `.`/`..`/empty
/// segments, no NUL or backslash, not inside `.git`.
pub fn validate_tree_path(p: &str) -> Result<(), String> {
    if p.is_empty() || p.len() > 1024 {
        return Err(format!("path {p:?} is empty or too long"));
    }
    if p.contains('\0') || p.contains('\\') {
        return Err(format!("path {p:?} contains a NUL byte or a backslash"));
    }
    for seg in p.trim_start_matches('/').split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(format!("path {p:?} has an empty, '.' or '..' segment"));
        }
        if seg == ".git" {
            return Err(format!("path {p:?} is inside .git"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_protection_records_give_nothing_away_and_open_only_for_their_project() {
        let keys = crate::seal::Keyring::parse(&crate::seal::Keyring::generate()).unwrap();
        let p = Protection {
            password: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
            bypass: "ab".repeat(32),
            cookie_key: "cd".repeat(32),
            updated_at: "2026-12-05T00:00:00Z".into(),
        };
        let stored = StoredProtection::store("app", &p, Some(&keys));
        let json = serde_json::to_string(&stored).unwrap();
        for secret in ["argon2", &p.bypass, &p.cookie_key] {
            assert!(!json.contains(secret), "{json}");
        }
        assert!(stored.sealed_with(&keys));
        let read: StoredProtection = serde_json::from_str(&json).unwrap();
        assert_eq!(read.clone().open("app", Some(&keys)).unwrap(), p);
        assert!(matches!(
            read.clone().open("other", Some(&keys)),
            Err(ProtectionUnreadable::DoesNotOpen(..))
        ));
        assert!(matches!(
            read.open("app", None),
            Err(ProtectionUnreadable::NoKey(_))
        ));
        // A plain record (private storage) reads as before, key or not.
        let plain = serde_json::to_string(&p).unwrap();
        let read: StoredProtection = serde_json::from_str(&plain).unwrap();
        assert!(!read.sealed_with(&keys));
        assert_eq!(read.open("app", Some(&keys)).unwrap(), p);
    }

    #[test]
    fn tree_paths() {
        assert!(validate_tree_path("src/main.ts").is_ok());
        assert!(validate_tree_path("/index.html").is_ok());
        for bad in [
            "",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a\0b",
            ".git/config",
            "a\\b",
        ] {
            assert!(validate_tree_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn site_defaults() {
        let none = crate::config::SiteConfig::default();
        assert_eq!(
            Site::resolve(&none, false),
            Site {
                spa: true,
                clean_urls: true
            }
        );
        assert_eq!(
            Site::resolve(&none, true),
            Site {
                spa: false,
                clean_urls: true
            }
        );
    }
}
