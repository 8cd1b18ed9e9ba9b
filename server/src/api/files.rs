//! Files: `POST /v1/files/missing`, `PUT /v1/files/{hash}`; the checks shared with the
//! builder API (hashes, file maps, sizes) and upload spooling.

use super::*;

pub(crate) fn check_hash(h: &str) -> Result<(), ApiError> {
    if cdeploy_core::is_sha256_hex(h) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{h:?} is not a SHA-256 hash (64 lowercase hex characters)"
        )))
    }
}

/// Sizes of the given blobs (`None`: not stored).
pub(crate) async fn blob_sizes(
    app: &App,
    hashes: impl Iterator<Item = String>,
) -> Result<BTreeMap<String, Option<u64>>, ApiError> {
    let mut unique: Vec<String> = hashes.collect();
    unique.sort();
    unique.dedup();
    let keys: Vec<String> = unique.iter().map(|h| layout::blob(h)).collect();
    let sizes = app.storage.sizes(&keys).await?;
    Ok(unique.into_iter().zip(sizes).collect())
}

/// The hashes storage does not have yet, sorted.
pub(crate) async fn find_missing(
    app: &App,
    hashes: impl Iterator<Item = String>,
) -> Result<Vec<String>, ApiError> {
    let sizes = blob_sizes(app, hashes).await?;
    Ok(sizes
        .into_iter()
        .filter(|(_, size)| size.is_none())
        .map(|(h, _)| h)
        .collect())
}

#[utoipa::path(post, path = "/v1/files/missing", tag = "files", request_body = api::MissingRequest, responses((status = 200, body = api::MissingResponse), crate::openapi::Errors), security(("bearer" = [])))]
pub(crate) async fn missing_files(
    State(app): State<Arc<App>>,
    ApiJson(body): ApiJson<api::MissingRequest>,
) -> Result<Json<api::MissingResponse>, ApiError> {
    if body.hashes.len() > app.config.max_files {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            format!(
                "{} hashes; at most {} per request, the most files a deployment may have (server setting max_files)",
                body.hashes.len(),
                app.config.max_files
            ),
        ));
    }
    for h in &body.hashes {
        check_hash(h)?;
    }
    // Blobs garbage collection is deleting right now count as missing.
    let deleting = app.store.touch_blobs(&body.hashes).await?;
    let mut missing = find_missing(&app, body.hashes.into_iter()).await?;
    missing.extend(deleting);
    missing.sort();
    missing.dedup();
    Ok(Json(api::MissingResponse { missing }))
}

#[utoipa::path(put, path = "/v1/files/{hash}", tag = "files", params(("hash" = String, Path, description = "The SHA-256 of the body, in hex", pattern = r"^[0-9a-f]{64}$")), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes"), responses((status = 201, description = "Stored"), (status = 200, description = "Already stored"), crate::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn put_file(
    State(app): State<Arc<App>>,
    Path(hash): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    store_blob(&app, &hash, body).await
}

/// Stores an uploaded blob after checking its bytes against its hash (storage checks
/// again as it writes). `200` when it was stored already, `201` when new.
///
/// The body streams to a private temporary file while it is hashed, then storage takes
/// the file: a large upload never sits in memory.
pub(crate) async fn store_blob(app: &App, hash: &str, body: Body) -> Result<StatusCode, ApiError> {
    check_hash(hash)?;
    // Read the whole body first: answering before it is read would break the
    // client's send.
    let tmp = spool(app, body, app.config.max_file_bytes as u64, "a file").await?;
    if tmp.hash != *hash {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::HASH_MISMATCH,
            format!("the body hashes to {}, not {hash}", tmp.hash),
        ));
    }
    let key = layout::blob(hash);
    wait_for_gc(app, std::slice::from_ref(&hash.to_string())).await?;
    if app.storage.exists(&key).await? {
        return Ok(StatusCode::OK);
    }
    app.storage.put_file(&key, &tmp.file).await?;
    app.lifecycle.metrics.blobs_uploaded.inc();
    app.lifecycle.metrics.blob_bytes_uploaded.inc_by(tmp.len);
    Ok(StatusCode::CREATED)
}

