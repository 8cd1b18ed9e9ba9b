//! A build's credentials on its deployment's row: the ECS task that runs it, its one-time
//! claim and, once the claim is spent, its capability (both kept as SHA-256 hashes; the
//! capability is valid only while the deployment runs).

use sqlx::AnyPool;

use super::deployments::RUNNING;
use super::DbResult;

pub(super) async fn set_task(pool: &AnyPool, id: &str, task: &str) -> DbResult<()> {
    sqlx::query("UPDATE deployments SET task = $1 WHERE id = $2")
        .bind(task)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn set_claim(pool: &AnyPool, id: &str, claim_hash: &str) -> DbResult<()> {
    sqlx::query("UPDATE deployments SET claim_hash = $1 WHERE id = $2")
        .bind(claim_hash)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn claim(
    pool: &AnyPool,
    id: &str,
    claim_hash: &str,
    token_hash: &str,
) -> DbResult<bool> {
    let r = sqlx::query(&format!(
        "UPDATE deployments SET build_token_hash = $1 \
         WHERE id = $2 AND claim_hash = $3 AND build_token_hash IS NULL AND status IN {RUNNING}"
    ))
    .bind(token_hash)
    .bind(id)
    .bind(claim_hash)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub(super) async fn token_valid(pool: &AnyPool, id: &str, token_hash: &str) -> DbResult<bool> {
    count_one(
        pool,
        &format!(
            "SELECT COUNT(*) FROM deployments WHERE id = $1 AND build_token_hash = $2 \
             AND status IN {RUNNING}"
        ),
        id,
        token_hash,
    )
    .await
}

pub(super) async fn claim_spent(pool: &AnyPool, id: &str, claim_hash: &str) -> DbResult<bool> {
    count_one(
        pool,
        "SELECT COUNT(*) FROM deployments WHERE id = $1 AND claim_hash = $2 \
         AND build_token_hash IS NOT NULL",
        id,
        claim_hash,
    )
    .await
}

pub(super) async fn claim_matches(pool: &AnyPool, id: &str, claim_hash: &str) -> DbResult<bool> {
    count_one(
        pool,
        "SELECT COUNT(*) FROM deployments WHERE id = $1 AND claim_hash = $2",
        id,
        claim_hash,
    )
    .await
}

/// Whether a `COUNT(*)` of deployment `id` with a matching hash finds it.
async fn count_one(pool: &AnyPool, sql: &str, id: &str, hash: &str) -> DbResult<bool> {
    let n: i64 = sqlx::query_scalar(sql)
        .bind(id)
        .bind(hash)
        .fetch_one(pool)
        .await?;
    Ok(n == 1)
}
