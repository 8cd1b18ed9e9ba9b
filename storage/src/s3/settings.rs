//! Where an S3 bucket is and how patiently to talk to it: the bucket and prefix of an
//! `s3://` spec (checked against S3's naming rules), the seed's `S3_*` variables, and
//! the retry budget of each kind of caller.

use std::time::Duration;

use crate::spec::SpecError;

/// Where the bucket is and how to reach it. The bucket and prefix come from the spec,
/// the rest from the seed's variables ([`S3Settings::from_env_with`]); anything left
/// unset falls back to the standard AWS chain (`AWS_*` variables, profile, task role).
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix without leading or trailing `/` (may be empty).
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Attempts per request, retries included.
    pub max_attempts: u32,
    /// Give up on one attempt after this long.
    pub attempt_timeout: Duration,
}

/// How long S3 calls may take. Overridden by `S3_MAX_ATTEMPTS` / `S3_ATTEMPT_TIMEOUT`.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// Attempts per request, retries included.
    pub max_attempts: u32,
    pub attempt_timeout: Duration,
}

impl Patience {
    /// Builders and the control plane: a write that fails loses work, so keep trying.
    pub const WRITER: Patience = Patience {
        max_attempts: 5,
        attempt_timeout: Duration::from_secs(60),
    };
    /// The proxy: a visitor is waiting; a cached copy or a 502 beats a long wait.
    pub const READER: Patience = Patience {
        max_attempts: 3,
        attempt_timeout: Duration::from_secs(10),
    };
}

/// The bucket and key prefix of `url` (`s3://` + `rest`), checked: a bucket name S3
/// accepts (3-63 of a-z 0-9 . -) and a prefix that is a valid key.
pub(crate) fn parse_location(url: &str, rest: &str) -> Result<(String, String), SpecError> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if !bucket_ok {
        return Err(SpecError::InvalidBucket {
            url: url.to_string(),
            bucket: bucket.to_string(),
        });
    }
    let prefix = prefix.trim_matches('/').to_string();
    if !prefix.is_empty() && crate::check_key(&prefix).is_err() {
        return Err(SpecError::InvalidPrefix {
            url: url.to_string(),
            prefix,
        });
    }
    Ok((bucket.to_string(), prefix))
}

impl S3Settings {
    /// Settings for `bucket` and `prefix`, with the endpoint, region and keys from the
    /// seed's variables (`get` reads one): `S3_ENDPOINT` (else the SDK's
    /// `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`), `S3_REGION`,
    /// `S3_ACCESS_KEY`/`S3_SECRET_ACCESS_KEY`, and `S3_MAX_ATTEMPTS`/`S3_ATTEMPT_TIMEOUT`
    /// over `patience`.
    pub fn from_env_with(
        bucket: String,
        prefix: String,
        patience: Patience,
        get: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        S3Settings {
            bucket,
            prefix,
            region: get("S3_REGION"),
            endpoint: get("S3_ENDPOINT"),
            access_key: get("S3_ACCESS_KEY"),
            secret_key: get("S3_SECRET_ACCESS_KEY"),
            max_attempts: get("S3_MAX_ATTEMPTS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(patience.max_attempts),
            attempt_timeout: get("S3_ATTEMPT_TIMEOUT")
                .and_then(|v| v.parse().ok())
                .map(Duration::from_secs)
                .unwrap_or(patience.attempt_timeout),
        }
    }
}
