//! The typed `--storage` value and the one factory of every backend.
//!
//! A spec is parsed once, where a setting is read (`--storage`, `CDEPLOY_STORAGE`, the
//! proxy's `BASE_PATH`); from then on callers hold a [`StorageSpec`] and [`open`] picks
//! the backend. Its syntax:
//!
//! * `s3://BUCKET[/PREFIX]` — an S3 bucket, under an optional key prefix; the endpoint,
//!   region and keys come from the `S3_*` variables when [`open`] runs, else from the
//!   standard AWS chain.
//! * `http://…` or `https://…` — a read-only origin at a public URL prefix (proxies).
//! * anything else without `://` — a local directory, created when missing.

use std::path::PathBuf;
use std::sync::Arc;

use crate::http::HttpOrigin;
use crate::local::LocalStorage;
use crate::s3::{self, Patience};
#[cfg(feature = "aws")]
use crate::s3::{S3Settings, S3Storage};
use crate::DynStorage;

/// Where storage is: what `--storage` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageSpec {
    /// A local directory.
    Local(PathBuf),
    /// An S3 bucket and a key prefix without leading or trailing `/` (may be empty).
    S3 { bucket: String, prefix: String },
    /// A public `http(s)://` URL prefix, read-only. Kept as written (a parsed URL would
    /// be normalized), so requests and logs use the operator's own spelling.
    Http(String),
}

/// A `--storage` value that names no storage; the message says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{url:?}: {bucket:?} is not a valid bucket name (3-63 of a-z 0-9 . -)")]
    InvalidBucket { url: String, bucket: String },
    #[error("{url:?}: invalid key prefix {prefix:?}")]
    InvalidPrefix { url: String, prefix: String },
    #[error("{url}: {source}")]
    InvalidUrl {
        url: String,
        source: url::ParseError,
    },
    #[error("{0}: expected a directory, s3://bucket[/prefix] or an http(s):// URL")]
    UnknownScheme(String),
}

/// Storage that a valid spec still could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory could not be created or used.
    #[error("cannot open storage {}: {source}", dir.display())]
    Local {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// An `s3://` spec in a binary built without the AWS SDK.
    #[error("storage {0}: this binary was built without AWS support (S3 storage, ECS builds); install it with `./install.sh --aws`, or build with `cargo build --features aws`")]
    NoAws(StorageSpec),
    /// No HTTP client for the origin (its TLS set-up failed).
    #[error(transparent)]
    Http(reqwest::Error),
}

impl std::str::FromStr for StorageSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = s3::settings::parse_location(s, rest)?;
            return Ok(StorageSpec::S3 { bucket, prefix });
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            url::Url::parse(s).map_err(|source| SpecError::InvalidUrl {
                url: s.to_string(),
                source,
            })?;
            return Ok(StorageSpec::Http(s.to_string()));
        }
        if s.contains("://") {
            return Err(SpecError::UnknownScheme(s.to_string()));
        }
        Ok(StorageSpec::Local(PathBuf::from(s)))
    }
}

impl std::fmt::Display for StorageSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageSpec::Local(dir) => write!(f, "{}", dir.display()),
            StorageSpec::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            StorageSpec::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            StorageSpec::Http(base) => f.write_str(base),
        }
    }
}

impl StorageSpec {
    /// The builder's form of an S3 spec, from the seed's variables (`get` reads one):
    /// `S3_BUCKET_NAME` and an optional `S3_PREFIX`. `None` when no bucket is named.
    pub fn s3_from_seed_env(
        get: impl Fn(&str) -> Option<String>,
    ) -> Option<Result<Self, SpecError>> {
        let bucket = get("S3_BUCKET_NAME").filter(|b| !b.is_empty())?;
        let prefix = get("S3_PREFIX").unwrap_or_default();
        let url = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        Some(url.parse())
    }

    /// Whether the spec names storage that takes writes (a server's or a builder's).
    pub fn is_writable(&self) -> bool {
        !matches!(self, StorageSpec::Http(_))
    }
}

