//! Uploaded files: storing a blob or a batch of them (checked against their hashes,
//! within the limits, never while garbage collection deletes the same blob), spooling a
//! body to a temporary file, and checking a deployment's file list.

use std::collections::BTreeMap;

use bytes::Bytes;
use cdeploy_core::api::{self, codes};
use cdeploy_core::batch::{self, BatchError, Content, Member};
use cdeploy_core::layout;
use cdeploy_core::manifest::validate_tree_path;
use futures_util::{Stream, StreamExt};

use super::error::{Error, Kind, Result};
use super::validate::check_hash;
use super::App;

/// Whether a blob was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// It was stored before.
    Already,
    /// Stored now.
    New,
}

/// The hashes of `hashes` that are not stored (or that garbage collection is deleting
/// right now), sorted. At most as many as a deployment may have files.
pub async fn missing(app: &App, hashes: Vec<String>) -> Result<Vec<String>> {
    if hashes.len() > app.config.max_files {
        return Err(Error::too_large(format!(
            "{} hashes; at most {} per request, the most files a deployment may have (server setting max_files)",
            hashes.len(),
            app.config.max_files
        )));
    }
    for h in &hashes {
        check_hash(h)?;
    }
    let deleting = app.store.touch_blobs(&hashes).await?;
    let mut missing = find_missing(app, hashes.into_iter()).await?;
    missing.extend(deleting);
    missing.sort();
    missing.dedup();
    Ok(missing)
}

/// Sizes of the given blobs (`None`: not stored).
pub async fn blob_sizes(
    app: &App,
    hashes: impl Iterator<Item = String>,
) -> Result<BTreeMap<String, Option<u64>>> {
    let mut unique: Vec<String> = hashes.collect();
    unique.sort();
    unique.dedup();
    let keys: Vec<String> = unique.iter().map(|h| layout::blob(h)).collect();
    let sizes = app.storage.sizes(&keys).await?;
    Ok(unique.into_iter().zip(sizes).collect())
}

/// The hashes storage does not have yet, sorted.
pub async fn find_missing(app: &App, hashes: impl Iterator<Item = String>) -> Result<Vec<String>> {
    let sizes = blob_sizes(app, hashes).await?;
    Ok(sizes
        .into_iter()
        .filter(|(_, size)| size.is_none())
        .map(|(h, _)| h)
        .collect())
}

/// Stores an uploaded blob after checking its bytes against its hash (storage checks
/// again as it writes); answers whether it was new.
///
/// The body streams to a private temporary file while it is hashed, then storage takes
/// the file: a large upload never sits in memory.
pub async fn store_blob<E: std::fmt::Display>(
    app: &App,
    hash: &str,
    body: impl Stream<Item = std::result::Result<Bytes, E>>,
) -> Result<Stored> {
    check_hash(hash)?;
    // Read the whole body first: answering before it is read would break the
    // client's send.
    let tmp = spool(app, body, app.config.max_file_bytes as u64, "a file").await?;
    if tmp.hash != *hash {
        return Err(Error::new(
            Kind::Unprocessable,
            codes::HASH_MISMATCH,
            format!("the body hashes to {}, not {hash}", tmp.hash),
        ));
    }
    let key = layout::blob(hash);
    wait_for_gc(app, std::slice::from_ref(&hash.to_string())).await?;
    if app.storage.exists(&key).await? {
        return Ok(Stored::Already);
    }
    app.storage.put_file(&key, &tmp.file).await?;
    app.lifecycle.metrics.blobs_uploaded.inc();
    app.lifecycle.metrics.blob_bytes_uploaded.inc_by(tmp.len);
    Ok(Stored::New)
}

