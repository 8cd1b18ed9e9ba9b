//! Files: `POST /v1/files/missing`, `PUT /v1/files/{hash}`, `POST /v1/files/batch`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use cdeploy_core::api::{self, codes};

use super::error::{ApiError, ApiJson};
use crate::service::blobs::{self, Stored};
use crate::service::App;

#[utoipa::path(post, path = "/v1/files/missing", tag = "files", request_body = api::MissingRequest, responses((status = 200, body = api::MissingResponse), super::openapi::Errors), security(("bearer" = [])))]
pub(crate) async fn missing_files(
    State(app): State<Arc<App>>,
    ApiJson(body): ApiJson<api::MissingRequest>,
) -> Result<Json<api::MissingResponse>, ApiError> {
    let missing = blobs::missing(&app, body.hashes).await?;
    Ok(Json(api::MissingResponse { missing }))
}

#[utoipa::path(put, path = "/v1/files/{hash}", tag = "files", params(("hash" = String, Path, description = "The SHA-256 of the body, in hex", pattern = r"^[0-9a-f]{64}$")), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes"), responses((status = 201, description = "Stored"), (status = 200, description = "Already stored"), super::openapi::Errors), security(("bearer" = [])))]
pub(super) async fn put_file(
    State(app): State<Arc<App>>,
    Path(hash): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    store_blob(&app, &hash, body).await
}

/// Stores an uploaded blob: `200` when it was stored already, `201` when new.
pub(crate) async fn store_blob(app: &App, hash: &str, body: Body) -> Result<StatusCode, ApiError> {
    Ok(
        match blobs::store_blob(app, hash, body.into_data_stream()).await? {
            Stored::Already => StatusCode::OK,
            Stored::New => StatusCode::CREATED,
        },
    )
}

#[utoipa::path(post, path = "/v1/files/batch", tag = "files", request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A tar archive (sent as `application/x-tar` or `application/octet-stream`: the body is read as a tar either way) of regular files, each named by the SHA-256 of its bytes (`<sha256>` or `./<sha256>`), with its end-of-archive marker"), responses((status = 200, body = api::BatchResponse), super::openapi::Errors), security(("bearer" = [])))]
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
    let response = blobs::store_batch(&app, body.into_data_stream()).await?;
    Ok(Json(response))
}
