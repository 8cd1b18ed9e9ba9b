//! S3 storage (feature `s3`): the same layout as a local directory, in a bucket under an
//! optional prefix. Works against AWS and S3-compatible servers (path-style addressing
//! when an endpoint is set, checksums only where the API requires them).
//!
//! One [`aws_sdk_s3::Client`] per process: it pools connections and is cheap to clone.
//! Transient failures (5xx, throttling, timeouts, connection errors) are retried by the
//! SDK's standard retry strategy with exponential backoff and jitter.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::{Credentials, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;

use crate::storage::{
    self as storage, blob_hash_of, check_key, ByteRange, Listed, Result, Storage, StorageError,
};

/// Where the bucket is and how to reach it. Read from the seed's variables by
/// [`S3Settings::from_env`]; anything left unset falls back to the standard AWS chain
/// (`AWS_*` variables, profile, task role).
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

/// The AWS SDK configuration of the standard chain (`AWS_*` variables, profile, instance
/// or task role), with what cdeploy's own settings say on top: a region, static keys
/// (the seed's `S3_*`/`ECS_*` variables), an endpoint for compatible servers.
pub async fn aws_config_with(
    region: Option<&str>,
    credentials: Option<(&str, &str)>,
    endpoint: Option<&str>,
    source: &'static str,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https_client());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_string()));
    }
    if let Some((key, secret)) = credentials {
        loader = loader.credentials_provider(Credentials::new(key, secret, None, None, source));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// The HTTP client of every AWS call (S3, ECS, and the credential providers' own calls):
/// hyper 1 with rustls on ring, the one TLS stack the rest of cdeploy uses, made once
/// per process (its connection pool is shared). The SDK's default client would bring
/// aws-lc, and its legacy one hyper 0.14 and rustls 0.21.
fn https_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    static CLIENT: std::sync::OnceLock<aws_sdk_s3::config::SharedHttpClient> =
        std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https()
        })
        .clone()
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

/// An AWS SDK error in the service's own words (`InternalError: We encountered…`), or
/// the transport error when there was no answer.
pub fn sdk_error_message<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match e.as_service_error() {
        Some(service) => match (service.code(), service.message()) {
            (Some(code), Some(msg)) => format!("{code}: {msg}"),
            (Some(code), None) => code.to_string(),
            (None, Some(msg)) => msg.to_string(),
            (None, None) => DisplayErrorContext(e).to_string(),
        },
        None => DisplayErrorContext(e).to_string(),
    }
}

/// `s3://bucket[/prefix]` → (bucket, prefix).
pub fn parse_url(url: &str) -> std::result::Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{url:?} is not an s3:// URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if !bucket_ok {
        return Err(format!(
            "{url:?}: {bucket:?} is not a valid bucket name (3-63 of a-z 0-9 . -)"
        ));
    }
    let prefix = prefix.trim_matches('/').to_string();
    if !prefix.is_empty() {
        check_key(&prefix).map_err(|_| format!("{url:?}: invalid key prefix {prefix:?}"))?;
    }
    Ok((bucket.to_string(), prefix))
}

impl S3Settings {
    /// Settings for `s3://bucket[/prefix]`, with the endpoint, region and keys from the
    /// environment: `S3_ENDPOINT` (else the SDK's `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`),
    /// `S3_REGION`, `S3_ACCESS_KEY`/`S3_SECRET_ACCESS_KEY`.
    pub fn from_url_and_env(url: &str, patience: Patience) -> std::result::Result<Self, String> {
        let (bucket, prefix) = parse_url(url)?;
        Ok(Self::from_env_with(bucket, prefix, patience, |k| {
            std::env::var(k).ok()
        }))
    }

    /// The builder's form: `S3_BUCKET_NAME` (and optional `S3_PREFIX`).
    pub fn from_env(patience: Patience) -> Option<std::result::Result<Self, String>> {
        let bucket = std::env::var("S3_BUCKET_NAME")
            .ok()
            .filter(|b| !b.is_empty())?;
        let prefix = std::env::var("S3_PREFIX").unwrap_or_default();
        let url = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        Some(Self::from_url_and_env(&url, patience))
    }

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

/// Storage in an S3 bucket.
#[derive(Clone)]
pub struct S3Storage {
    client: Client,
    bucket: String,
    prefix: String,
}

impl S3Storage {
    /// Builds the process's client. No request is made here.
    pub async fn connect(s: &S3Settings) -> Self {
        let credentials = s.access_key.as_deref().zip(s.secret_key.as_deref());
        let sdk = aws_config_with(
            s.region.as_deref(),
            credentials,
            s.endpoint.as_deref(),
            "cdeploy-s3-env",
        )
        .await;
        // S3-compatible servers (MinIO, moto, R2…) want path-style addressing; so does
        // any endpoint given explicitly, whichever way it was given.
        let custom_endpoint = s.endpoint.is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL").is_some();
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(custom_endpoint)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(s.max_attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(5)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(s.attempt_timeout)
                    .build(),
            );
        if sdk.region().is_none() {
            conf = conf.region(Region::new("us-east-1"));
        }
        S3Storage {
            client: Client::from_conf(conf.build()),
            bucket: s.bucket.clone(),
            prefix: s.prefix.clone(),
        }
    }

