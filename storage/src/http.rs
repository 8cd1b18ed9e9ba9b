//! A read-only HTTP origin: storage at a public URL prefix, the seed's `BASE_PATH`
//! (e.g. `https://my-bucket.s3.amazonaws.com/prefix`). Objects are fetched with plain
//! GETs; a private bucket is better served with `--storage s3://…` (signed requests).
//! Only proxies read from one: writes are refused.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::StatusCode;

use crate::{check_key, ByteRange, ByteStream, Result, Storage, StorageError};

/// Storage read with plain GETs from a public URL prefix.
pub struct HttpOrigin {
    base: String,
    http: reqwest::Client,
}

impl HttpOrigin {
    /// `base` is an `http(s)://` URL prefix that [`crate::StorageSpec`] checked; keys are
    /// appended after a `/`.
    pub(crate) fn new(base: &str) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(HttpOrigin {
            base: base.trim_end_matches('/').to_string(),
            http,
        })
    }

    fn url(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(format!("{}/{key}", self.base))
    }

    fn read_only(&self) -> StorageError {
        StorageError::Backend(format!("{} is a read-only origin", self.base))
    }
}

fn backend(url: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(format!("GET {url}: {e}"))
}

/// A public bucket without list permission answers 403 for a missing object.
fn missing(status: StatusCode) -> bool {
    status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN
}

#[async_trait]
impl Storage for HttpOrigin {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let url = self.url(key)?;
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| backend(&url, e))?;
        match resp.status() {
            s if s.is_success() => Ok(Some(resp.bytes().await.map_err(|e| backend(&url, e))?)),
            s if missing(s) => Ok(None),
            s => Err(backend(&url, s)),
        }
    }

    /// A ranged GET for a range (`Range: bytes=a-b`). An origin that ignores it and
    /// answers 200 has the unwanted bytes skipped as they stream by, never buffered.
    async fn get_stream(&self, key: &str, range: Option<ByteRange>) -> Result<Option<ByteStream>> {
        let url = self.url(key)?;
        let mut req = self.http.get(&url);
        if let Some((a, b)) = range {
            req = req.header(reqwest::header::RANGE, format!("bytes={a}-{b}"));
        }
        let resp = req.send().await.map_err(|e| backend(&url, e))?;
        let status = resp.status();
        if missing(status) {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(backend(&url, status));
        }
        let body = resp.bytes_stream().map_err(std::io::Error::other);
        Ok(Some(match range {
            Some((a, b)) if status != StatusCode::PARTIAL_CONTENT => {
                Box::pin(window(body, a, b - a + 1))
            }
            _ => Box::pin(body),
        }))
    }

    async fn put(&self, _key: &str, _data: Bytes) -> Result<()> {
        Err(self.read_only())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.size(key).await?.is_some())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        let url = self.url(key)?;
        let resp = self
            .http
            .head(&url)
            .send()
            .await
            .map_err(|e| backend(&url, e))?;
        match resp.status() {
            s if s.is_success() => Ok(resp.content_length()),
            s if missing(s) => Ok(None),
            s => Err(backend(&url, s)),
        }
    }

    async fn delete(&self, _key: &str) -> Result<()> {
        Err(self.read_only())
    }

    fn describe(&self) -> String {
        self.base.clone()
    }
}

/// The `len` bytes from offset `skip` of a stream of chunks.
fn window(
    body: impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    skip: u64,
    len: u64,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    body.scan((skip, len), |(skip, left), chunk| {
        let out = match chunk {
            Err(e) => Some(Err(e)),
            Ok(_) if *left == 0 => None,
            Ok(mut c) => {
                let drop = (*skip).min(c.len() as u64) as usize;
                *skip -= drop as u64;
                let c = c.split_off(drop);
                let keep = (*left).min(c.len() as u64) as usize;
                *left -= keep as u64;
                Some(Ok(c.slice(..keep)))
            }
        };
        std::future::ready(out)
    })
    .filter(|c| std::future::ready(!matches!(c, Ok(b) if b.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn windows_of_a_chunked_body() {
        let chunks = ["abc", "defg", "hi"].map(|c| Ok(Bytes::from(c)));
        let got: Vec<Bytes> = window(futures_util::stream::iter(chunks), 2, 5)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got.concat(), b"cdefg");
    }
}
