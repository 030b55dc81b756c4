//! The worker's side of a batch: turning a validated file into the job and calls that run it,
//! reserving the lines' estimates against the team's USD budget, expiring it, and moving it to
//! finalizing once every line has finished (`batch_endings` ends it). Each step is a guarded
//! update on the batch row, so any number of workers may run them.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::batches::{BatchRow, query_batch};
use super::budget_slices;
use crate::domain::status::{BatchStatus, CallEndpoint};

/// Takes the oldest batch waiting for validation that no live worker is validating: it is
/// stamped as taken (and committed at once), and validated without holding its row, so a
/// cancel request never waits behind a long validation. A worker that dies while validating
/// leaves the stamp, and another takes the batch over after `takeover_secs`.
pub async fn take_validating(
    db: impl PgExecutor<'_>,
    takeover_secs: f64,
) -> sqlx::Result<Option<BatchRow>> {
    query_batch!(
        "update batches set validation_taken_at = now()
         where batch_id = (
             select batch_id from batches
             where status = 'validating'
               and (validation_taken_at is null
                    or validation_taken_at < now() - make_interval(secs => $1))
             order by created_at limit 1 for update skip locked)
         returning ",
        "",
        takeover_secs
    )
    .fetch_optional(db)
    .await
}

/// validating -> failed, with OpenAI's `errors.data` items.
pub async fn fail(
    conn: &mut PgConnection,
    batch_id: &str,
    errors: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query!(
        "update batches set status = 'failed', errors = $2, failed_at = now(), updated_at = now()
         where batch_id = $1 and status = 'validating'",
        batch_id,
        errors
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts the job a batch runs as. It holds no credit: a batch is paid by its lines' USD
/// cost, like every request of the OpenAI-compatible path. Its expiry is after the batch's,
/// which the batch's own steps enforce.
pub async fn insert_job(
    conn: &mut PgConnection,
    job_id: Uuid,
    batch: &BatchRow,
) -> sqlx::Result<()> {
    // `$6::timestamptz`: alone, PostgreSQL would read `$6 + interval` as interval arithmetic.
    sqlx::query!(
        "insert into jobs (job_id, team_id, job_type, status, credit_hold, metadata, expires_at)
         values ($1, $2, $3, 'in_progress', 'released',
                 jsonb_build_object('batch_id', $4::text, 'input_file_id', $5::text),
                 $6::timestamptz + interval '1 day')",
        job_id,
        batch.team_id,
        BATCH_JOB_TYPE,
        batch.batch_id,
        batch.input_file_id,
        batch.expires_at
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The job type of every batch's job; the job API refuses to create jobs of it and to change
/// such jobs (a batch is cancelled through `/v1/batches`).
pub const BATCH_JOB_TYPE: &str = "openai_batch";

/// A line of a batch, stored as a call of its job.
pub struct Line<'a> {
    pub custom_id: &'a str,
    /// The model or model group the line names (empty when it names none).
    pub model_group: &'a str,
    pub model_group_id: Option<Uuid>,
    /// `[[model, config]]` when the line names a model directly.
    pub model_chain: Option<serde_json::Value>,
    pub request: serde_json::Value,
    /// The estimate reserved for it; `None` for a line refused before it ran.
    pub budget_micro_usd: Option<i64>,
    /// Why it was refused (OpenAI's code and message), or `None` for a line to run.
    pub refused: Option<(&'a str, String)>,
}

/// Inserts the lines in one statement, in order, with time-ordered ids: lines to run are
/// `queued`, refused ones `failed` with their code. Returns the ids of the lines to run.
pub async fn insert_lines(
    conn: &mut PgConnection,
    job_id: Uuid,
    team_id: &str,
    endpoint: CallEndpoint,
    lines: &[Line<'_>],
) -> sqlx::Result<Vec<Uuid>> {
    let ids: Vec<Uuid> = lines.iter().map(|_| Uuid::now_v7()).collect();
    let custom_ids: Vec<&str> = lines.iter().map(|l| l.custom_id).collect();
    let groups: Vec<&str> = lines.iter().map(|l| l.model_group).collect();
    let group_ids: Vec<Option<Uuid>> = lines.iter().map(|l| l.model_group_id).collect();
    let chains: Vec<Option<&serde_json::Value>> =
        lines.iter().map(|l| l.model_chain.as_ref()).collect();
    let requests: Vec<&serde_json::Value> = lines.iter().map(|l| &l.request).collect();
    let budgets: Vec<Option<i64>> = lines.iter().map(|l| l.budget_micro_usd).collect();
    let codes: Vec<Option<&str>> = lines
        .iter()
        .map(|l| l.refused.as_ref().map(|(code, _)| *code))
        .collect();
    let messages: Vec<Option<&str>> = lines
        .iter()
        .map(|l| l.refused.as_ref().map(|(_, message)| message.as_str()))
        .collect();
    // Typed overrides on the arrays: sqlx checks an array parameter only as a slice of owned,
    // non-null values (`&[String]`, `&[i64]`), and these hold borrowed or nullable ones.
    sqlx::query!(
        "insert into llm_calls (call_id, job_id, team_id, endpoint, custom_id, model_group, model_group_id,
             model_chain, request, budget_micro_usd, status, error_code, error, finished_at)
         select id, $2, $3, $4, c, g, gid, chain, r, budget,
                case when code is null then 'queued' else 'failed' end, code, message,
                case when code is null then null else now() end
         from unnest($1::uuid[], $5::text[], $6::text[], $7::uuid[], $8::jsonb[], $9::jsonb[],
                     $10::int8[], $11::text[], $12::text[])
              as t(id, c, g, gid, chain, r, budget, code, message)",
        &ids,
        job_id,
        team_id,
        endpoint as CallEndpoint,
        &custom_ids as &[&str],
        &groups as &[&str],
        &group_ids as &[Option<Uuid>],
        &chains as &[Option<&serde_json::Value>],
        &requests as &[&serde_json::Value],
        &budgets as &[Option<i64>],
        &codes as &[Option<&str>],
        &messages as &[Option<&str>]
    )
    .execute(conn)
    .await?;
    Ok(ids
        .into_iter()
        .zip(lines)
        .filter(|(_, line)| line.refused.is_none())
        .map(|(id, _)| id)
        .collect())
}

/// What is free of the team's USD budget, with its balance row locked until commit (`None`
/// when the team has no balance row).
pub async fn lock_free_budget(
    conn: &mut PgConnection,
    team_id: &str,
    usd_per_credit_micro: i64,
) -> sqlx::Result<Option<i64>> {
    // The same statement as the budget slices of the API (`budget_slices::take`).
    let room = budget_slices::lock_room(conn, team_id, usd_per_credit_micro).await?;
    Ok(room.map(|room| room.free))
}

/// Reserves `amount` of the team's budget in a slice held by the batch until it ends (the
/// slice outlives the batch's window by a day: if no worker ever ends the batch, the reconciler
/// returns it). The caller holds the balance row (`lock_free_budget`).
pub async fn reserve(
    conn: &mut PgConnection,
    batch: &BatchRow,
    slice_id: Uuid,
    amount: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "update credit_balances set budget_reserved_micro_usd = budget_reserved_micro_usd + $2, updated_at = now()
         where team_id = $1",
        batch.team_id,
        amount
    )
    .execute(&mut *conn)
    .await?;
    // `$5::timestamptz`: alone, PostgreSQL would read `$5 + interval` as interval arithmetic.
    sqlx::query!(
        "insert into budget_slices (slice_id, team_id, holder, reserved_micro_usd, expires_at)
         values ($1, $2, $3, $4, $5::timestamptz + interval '1 day')",
        slice_id,
        batch.team_id,
        format!("batch {}", batch.batch_id),
        amount,
        batch.expires_at
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Lines the budget could not cover: queued -> failed with `insufficient_quota`.
pub async fn refuse_for_budget(conn: &mut PgConnection, call_ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query!(
        "update llm_calls set status = 'failed', error_code = 'insufficient_quota', budget_micro_usd = null,
             error = 'the team''s budget could not cover this line''s estimated cost', finished_at = now()
         where call_id = any($1) and status = 'queued'",
        call_ids
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// validating -> in_progress with its job and slice; straight to finalizing when no line is
/// left to run. False when the batch is no longer validating (cancelled meanwhile): the caller
/// rolls back what it inserted.
pub async fn start(
    conn: &mut PgConnection,
    batch_id: &str,
    job_id: Uuid,
    total_lines: i32,
    slice_id: Option<Uuid>,
    runnable: bool,
) -> sqlx::Result<bool> {
    sqlx::query!(
        "update batches set job_id = $2, total_lines = $3, budget_slice_id = $4, in_progress_at = clock_timestamp(),
             status = case when $5 then 'in_progress' else 'finalizing' end,
             ending = case when $5 then ending else 'completed' end,
             finalizing_at = case when $5 then null else clock_timestamp() end, updated_at = now()
         where batch_id = $1 and status = 'validating'",
        batch_id,
        job_id,
        total_lines,
        slice_id,
        runnable
    )
    .execute(conn)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// A batch a worker step may move: running, cancelling or finalizing.
#[derive(Debug, Clone)]
pub struct ActiveBatch {
    pub batch_id: String,
    pub job_id: Option<Uuid>,
    pub status: BatchStatus,
    pub expires_at: DateTime<Utc>,
}

/// Batches past validation that have not ended, oldest first.
pub async fn active(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<ActiveBatch>> {
    sqlx::query_as!(
        ActiveBatch,
        r#"select batch_id, job_id, status as "status: BatchStatus", expires_at from batches
         where status in ('in_progress', 'cancelling', 'finalizing')
         order by created_at limit $1"#,
        limit
    )
    .fetch_all(db)
    .await
}

/// An in_progress batch past its window: its queued lines are withdrawn (`batch_expired`) and
/// it will end `expired` once its running lines finish.
pub async fn expire(conn: &mut PgConnection, batch: &ActiveBatch) -> sqlx::Result<()> {
    let marked = sqlx::query!(
        "update batches set ending = 'expired', updated_at = now()
         where batch_id = $1 and status = 'in_progress' and ending is null",
        batch.batch_id
    )
    .execute(&mut *conn)
    .await?;
    if marked.rows_affected() == 1
        && let Some(job_id) = batch.job_id
    {
        super::batches::withdraw_queued_lines(
            conn,
            job_id,
            "batch_expired",
            "the batch's completion window ended before this line ran",
        )
        .await?;
    }
    Ok(())
}

/// in_progress or cancelling -> finalizing, when no line of its job is queued or running.
pub async fn begin_finalizing(db: impl PgExecutor<'_>, batch_id: &str) -> sqlx::Result<bool> {
    let moved = sqlx::query!(
        "update batches b set status = 'finalizing', finalizing_at = now(),
             ending = coalesce(ending, 'completed'), updated_at = now()
         where batch_id = $1 and status in ('in_progress', 'cancelling')
           and not exists (select 1 from llm_calls c
                           where c.job_id = b.job_id and c.status in ('queued', 'running'))",
        batch_id
    )
    .execute(db)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// Takes a finalizing batch for this transaction (another worker finalizing it is skipped).
pub async fn take_finalizing(
    conn: &mut PgConnection,
    batch_id: &str,
) -> sqlx::Result<Option<BatchRow>> {
    query_batch!(
        "select ",
        " from batches where batch_id = $1 and status = 'finalizing'
         for update skip locked",
        batch_id
    )
    .fetch_optional(conn)
    .await
}
