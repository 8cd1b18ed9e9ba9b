//! [`S3Storage`], the S3 backend on the AWS SDK (feature `aws`).
//!
//! One [`aws_sdk_s3::Client`] per process: it pools connections and is cheap to clone.
//! Transient failures (5xx, throttling, timeouts, connection errors) are retried by the
//! SDK's standard retry strategy with exponential backoff and jitter.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::Region;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;

use crate::aws::{aws_config_with, sdk_error_message};
use crate::{blob_hash_of, check_key, ByteRange, Listed, Result, Storage, StorageError};

use super::S3Settings;

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
    ) -> Result<Option<crate::ByteStream>> {
        Ok(self.get_object(key, range).await?.map(|(_, body)| {
            Box::pin(tokio_util::io::ReaderStream::with_capacity(
                body.into_async_read(),
                64 * 1024,
            )) as crate::ByteStream
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
        crate::check_blob(key, &data)?;
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