/// Garbage collection may be deleting some of these blobs this very moment: touches
/// them (so it leaves them alone from now on) and lets a deletion under way finish, so
/// they can be stored again.
async fn wait_for_gc(app: &App, hashes: &[String]) -> Result<(), ApiError> {
    let mut waited = 0;
    let mut deleting = app.store.touch_blobs(hashes).await?;
    // Touched now, all of them: from here on only those being deleted are asked again.
    while !deleting.is_empty() {
        waited += 1;
        if waited > 100 {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::UNAVAILABLE,
                "these files are being garbage-collected; retry",
            );
            e.retry_after = Some(5);
            return Err(e);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        deleting = app.store.touch_blobs(&deleting).await?;
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/files/batch", tag = "files", request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A tar archive (sent as `application/x-tar` or `application/octet-stream`: the body is read as a tar either way) of regular files, each named by the SHA-256 of its bytes (`<sha256>` or `./<sha256>`), with its end-of-archive marker"), responses((status = 200, body = api::BatchResponse), crate::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn put_batch(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<api::BatchResponse>, ApiError> {
    // Compression is not spoken here: a compressed archive would only fail as a
    // damaged one, so say what is wrong instead.
    if let Some(enc) = headers.get(axum::http::header::CONTENT_ENCODING) {
        if !enc.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                codes::BAD_REQUEST,
                format!(
                    "Content-Encoding {:?} is not accepted here: send the tar archive uncompressed",
                    String::from_utf8_lossy(enc.as_bytes())
                ),
            ));
        }
    }
    store_batch(&app, body).await.map(Json)
}

/// Stores every blob of a batch archive (see [`cdeploy_core::batch`]), or none: the
/// whole archive is read and checked (members against their hashes, the per-file,
/// per-deployment and file-count limits) before the first blob is stored.
pub(crate) async fn store_batch(app: &App, body: Body) -> Result<api::BatchResponse, ApiError> {
    use cdeploy_core::batch::{self, BatchError, Content, Member};
    let dir = app.config.data_dir.join("tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::internal("cannot create the upload folder", e))?;
    let spool = tempfile::Builder::new()
        .prefix("batch-")
        .tempdir_in(&dir)
        .map_err(|e| ApiError::internal("cannot create an upload folder", e))?;
    let limits = batch::Limits {
        max_member_bytes: app.config.max_file_bytes as u64,
        max_total_bytes: app.config.max_deployment_bytes,
        max_members: app.config.max_files,
        memory: Some(app.batch_memory.clone()),
    };
    let stream = body
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other));
    let mut reader = tokio_util::io::StreamReader::new(stream);
    let members = match batch::read(&mut reader, &limits, spool.path()).await {
        Ok(m) => m,
        Err(e) => {
            // Removing a folder of many spooled files is blocking work.
            tokio::task::spawn_blocking(move || drop(spool));
            // Read what is left (within reason) so the client gets the answer rather
            // than a reset connection while it is still sending.
            let mut sink = tokio::io::sink();
            let rest = tokio::io::AsyncReadExt::take(&mut reader, DRAIN_ON_ERROR);
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                tokio::io::copy(&mut { rest }, &mut sink),
            )
            .await;
            let too_large = |message: String| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    codes::PAYLOAD_TOO_LARGE,
                    message,
                )
            };
            return Err(match e {
                BatchError::MemberTooLarge { name, size, .. } => too_large(format!(
                    "member {name} is {size} bytes; a file may be at most {} MiB (server setting max_file_mb)",
                    app.config.max_file_bytes >> 20
                )),
                BatchError::TotalTooLarge { .. } => too_large(format!(
                    "the batch's files add up to more than {} MiB, the most a deployment may have (server setting max_deployment_mb)",
                    app.config.max_deployment_bytes >> 20
                )),
                BatchError::TooManyMembers { max } => too_large(format!(
                    "more than {max} files in one batch; a deployment may have at most {max} (server setting max_files)"
                )),
                BatchError::HashMismatch { .. } => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    codes::HASH_MISMATCH,
                    format!("{e}; nothing of this batch was stored"),
                ),
                BatchError::Spool(io) => ApiError::internal("cannot spool a batch upload", io),
                BatchError::Malformed(_) | BatchError::Read(_) => {
                    ApiError::bad_request(format!("{e}; nothing of this batch was stored"))
                }
            });
        }
    };
    let received = members.len();
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
        .collect::<Result<Vec<()>, _>>()?;
    let metrics = &app.lifecycle.metrics;
    metrics.blobs_uploaded.inc_by(stored as u64);
    metrics.blob_bytes_uploaded.inc_by(stored_bytes);
    tokio::task::spawn_blocking(move || drop(spool));
    Ok(api::BatchResponse {
        received,
        stored,
        stored_bytes,
    })
}