    fn object_key(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        })
    }

    /// `GetObject` (of a range): the object key and the body, `None` when missing.
    async fn get_object(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<Option<(String, ByteStream)>> {
        let k = self.object_key(key)?;
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&k)
            .set_range(range.map(|(a, b)| format!("bytes={a}-{b}")))
            .send()
            .await
        {
            Ok(out) => Ok(Some((k, out.body))),
            Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => Ok(None),
            Err(e) => Err(self.backend("GetObject", &k, e)),
        }
    }

    fn backend<E, R>(&self, op: &str, key: &str, e: SdkError<E, R>) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        StorageError::Backend(format!(
            "S3 {op} s3://{}/{key}: {}",
            self.bucket,
            sdk_error_message(&e)
        ))
    }
}

#[async_trait]
impl Storage for S3Storage {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let Some((k, body)) = self.get_object(key, None).await? else {
            return Ok(None);
        };
        let data = body.collect().await.map_err(|e| {
            StorageError::Backend(format!(
                "S3 GetObject s3://{}/{k}: reading the body: {e}",
                self.bucket
            ))
        })?;
        Ok(Some(data.into_bytes()))
    }

    /// A ranged GET for a range: S3 sends only those bytes.
    async fn get_stream(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<Option<storage::ByteStream>> {
        Ok(self.get_object(key, range).await?.map(|(_, body)| {
            Box::pin(tokio_util::io::ReaderStream::with_capacity(
                body.into_async_read(),
                64 * 1024,
            )) as storage::ByteStream
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let full = self.object_key(prefix.trim_end_matches('/')).map(|k| {
            if prefix.ends_with('/') {
                format!("{k}/")
            } else {
                k
            }
        });
        let full = match (prefix.is_empty(), full) {
            (true, _) if self.prefix.is_empty() => String::new(),
            (true, _) => format!("{}/", self.prefix),
            (false, k) => k?,
        };
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.backend("ListObjectsV2", &full, e))?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                out.push(Listed {
                    key: key.get(strip..).unwrap_or_default().to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    modified: obj.last_modified().map_or(0, |t| t.secs()),
                });
            }
        }
        Ok(out)
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let k = self.object_key(key)?;
        crate::storage::check_blob(key, &data)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&k)
            .set_checksum_sha256(blob_checksum(key))
            .body(ByteStream::from(data))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.backend("PutObject", &k, e))
    }

    /// For a blob, S3 itself checks the bytes it receives against the blob's hash
    /// (`x-amz-checksum-sha256`) and refuses the write when they differ, so a file that
    /// changed since it was hashed never lands under the blob's name.
    async fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        let k = self.object_key(key)?;
        // A retried attempt re-reads the file: ByteStream::from_path is replayable.
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| StorageError::Io {
                key: key.to_string(),
                source: std::io::Error::other(e),
            })?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&k)
            .set_checksum_sha256(blob_checksum(key))
            .body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.backend("PutObject", &k, e))
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.size(key).await?.is_some())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        let k = self.object_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&k)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => Ok(None),
            Err(e) => Err(self.backend("HeadObject", &k, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let k = self.object_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&k)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.backend("DeleteObject", &k, e))
    }

    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    async fn check(&self) -> Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                StorageError::Backend(format!(
                    "S3 bucket {:?} is not reachable: {}",
                    self.bucket,
                    sdk_error_message(&e)
                ))
            })
    }
}

/// The base64 SHA-256 S3 must verify a blob's upload against (`None` for other keys).
fn blob_checksum(key: &str) -> Option<String> {
    use base64::Engine;
    let hash = blob_hash_of(key)?;
    let raw = hex::decode(hash).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(raw))
}

/// Opens the storage a `--storage` value names: `s3://bucket[/prefix]` or a directory.
pub async fn open_storage(
    spec: &str,
    patience: Patience,
) -> std::result::Result<crate::storage::DynStorage, String> {
    if spec.starts_with("s3://") {
        let settings = S3Settings::from_url_and_env(spec, patience)?;
        Ok(std::sync::Arc::new(S3Storage::connect(&settings).await))
    } else {
        crate::storage::LocalStorage::open(spec)
            .map(|s| std::sync::Arc::new(s) as crate::storage::DynStorage)
            .map_err(|e| format!("cannot open storage {spec}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("s3://my-bucket").unwrap(),
            ("my-bucket".into(), "".into())
        );
        assert_eq!(
            parse_url("s3://my-bucket/team/a/").unwrap(),
            ("my-bucket".into(), "team/a".into())
        );
        for bad in [
            "s3://",
            "s3://AB",
            "s3://Bucket",
            "s3://b_ucket",
            "http://x",
            "s3://ok-bucket/../x",
            "s3://-bucket",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
