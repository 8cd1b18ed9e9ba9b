//! Uploading the blobs the server lacks: one missing check, then small files in batch
//! archives (`POST /v1/files/batch`) and large ones alone, a few requests at a time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cdeploy_core::api::{self, codes};
use cdeploy_core::batch;
use futures_util::StreamExt;
use reqwest::Method;

use crate::client::{ApiFailure, Client};
use crate::exit::CliError;
use crate::files::{self, FileSet};
use crate::printer::Renderer;

/// One request of an upload: many small files in a batch archive, or one large file.
enum Upload<'a> {
    Batch(Vec<&'a files::LocalFile>),
    Single(&'a files::LocalFile),
}

impl Upload<'_> {
    fn bytes(&self) -> u64 {
        match self {
            Upload::Batch(files) => files.iter().map(|f| f.size).sum(),
            Upload::Single(f) => f.size,
        }
    }
}

/// Groups files into requests: batches close at [`batch::CLIENT_BATCH_BYTES`] or
/// [`batch::CLIENT_BATCH_FILES`]; a file over [`batch::CLIENT_BATCH_MEMBER_MAX`] goes
/// alone. A deployment at the server's limits (100,000 files, 1 GiB) takes a few hundred
/// requests at most, far inside the per-token rate limit.
fn plan_uploads(todo: Vec<&files::LocalFile>) -> Vec<Upload<'_>> {
    let mut uploads = Vec::new();
    let mut batch: Vec<&files::LocalFile> = Vec::new();
    let mut batch_bytes = 0;
    for f in todo {
        if f.size > batch::CLIENT_BATCH_MEMBER_MAX {
            uploads.push(Upload::Single(f));
            continue;
        }
        if !batch.is_empty()
            && (batch_bytes + f.size > batch::CLIENT_BATCH_BYTES
                || batch.len() >= batch::CLIENT_BATCH_FILES)
        {
            uploads.push(Upload::Batch(std::mem::take(&mut batch)));
            batch_bytes = 0;
        }
        batch_bytes += f.size;
        batch.push(f);
    }
    if !batch.is_empty() {
        uploads.push(Upload::Batch(batch));
    }
    uploads
}

/// The body of an upload request, read from disk off the async threads.
async fn upload_body(upload: &Upload<'_>) -> Result<Vec<u8>, CliError> {
    let files: Vec<(String, PathBuf)> = match upload {
        Upload::Batch(files) => files
            .iter()
            .map(|f| (f.hash.clone(), f.path.clone()))
            .collect(),
        Upload::Single(f) => vec![(f.hash.clone(), f.path.clone())],
    };
    let single = matches!(upload, Upload::Single(_));
    tokio::task::spawn_blocking(move || {
        let read = |path: &Path| {
            std::fs::read(path)
                .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))
        };
        if single {
            return read(&files[0].1);
        }
        let mut archive = tar::Builder::new(Vec::new());
        for (hash, path) in &files {
            batch::append(&mut archive, hash, &read(path)?)
                .map_err(|e| CliError::usage(format!("cannot archive {}: {e}", path.display())))?;
        }
        archive
            .into_inner()
            .map_err(|e| CliError::usage(format!("cannot finish an upload archive: {e}")))
    })
    .await
    .map_err(|e| CliError::usage(format!("reading the files failed: {e}")))?
}

/// Uploads the blobs the server lacks (`only` narrows to a known list): small files in
/// batch archives, large ones alone, four requests at a time.
pub async fn upload_missing(
    client: &Client,
    renderer: &Renderer,
    set: &FileSet,
    only: Option<Vec<String>>,
) -> Result<(), CliError> {
    let missing = match only {
        Some(m) => m,
        None => {
            let mut hashes: Vec<String> = set.values().map(|f| f.hash.clone()).collect();
            hashes.sort();
            hashes.dedup();
            let r: api::MissingResponse = client
                .post("/v1/files/missing", &api::MissingRequest { hashes })
                .await?;
            r.missing
        }
    };
    if missing.is_empty() {
        return Ok(());
    }
    let by_hash: std::collections::HashMap<&str, &files::LocalFile> =
        set.values().map(|f| (f.hash.as_str(), f)).collect();
    let todo: Vec<&files::LocalFile> = missing
        .iter()
        .filter_map(|h| by_hash.get(h.as_str()).copied())
        .collect();
    let total: u64 = todo.iter().map(|f| f.size).sum();
    let bar = renderer.local_bar("uploading", total);
    client.show_waits_on(Some(bar.clone()));
    let results: Vec<Result<(), CliError>> = futures_util::stream::iter(plan_uploads(todo))
        .map(|upload| {
            let bar = bar.clone();
            async move {
                send(client, &upload).await?;
                bar.inc(upload.bytes());
                Ok(())
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    client.show_waits_on(None);
    bar.finish_and_clear();
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(())
}

/// Sends one upload, retrying twice on a failure to get an answer (not on an API error).
async fn send(client: &Client, upload: &Upload<'_>) -> Result<(), CliError> {
    let body = upload_body(upload).await?;
    let path = match upload {
        Upload::Batch(_) => "/v1/files/batch".to_string(),
        Upload::Single(f) => format!("/v1/files/{}", f.hash),
    };
    let method = match upload {
        Upload::Batch(_) => Method::POST,
        Upload::Single(_) => Method::PUT,
    };
    // In memory, so each attempt resends it without a copy.
    let request = client
        .request(method, &path)
        .header(reqwest::header::CONTENT_TYPE, content_type(upload))
        .body(body);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let rb = request.try_clone().expect("an in-memory body");
        match client.send_raw::<serde_json::Value>(rb).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(failure)) => return Err(upload_failure(client, upload, failure)),
            Err(e) if attempt < 3 && e.code != "unreachable" => {
                tokio::time::sleep(Duration::from_millis(300 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn content_type(upload: &Upload<'_>) -> &'static str {
    match upload {
        Upload::Batch(_) => batch::CONTENT_TYPE,
        Upload::Single(_) => "application/octet-stream",
    }
}

/// An upload's API failure; a file whose bytes no longer match the hash taken when the
/// folder was read is named by its path.
fn upload_failure(client: &Client, upload: &Upload<'_>, failure: ApiFailure) -> CliError {
    let changed = failure
        .body
        .as_ref()
        .filter(|b| b.error.code == codes::HASH_MISMATCH)
        .and_then(|b| {
            let files: &[&files::LocalFile] = match upload {
                Upload::Batch(files) => files,
                Upload::Single(f) => std::slice::from_ref(f),
            };
            files
                .iter()
                .find(|f| b.error.message.contains(&f.hash))
                .copied()
        });
    match changed {
        Some(f) => CliError::usage(format!(
            "{} changed while it was being deployed",
            f.path.display()
        ))
        .with_hint("deploy again once nothing writes to the folder"),
        None => client.failure(failure),
    }
}