/// Garbage collection may be deleting some of these blobs this very moment: touches
/// them (so it leaves them alone from now on) and lets a deletion under way finish, so
/// they can be stored again.
async fn wait_for_gc(app: &App, hashes: &[String]) -> Result<()> {
    let mut waited = 0;
    let mut deleting = app.store.touch_blobs(hashes).await?;
    // Touched now, all of them: from here on only those being deleted are asked again.
    while !deleting.is_empty() {
        waited += 1;
        if waited > 100 {
            return Err(Error::unavailable(
                "these files are being garbage-collected; retry",
                5,
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        deleting = app.store.touch_blobs(&deleting).await?;
    }
    Ok(())
}

/// Stores every blob of a batch archive (see [`cdeploy_core::batch`]), or none: the
/// whole archive is read and checked (members against their hashes, the per-file,
/// per-deployment and file-count limits) before the first blob is stored.
pub async fn store_batch<E>(
    app: &App,
    body: impl Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
) -> Result<api::BatchResponse>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let dir = app.config.data_dir.join("tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Error::internal("cannot create the upload folder", e))?;
    let spool = tempfile::Builder::new()
        .prefix("batch-")
        .tempdir_in(&dir)
        .map_err(|e| Error::internal("cannot create an upload folder", e))?;
    let limits = batch::Limits {
        max_member_bytes: app.config.max_file_bytes as u64,
        max_total_bytes: app.config.max_deployment_bytes,
        max_members: app.config.max_files,
        memory: Some(app.batch_memory.clone()),
    };
    let stream = body.map(|r| r.map_err(std::io::Error::other));
    let mut reader = tokio_util::io::StreamReader::new(stream);
    let members = match batch::read(&mut reader, &limits, spool.path()).await {
        Ok(m) => m,
        Err(e) => {
            // Removing a folder of many spooled files is blocking work, done while the
            // rest is drained and finished before the answer: a refused batch leaves
            // nothing behind by the time its client hears of it.
            let removal = tokio::task::spawn_blocking(move || drop(spool));
            // Read what is left (within reason) so the client gets the answer rather
            // than a reset connection while it is still sending.
            let mut sink = tokio::io::sink();
            let rest = tokio::io::AsyncReadExt::take(&mut reader, DRAIN_ON_ERROR);
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                tokio::io::copy(&mut { rest }, &mut sink),
            )
            .await;
            let _ = removal.await;
            return Err(batch_refused(app, e));
        }
    };
    let received = members.len();
    let (stored, stored_bytes) = store_members(app, members).await?;
    tokio::task::spawn_blocking(move || drop(spool));
    Ok(api::BatchResponse {
        received,
        stored,
        stored_bytes,
    })
}

/// Why a batch was refused, in the words of the setting that refused it.
fn batch_refused(app: &App, e: BatchError) -> Error {
    match e {
        BatchError::MemberTooLarge { name, size, .. } => Error::too_large(format!(
            "member {name} is {size} bytes; a file may be at most {} MiB (server setting max_file_mb)",
            app.config.max_file_bytes >> 20
        )),
        BatchError::TotalTooLarge { .. } => Error::too_large(format!(
            "the batch's files add up to more than {} MiB, the most a deployment may have (server setting max_deployment_mb)",
            app.config.max_deployment_bytes >> 20
        )),
        BatchError::TooManyMembers { max } => Error::too_large(format!(
            "more than {max} files in one batch; a deployment may have at most {max} (server setting max_files)"
        )),
        BatchError::HashMismatch { .. } => Error::new(
            Kind::Unprocessable,
            codes::HASH_MISMATCH,
            format!("{e}; nothing of this batch was stored"),
        ),
        BatchError::Spool(io) => Error::internal("cannot spool a batch upload", io),
        BatchError::Malformed(_) | BatchError::Read(_) => {
            Error::bad_request(format!("{e}; nothing of this batch was stored"))
        }
    }
}

/// Stores the members storage does not have yet; answers how many and their bytes.
async fn store_members(app: &App, members: Vec<Member>) -> Result<(usize, u64)> {
    let mut unique = BTreeMap::new();
    for m in members {
        unique.entry(m.hash.clone()).or_insert(m);
    }
    let hashes: Vec<String> = unique.keys().cloned().collect();
    wait_for_gc(app, &hashes).await?;
    let keys: Vec<String> = hashes.iter().map(|h| layout::blob(h)).collect();
    let present = app.storage.sizes(&keys).await?;
    let new: Vec<Member> = unique
        .into_values()
        .zip(present)
        .filter(|(_, size)| size.is_none())
        .map(|(m, _)| m)
        .collect();
    let stored_bytes: u64 = new.iter().map(|m| m.size).sum();
    let stored = new.len();
    // Small members in bulk, spooled ones one file at a time.
    let mut in_memory = Vec::new();
    let mut budget = Vec::new();
    let mut spooled = Vec::new();
    for m in new {
        match m.content {
            Content::Memory(data, share) => {
                in_memory.push((layout::blob(&m.hash), data));
                budget.push(share);
            }
            Content::File(path) => spooled.push((layout::blob(&m.hash), path)),
        }
    }
    app.storage.put_many(in_memory).await?;
    drop(budget);
    let storage = &app.storage;
    futures_util::stream::iter(spooled)
        .map(|(key, path)| async move { storage.put_file(&key, &path).await })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<std::result::Result<Vec<()>, _>>()?;
    let metrics = &app.lifecycle.metrics;
    metrics.blobs_uploaded.inc_by(stored as u64);
    metrics.blob_bytes_uploaded.inc_by(stored_bytes);
    Ok((stored, stored_bytes))
}

/// How much of a refused upload is still read so its client gets the answer.
const DRAIN_ON_ERROR: u64 = 64 << 20;

/// An upload written to a temporary file (deleted when dropped).
pub struct Spooled {
    pub file: tempfile::TempPath,
    pub hash: String,
    pub len: u64,
}

/// Writes a request body to `<data-dir>/tmp`, hashing it on the way and refusing it
/// past `limit` bytes (`what`, e.g. "a file", names it in the error).
pub async fn spool<E: std::fmt::Display>(
    app: &App,
    body: impl Stream<Item = std::result::Result<Bytes, E>>,
    limit: u64,
    what: &str,
) -> Result<Spooled> {
    use sha2::Digest;
    use tokio::io::AsyncWriteExt;
    let too_large = || {
        Error::too_large(format!(
            "{what} may be at most {} MiB",
            limit / (1024 * 1024)
        ))
    };
    let dir = app.config.data_dir.join("tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Error::internal("cannot create the upload folder", e))?;
    let path = tempfile::Builder::new()
        .prefix("upload-")
        .tempfile_in(&dir)
        .map_err(|e| Error::internal("cannot create an upload file", e))?
        .into_temp_path();
    let mut out = tokio::fs::File::create(&path)
        .await
        .map_err(|e| Error::internal("cannot write an upload file", e))?;
    let mut hasher = sha2::Sha256::new();
    let mut len = 0u64;
    let mut stream = std::pin::pin!(body);
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| Error::bad_request(format!("reading the upload failed: {e}")))?;
        len += chunk.len() as u64;
        if len > limit {
            return Err(too_large());
        }
        hasher.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(|e| Error::internal("cannot write an upload file", e))?;
    }
    out.flush()
        .await
        .map_err(|e| Error::internal("cannot write an upload file", e))?;
    Ok(Spooled {
        file: path,
        hash: hex::encode(hasher.finalize()),
        len,
    })
}

/// Checks a path → hash map of a source or prebuilt upload; answers `409 missing_files`
/// when blobs are not stored yet, else returns each blob's size.
pub async fn check_file_map(
    app: &App,
    map: &BTreeMap<String, String>,
    url_paths: bool,
) -> Result<BTreeMap<String, u64>> {
    if map.is_empty() {
        return Err(Error::bad_request("the file list is empty"));
    }
    if map.len() > app.config.max_files {
        return Err(Error::new(
            Kind::TooLarge,
            codes::PAYLOAD_TOO_LARGE,
            format!(
                "{} files; at most {} per deployment (server setting max_files)",
                map.len(),
                app.config.max_files
            ),
        ));
    }
    for (path, hash) in map {
        if url_paths && !path.starts_with('/') {
            return Err(Error::bad_request(format!(
                "file path {path:?} must start with '/'"
            )));
        }
        validate_tree_path(path).map_err(Error::bad_request)?;
        check_hash(hash)?;
    }
    let hashes: Vec<String> = map.values().cloned().collect();
    let deleting = app.store.touch_blobs(&hashes).await?;
    let sizes = blob_sizes(app, hashes.into_iter()).await?;
    let mut missing: Vec<String> = sizes
        .iter()
        .filter(|(h, s)| s.is_none() || deleting.contains(h))
        .map(|(h, _)| h.clone())
        .collect();
    missing.dedup();
    if !missing.is_empty() {
        let mut e = Error::new(
            Kind::Conflict,
            codes::MISSING_FILES,
            format!(
                "{} files are not uploaded yet; PUT them to /v1/files/<sha256> and retry",
                missing.len()
            ),
        );
        e.missing = Some(missing);
        return Err(e);
    }
    check_total(app, map.values().map(|h| sizes[h].unwrap_or(0)))?;
    Ok(sizes
        .into_iter()
        .map(|(h, size)| (h, size.unwrap_or(0)))
        .collect())
}

/// Refuses a deployment whose files add up to more than `max_deployment_mb` (a blob
/// counted once per path: that is what a build restores and a visitor can fetch).
pub fn check_total(app: &App, sizes: impl Iterator<Item = u64>) -> Result<()> {
    let total: u64 = sizes.sum();
    let limit = app.config.max_deployment_bytes;
    if total > limit {
        return Err(Error::new(
            Kind::TooLarge,
            codes::PAYLOAD_TOO_LARGE,
            format!(
                "the deployment's files add up to {} MiB (a file counted once per path); at most {} MiB per deployment (server setting max_deployment_mb)",
                total.div_ceil(1 << 20),
                limit >> 20
            ),
        ));
    }
    Ok(())
}