/// How much of a refused upload is still read so its client gets the answer.
const DRAIN_ON_ERROR: u64 = 64 << 20;

/// An upload written to a temporary file (deleted when dropped).
pub(crate) struct Spooled {
    pub(crate) file: tempfile::TempPath,
    hash: String,
    len: u64,
}

/// Writes a request body to `<data-dir>/tmp`, hashing it on the way and refusing it
/// past `limit` bytes (`what`, e.g. "a file", names it in the error).
pub(crate) async fn spool(
    app: &App,
    body: Body,
    limit: u64,
    what: &str,
) -> Result<Spooled, ApiError> {
    use sha2::Digest;
    use tokio::io::AsyncWriteExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            format!("{what} may be at most {} MiB", limit / (1024 * 1024)),
        )
    };
    let dir = app.config.data_dir.join("tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::internal("cannot create the upload folder", e))?;
    let path = tempfile::Builder::new()
        .prefix("upload-")
        .tempfile_in(&dir)
        .map_err(|e| ApiError::internal("cannot create an upload file", e))?
        .into_temp_path();
    let mut out = tokio::fs::File::create(&path)
        .await
        .map_err(|e| ApiError::internal("cannot write an upload file", e))?;
    let mut hasher = sha2::Sha256::new();
    let mut len = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the upload failed: {e}")))?;
        len += chunk.len() as u64;
        if len > limit {
            return Err(too_large());
        }
        hasher.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal("cannot write an upload file", e))?;
    }
    out.flush()
        .await
        .map_err(|e| ApiError::internal("cannot write an upload file", e))?;
    Ok(Spooled {
        file: path,
        hash: hex::encode(hasher.finalize()),
        len,
    })
}

/// Checks a path → hash map of a source or prebuilt upload; answers `409 missing_files`
/// when blobs are not stored yet, else returns each blob's size.
pub(crate) async fn check_file_map(
    app: &App,
    map: &BTreeMap<String, String>,
    url_paths: bool,
) -> Result<BTreeMap<String, u64>, ApiError> {
    if map.is_empty() {
        return Err(ApiError::bad_request("the file list is empty"));
    }
    if map.len() > app.config.max_files {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
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
            return Err(ApiError::bad_request(format!(
                "file path {path:?} must start with '/'"
            )));
        }
        validate_tree_path(path).map_err(ApiError::bad_request)?;
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
        let mut e = ApiError::new(
            StatusCode::CONFLICT,
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
pub(crate) fn check_total(app: &App, sizes: impl Iterator<Item = u64>) -> Result<(), ApiError> {
    let total: u64 = sizes.sum();
    let limit = app.config.max_deployment_bytes;
    if total > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
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