/// Opens the storage `spec` names. Nothing is requested from a remote backend here:
/// call [`crate::Storage::check`] to find a wrong bucket or credentials at start-up.
/// `patience` is how long S3 calls may take (the `S3_*` variables override it).
pub async fn open(spec: &StorageSpec, patience: Patience) -> Result<DynStorage, OpenError> {
    Ok(match spec {
        StorageSpec::Local(dir) => {
            Arc::new(LocalStorage::open(dir).map_err(|source| OpenError::Local {
                dir: dir.clone(),
                source,
            })?)
        }
        #[cfg(feature = "aws")]
        StorageSpec::S3 { bucket, prefix } => {
            let settings =
                S3Settings::from_env_with(bucket.clone(), prefix.clone(), patience, |k| {
                    std::env::var(k).ok()
                });
            Arc::new(S3Storage::connect(&settings).await)
        }
        #[cfg(not(feature = "aws"))]
        StorageSpec::S3 { .. } => {
            let _ = patience;
            return Err(OpenError::NoAws(spec.clone()));
        }
        StorageSpec::Http(base) => Arc::new(HttpOrigin::new(base).map_err(OpenError::Http)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary built without AWS support reads an s3:// spec, and refuses to open it
    /// saying how to get one that can.
    #[cfg(not(feature = "aws"))]
    #[tokio::test]
    async fn s3_without_aws_is_refused_by_name() {
        let spec = parse("s3://my-bucket/sites").unwrap();
        let err = match open(&spec, Patience::WRITER).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("opened S3 without the SDK"),
        };
        assert!(err.contains("s3://my-bucket/sites"), "{err}");
        assert!(err.contains("./install.sh --aws"), "{err}");
    }

    fn parse(s: &str) -> Result<StorageSpec, SpecError> {
        s.parse()
    }

    #[test]
    fn s3_urls() {
        assert_eq!(
            parse("s3://my-bucket").unwrap(),
            StorageSpec::S3 {
                bucket: "my-bucket".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            parse("s3://my-bucket/team/a/").unwrap(),
            StorageSpec::S3 {
                bucket: "my-bucket".into(),
                prefix: "team/a".into()
            }
        );
        for bad in [
            "s3://",
            "s3://AB",
            "s3://Bucket",
            "s3://b_ucket",
            "s3://ok-bucket/../x",
            "s3://-bucket",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse("s3://Not_A_Bucket").unwrap_err().to_string(),
            r#""s3://Not_A_Bucket": "Not_A_Bucket" is not a valid bucket name (3-63 of a-z 0-9 . -)"#
        );
        assert_eq!(
            parse("s3://ok-bucket/a/../b/").unwrap_err().to_string(),
            r#""s3://ok-bucket/a/../b/": invalid key prefix "a/../b""#
        );
    }

    #[test]
    fn directories_origins_and_other_schemes() {
        assert_eq!(
            parse("/var/lib/cdeploy/storage").unwrap(),
            StorageSpec::Local("/var/lib/cdeploy/storage".into())
        );
        assert_eq!(
            parse("https://b.s3.amazonaws.com/p/").unwrap(),
            StorageSpec::Http("https://b.s3.amazonaws.com/p/".into())
        );
        assert!(!parse("http://x").unwrap().is_writable());
        assert!(parse("data").unwrap().is_writable());
        assert_eq!(
            parse("http://").unwrap_err().to_string(),
            "http://: empty host"
        );
        assert_eq!(
            parse("ftp://x/y").unwrap_err(),
            SpecError::UnknownScheme("ftp://x/y".into())
        );
        for spec in [
            "s3://my-bucket",
            "s3://my-bucket/a/b",
            "https://x/p",
            "rel/dir",
        ] {
            assert_eq!(parse(spec).unwrap().to_string(), spec);
        }
    }

    #[test]
    fn the_builders_variables() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(StorageSpec::s3_from_seed_env(env(&[])), None);
        assert_eq!(
            StorageSpec::s3_from_seed_env(env(&[("S3_BUCKET_NAME", "")])),
            None
        );
        assert_eq!(
            StorageSpec::s3_from_seed_env(env(&[("S3_BUCKET_NAME", "b-1"), ("S3_PREFIX", "p/")])),
            Some(Ok(StorageSpec::S3 {
                bucket: "b-1".into(),
                prefix: "p".into()
            }))
        );
        assert!(matches!(
            StorageSpec::s3_from_seed_env(env(&[("S3_BUCKET_NAME", "B")])),
            Some(Err(SpecError::InvalidBucket { .. }))
        ));
    }

    #[tokio::test]
    async fn a_directory_opens_and_says_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let spec = StorageSpec::Local(dir.path().join("s"));
        let storage = open(&spec, Patience::WRITER).await.unwrap();
        assert_eq!(
            storage.describe(),
            format!("local:{}", dir.path().join("s").display())
        );
        std::fs::write(dir.path().join("file"), "").unwrap();
        let spec = StorageSpec::Local(dir.path().join("file"));
        let err = open(&spec, Patience::WRITER).await.err().unwrap();
        assert!(
            err.to_string().starts_with(&format!(
                "cannot open storage {}: ",
                dir.path().join("file").display()
            )),
            "{err}"
        );
    }
}
