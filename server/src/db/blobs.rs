//! Garbage collection's record of blobs: when each was last referenced (an upload's
//! check touches it) and whether it is being deleted. A touch and a claim for deletion
//! serialize on the blob's one row, so whichever comes second sees the first.

use sqlx::AnyPool;

use super::backend::Backend;
use super::{now_us, DbResult};

/// Touches the blobs of a JSON array of hashes (`$2`) at `$1`; returns each one's
/// `deleting` flag. The one statement whose SQL differs: each backend expands the array
/// its own way.
fn touch_statement(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "INSERT INTO blob_state (hash, touched_at, deleting) \
             SELECT value, $1, 0 FROM json_each($2) WHERE true \
             ON CONFLICT (hash) DO UPDATE SET touched_at = excluded.touched_at \
             RETURNING hash, deleting"
        }
        Backend::Postgres => {
            "INSERT INTO blob_state (hash, touched_at, deleting) \
             SELECT value, $1::bigint, 0 FROM json_array_elements_text($2::json) \
             ON CONFLICT (hash) DO UPDATE SET touched_at = excluded.touched_at \
             RETURNING hash, deleting"
        }
    }
}

pub(super) async fn touch(
    pool: &AnyPool,
    backend: Backend,
    hashes: &[String],
) -> DbResult<Vec<String>> {
    // One statement per 10,000 blobs (their hashes as one JSON array): a deployment of
    // many files is checked twice, and a round trip per blob cost a 10,000-file redeploy
    // most of its time. Duplicates go first (Postgres refuses to update a row twice in
    // one statement).
    let mut unique: Vec<&String> = hashes.iter().collect();
    unique.sort_unstable();
    unique.dedup();
    let now = now_us();
    let mut deleting = Vec::new();
    let mut tx = pool.begin().await?;
    for chunk in unique.chunks(10_000) {
        let list = serde_json::to_string(chunk).expect("strings serialize");
        let rows: Vec<(String, i64)> = sqlx::query_as(touch_statement(backend))
            .bind(now)
            .bind(list)
            .fetch_all(&mut *tx)
            .await?;
        deleting.extend(rows.into_iter().filter(|(_, d)| *d != 0).map(|(h, _)| h));
    }
    tx.commit().await?;
    Ok(deleting)
}

pub(super) async fn claim_for_deletion(
    pool: &AnyPool,
    hash: &str,
    cutoff_us: i64,
) -> DbResult<bool> {
    let claimed: Option<String> = sqlx::query_scalar(
        "INSERT INTO blob_state (hash, touched_at, deleting) VALUES ($1, 0, 1) \
         ON CONFLICT (hash) DO UPDATE SET deleting = 1 \
         WHERE blob_state.touched_at < $2 AND blob_state.deleting = 0 \
         RETURNING hash",
    )
    .bind(hash)
    .bind(cutoff_us)
    .fetch_optional(pool)
    .await?;
    Ok(claimed.is_some())
}

pub(super) async fn release(pool: &AnyPool, hash: &str) -> DbResult<()> {
    sqlx::query("DELETE FROM blob_state WHERE hash = $1 AND deleting = 1")
        .bind(hash)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn prune_touches(pool: &AnyPool, cutoff_us: i64) -> DbResult<()> {
    sqlx::query("DELETE FROM blob_state WHERE touched_at < $1 AND deleting = 0")
        .bind(cutoff_us)
        .execute(pool)
        .await?;
    Ok(())
}
