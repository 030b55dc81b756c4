//! Batches of the OpenAI-compatible Batch API: the rows the API creates, reads and cancels.
//! The worker's steps (validation, finalization) are in `batch_runs`. Every lookup is by team,
//! so another team's batch is simply not found.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::batch_api::{BatchEnding, BatchEndpoint};
use crate::domain::status::BatchStatus;

/// A stored batch.
#[derive(Debug, Clone)]
pub struct BatchRow {
    pub batch_id: String,
    pub team_id: String,
    pub job_id: Option<Uuid>,
    pub endpoint: BatchEndpoint,
    pub input_file_id: String,
    pub completion_window: String,
    pub status: BatchStatus,
    /// How the batch is to end, once that is known and before it is finalized.
    pub ending: Option<BatchEnding>,
    /// OpenAI's `errors.data` items, when validation failed.
    pub errors: Option<serde_json::Value>,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub total_lines: i32,
    pub completed_lines: i32,
    pub failed_lines: i32,
    pub budget_slice_id: Option<Uuid>,
    pub usd_per_credit_micro: i64,
    pub created_at: DateTime<Utc>,
    pub in_progress_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub finalizing_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub expired_at: Option<DateTime<Utc>>,
    pub cancelling_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// `sqlx::query_as!` into [`BatchRow`], with the batch's column list between `$head` and
/// `$tail`. sqlx's macros take only string literals, so the list cannot be a constant; this keeps
/// it in one place: `query_batch!("select ", " from batches where batch_id = $1", batch_id)`.
macro_rules! query_batch {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $crate::db::batches::BatchRow,
            $head
                + r#"batch_id, team_id, job_id, endpoint as "endpoint: crate::domain::batch_api::BatchEndpoint",
                     input_file_id, completion_window,
                     status as "status: crate::domain::status::BatchStatus",
                     ending as "ending: crate::domain::batch_api::BatchEnding", errors, output_file_id,
                     error_file_id, metadata, total_lines, completed_lines, failed_lines,
                     budget_slice_id, usd_per_credit_micro, created_at, in_progress_at, expires_at,
                     finalizing_at, completed_at, failed_at, expired_at, cancelling_at, cancelled_at"#
                + $tail
            $(, $arg)*
        )
    };
}
pub(crate) use query_batch;

/// A new batch id: `batch_` and a time-ordered UUID, so ids sort by creation.
pub fn new_batch_id() -> String {
    format!("batch_{}", Uuid::now_v7().simple())
}

/// A batch to create, `validating` until a worker has read its file.
pub struct NewBatch<'a> {
    pub batch_id: &'a str,
    pub team_id: &'a str,
    pub endpoint: BatchEndpoint,
    pub input_file_id: &'a str,
    pub completion_window: &'a str,
    pub window_secs: f64,
    pub metadata: Option<&'a serde_json::Value>,
    pub usd_per_credit_micro: i64,
}

/// Inserts a batch; a worker takes it within a second.
pub async fn insert(conn: &mut PgConnection, batch: &NewBatch<'_>) -> sqlx::Result<BatchRow> {
    query_batch!(
        "insert into batches (batch_id, team_id, endpoint, input_file_id, completion_window, metadata,
             usd_per_credit_micro, expires_at)
         values ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))
         returning ",
        "",
        batch.batch_id,
        batch.team_id,
        batch.endpoint as BatchEndpoint,
        batch.input_file_id,
        batch.completion_window,
        batch.metadata,
        batch.usd_per_credit_micro,
        batch.window_secs
    )
    .fetch_one(conn)
    .await
}

find_team_row! { query_batch, BatchRow, " from batches where batch_id = $1 and team_id = $2" }

/// A page of the team's batches, newest first, after the batch `after`.
pub async fn list(
    db: impl PgExecutor<'_>,
    team_id: &str,
    after: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<BatchRow>> {
    query_batch!(
        "select ",
        " from batches
         where team_id = $1 and ($2::text is null or batch_id < $2)
         order by batch_id desc limit $3",
        team_id,
        after,
        limit
    )
    .fetch_all(db)
    .await
}

/// Progress of a running batch from its job's calls: lines that succeeded, and lines that
/// failed or were withdrawn.
pub async fn live_counts(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<(i64, i64)> {
    let counts = sqlx::query!(
        r#"select count(*) filter (where status = 'succeeded') as "succeeded!",
                count(*) filter (where status in ('failed', 'cancelled')) as "failed!"
         from llm_calls where job_id = $1"#,
        job_id
    )
    .fetch_one(db)
    .await?;
    Ok((counts.succeeded, counts.failed))
}

/// What a cancel request found.
pub enum Cancel {
    /// The batch is now cancelling (or already was); its queued lines were withdrawn.
    Cancelling(BatchRow),
    /// The batch has ended; nothing changed.
    Ended(BatchRow),
    NotFound,
}

/// Starts cancelling the team's batch: validating or in_progress -> cancelling, and its queued
/// lines withdrawn in the same transaction (they never run and cost nothing). Lines running
/// finish; a worker then writes the files and ends the batch `cancelled`. Repeating it changes
/// nothing.
pub async fn cancel(
    conn: &mut PgConnection,
    team_id: &str,
    batch_id: &str,
) -> sqlx::Result<Cancel> {
    let cancelling = query_batch!(
        "update batches set status = 'cancelling', ending = 'cancelled', cancelling_at = now(), updated_at = now()
         where batch_id = $1 and team_id = $2 and status in ('validating', 'in_progress')
         returning ",
        "",
        batch_id,
        team_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(batch) = cancelling else {
        return Ok(match find(&mut *conn, team_id, batch_id).await? {
            None => Cancel::NotFound,
            Some(batch) if batch.status.is_ended() => Cancel::Ended(batch),
            Some(batch) => Cancel::Cancelling(batch),
        });
    };
    if let Some(job_id) = batch.job_id {
        withdraw_queued_lines(
            &mut *conn,
            job_id,
            "batch_cancelled",
            "the batch was cancelled before this line ran",
        )
        .await?;
    }
    Ok(Cancel::Cancelling(batch))
}

/// Withdraws a batch job's queued lines (they never run; their queue entries are dropped by the
/// claim), locked in `call_id` order as a worker's batch claim locks them. Returns how many.
pub async fn withdraw_queued_lines(
    conn: &mut PgConnection,
    job_id: Uuid,
    code: &str,
    message: &str,
) -> sqlx::Result<u64> {
    let withdrawn = sqlx::query!(
        "update llm_calls set status = 'cancelled', error = $3, error_code = $2, finished_at = now()
         where call_id in (
             select call_id from llm_calls where job_id = $1 and status = 'queued'
             order by call_id for update)
           and status = 'queued'",
        job_id,
        code,
        message
    )
    .execute(conn)
    .await?;
    Ok(withdrawn.rows_affected())
}
