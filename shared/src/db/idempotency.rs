//! Idempotency records: the first response to a request carrying an `Idempotency-Key`, replayed
//! to retries of the same request.

use sqlx::PgExecutor;

/// What a request with a key finds.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// First time: this request runs and must `complete` or `abandon` the record.
    Started,
    /// A previous identical request finished with this response.
    Replay {
        status: i32,
        body: serde_json::Value,
    },
    /// An identical request is running right now.
    InProgress,
    /// The key was used with a different request.
    Mismatch,
}

/// Claims the key for this request, or reports what an earlier request with it left.
pub async fn begin(
    db: impl PgExecutor<'_> + Copy,
    scope: &str,
    key: &str,
    request_hash: &[u8],
) -> sqlx::Result<Lookup> {
    let inserted = sqlx::query!(
        "insert into idempotency_records (scope, idempotency_key, request_hash) values ($1, $2, $3)
         on conflict (scope, idempotency_key) do nothing",
        scope,
        key,
        request_hash
    )
    .execute(db)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Lookup::Started);
    }
    let row = sqlx::query!(
        "select request_hash, response_status, response_body from idempotency_records
         where scope = $1 and idempotency_key = $2",
        scope,
        key
    )
    .fetch_optional(db)
    .await?
    .map(|r| (r.request_hash, r.response_status, r.response_body));
    Ok(match row {
        // Abandoned between our insert and our read: treat as in progress; the caller retries.
        None => Lookup::InProgress,
        Some((hash, _, _)) if hash != request_hash => Lookup::Mismatch,
        Some((_, Some(status), Some(body))) => Lookup::Replay { status, body },
        Some(_) => Lookup::InProgress,
    })
}

/// Stores the response of the request that claimed the key.
pub async fn complete(
    db: impl PgExecutor<'_>,
    scope: &str,
    key: &str,
    status: i32,
    body: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query!(
        "update idempotency_records set response_status = $3, response_body = $4
         where scope = $1 and idempotency_key = $2",
        scope,
        key,
        status,
        body
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Frees the key after a failure that a retry should not see replayed (5xx).
pub async fn abandon(db: impl PgExecutor<'_>, scope: &str, key: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "delete from idempotency_records where scope = $1 and idempotency_key = $2 and response_status is null",
        scope,
        key
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes records older than `max_age_secs`.
pub async fn purge_older_than(db: impl PgExecutor<'_>, max_age_secs: f64) -> sqlx::Result<u64> {
    let result = sqlx::query!(
        "delete from idempotency_records where created_at < now() - make_interval(secs => $1)",
        max_age_secs
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}
