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
