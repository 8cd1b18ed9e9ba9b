//! The proxy answering requests over a real local storage, by concern: `serving` (files,
//! path rules, hosts, conditional requests, ranges and encodings) and `storage` (what is
//! read, and what happens when storage fails). Here: deploying test sites and a storage
//! that counts its reads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cdeploy_core::config::SiteConfig;
use cdeploy_core::layout;
use cdeploy_storage::publish::{self, OutputFiles};
use cdeploy_storage::{LocalStorage, Storage, StorageError};
use http_body_util::BodyExt;
use hyper::{Request, StatusCode};

use crate::{Proxy, ProxyConfig};

mod rules;
mod serving;
mod storage;

const ID: &str = "aaaaaaaaaaaaaaaa";
const ID2: &str = "bbbbbbbbbbbbbbbb";

pub(crate) async fn deploy(
    s: &dyn Storage,
    slug: &str,
    id: &str,
    files: &[(&str, &[u8])],
    site: SiteConfig,
) {
    let mut out = OutputFiles::new();
    for (path, data) in files {
        let hash = cdeploy_core::sha256_hex(data);
        s.put(&layout::blob(&hash), Bytes::copy_from_slice(data))
            .await
            .unwrap();
        out.insert(path.to_string(), (hash, data.len() as u64));
    }
    publish::write_manifest(
        s,
        (slug, id, false),
        &out,
        (&site, &Default::default()),
        None,
    )
    .await
    .unwrap();
}

async fn setup() -> (tempfile::TempDir, Arc<TestStorage>, Arc<Proxy>) {
    let dir = tempfile::tempdir().unwrap();
    let storage = test_storage(&dir);
    let js = "export const x = 1;\n".repeat(200);
    deploy(
        storage.as_ref(),
        "app",
        ID,
        &[
            ("/index.html", b"<html>app v1</html>"),
            ("/about.html", b"about"),
            ("/docs/index.html", b"docs"),
            ("/assets/index-DiwrgTda.js", js.as_bytes()),
            ("/assets/style.css", b"body{}"),
        ],
        SiteConfig::default(),
    )
    .await;
    publish::set_route(storage.as_ref(), "app", ID)
        .await
        .unwrap();
    let proxy = Proxy::new(storage.clone(), ProxyConfig::new("localhost:8000"));
    (dir, storage, proxy)
}

fn get(host: &str, path: &str) -> Request<()> {
    Request::builder()
        .uri(path)
        .header("host", host)
        .body(())
        .unwrap()
}

/// The response as an HTTP/1.1 client reads it: hyper writes the `Content-Length` of a
/// body of known length when the response does not say it (not for HEAD, 204 or 304).
/// `serving::lengths_are_said_where_hyper_would_not` checks what the proxy says itself.
async fn call(p: &Proxy, req: Request<()>) -> (StatusCode, hyper::HeaderMap, Bytes) {
    use hyper::body::Body as _;
    let head = req.method() == hyper::Method::HEAD;
    let resp = p.handle(req).await;
    let (mut parts, body) = resp.into_parts();
    let bodiless = matches!(
        parts.status,
        StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
    );
    if let (Some(len), false) = (body.size_hint().exact(), head || bodiless) {
        parts
            .headers
            .entry(hyper::header::CONTENT_LENGTH)
            .or_insert(len.into());
    }
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// Local storage that counts what it is asked to read, whole or streamed, and can be
/// switched off (to test the proxy when storage is down).
struct TestStorage {
    inner: LocalStorage,
    down: AtomicBool,
    /// GETs of anything (routes, manifests, blobs).
    gets: std::sync::atomic::AtomicUsize,
    whole_reads: std::sync::atomic::AtomicUsize,
    streamed: std::sync::Mutex<Vec<Option<(u64, u64)>>>,
}

#[async_trait]
impl Storage for TestStorage {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StorageError::Backend("down".into()));
        }
        self.gets.fetch_add(1, Ordering::SeqCst);
        if key.starts_with("blobs/") {
            self.whole_reads.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get(key).await
    }
    async fn get_stream(
        &self,
        key: &str,
        range: Option<cdeploy_storage::ByteRange>,
    ) -> Result<Option<cdeploy_storage::ByteStream>, StorageError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StorageError::Backend("down".into()));
        }
        self.streamed.lock().unwrap().push(range);
        self.inner.get_stream(key, range).await
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.inner.put(key, data).await
    }
    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        self.inner.exists(key).await
    }
    async fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.inner.size(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.inner.delete(key).await
    }
    fn describe(&self) -> String {
        "test".into()
    }
}

fn test_storage(dir: &tempfile::TempDir) -> Arc<TestStorage> {
    Arc::new(TestStorage {
        inner: LocalStorage::open(dir.path()).unwrap(),
        down: AtomicBool::new(false),
        gets: Default::default(),
        whole_reads: Default::default(),
        streamed: Default::default(),
    })
}
