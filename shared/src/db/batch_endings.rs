//! The money and the output of a batch's lines: withdrawing the lines a running batch can no
//! longer pay for, reading its finished lines for the output files, and ending it with its
//! spend settled.

use sqlx::PgConnection;
use uuid::Uuid;

use super::batches::BatchRow;
use super::budget_slices::MAX_MICRO_USD;
use crate::domain::status::BatchStatus;

/// What a running batch's lines have spent or may still spend (finished lines at their cost,
/// the others at their estimate) beyond what its slice reserved. The upstream may report a cost
/// above a line's estimate; when the excess passes the slice, the newest queued lines are
/// withdrawn (`insufficient_quota`) until their estimates cover it, so a batch cannot run on
/// budget it never reserved. Returns how many lines were withdrawn.
pub async fn withdraw_overrun(
    conn: &mut PgConnection,
    batch_id: &str,
    every_secs: f64,
) -> sqlx::Result<u64> {
    // One worker checks a batch every `every_secs`: the sum reads every line of the job.
    let due: Option<(Uuid, i64)> = sqlx::query_as(
        "update batches b set spend_checked_at = now()
         from budget_slices s
         where b.batch_id = $1 and b.status = 'in_progress' and s.slice_id = b.budget_slice_id
           and (b.spend_checked_at is null or b.spend_checked_at < now() - make_interval(secs => $2))
         returning b.job_id, s.reserved_micro_usd",
    )
    .bind(batch_id)
    .bind(every_secs)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((job_id, reserved)) = due else {
        return Ok(0);
    };
    let committed: i64 = sqlx::query_scalar(&format!(
        "select coalesce(sum({LINE_SPEND}), 0)::int8 from llm_calls c
         where c.job_id = $1 and c.budget_micro_usd is not null"
    ))
    .bind(job_id)
    .fetch_one(&mut *conn)
    .await?;
    let mut excess = committed.saturating_sub(reserved);
    if excess <= 0 {
        return Ok(0);
    }
    let queued: Vec<(Uuid, i64)> = sqlx::query_as(
        "select call_id, budget_micro_usd from llm_calls
         where job_id = $1 and status = 'queued' and budget_micro_usd is not null
         order by call_id desc",
    )
    .bind(job_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut lines = Vec::new();
    for (call_id, estimate) in queued {
        if excess <= 0 {
            break;
        }
        excess -= estimate;
        lines.push(call_id);
    }
    if lines.is_empty() {
        return Ok(0);
    }
    // Locked in call id order, as a worker's batch claim locks them, so the two cannot deadlock.
    let withdrawn = sqlx::query(
        "update llm_calls set status = 'cancelled', error_code = 'insufficient_quota', finished_at = now(),
             error = 'the batch''s lines cost more than estimated; the team''s budget cannot cover this line'
         where call_id in (
             select call_id from llm_calls where call_id = any($1) and status = 'queued'
             order by call_id for update)
           and status = 'queued'",
    )
    .bind(&lines)
    .execute(conn)
    .await?;
    Ok(withdrawn.rows_affected())
}

/// What a line of a batch counts against its reservation: a line that succeeded its cost (its
/// estimate when neither the upstream nor the price table gave one: such a line is never free),
/// a line that failed what it cost, a line not finished its estimate. SQL over `c`.
const LINE_SPEND: &str =
    "case when c.status = 'succeeded' then coalesce(c.cost_micro_usd, c.budget_micro_usd)
                           when c.finished_at is not null then coalesce(c.cost_micro_usd, 0)
                           else c.budget_micro_usd end";

/// One finished line, as its output or error line needs it.
#[derive(Debug, sqlx::FromRow)]
pub struct FinishedLine {
    pub call_id: Uuid,
    pub custom_id: Option<String>,
    pub status: crate::domain::status::CallStatus,
    pub response: Option<serde_json::Value>,
    pub error: Option<String>,
    pub error_code: Option<String>,
    /// The HTTP status of the last upstream attempt, when one was answered.
    pub http_status: Option<i32>,
}

/// A page of a job's lines in id order, after `after` (the nil id for the first page: a plain
/// range keeps the scan on the `(job_id, call_id)` index, where an `is null or` would sort the
/// whole job for every page).
pub async fn finished_lines(
    conn: &mut PgConnection,
    job_id: Uuid,
    after: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<FinishedLine>> {
    sqlx::query_as(
        "select c.call_id, c.custom_id, c.status, c.response, c.error, c.error_code,
                case when c.status = 'failed' then
                    (select a.http_status from llm_call_attempts a where a.call_id = c.call_id
                     order by a.attempt_id desc limit 1) end as http_status
         from llm_calls c
         where c.job_id = $1 and c.call_id > $2
         order by c.call_id limit $3",
    )
    .bind(job_id)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// How a batch ended.
pub struct Ending<'a> {
    pub status: BatchStatus,
    pub output_file_id: Option<&'a str>,
    pub error_file_id: Option<&'a str>,
    pub completed_lines: i32,
    pub failed_lines: i32,
}

/// Settles the batch's spend and ends it, in the caller's transaction: its lines' costs become
/// spend records and the team's spend, what its slice still holds goes back to the team, its job
/// ends with the batch, and the batch takes its terminal status. The balance row is locked last,
/// after the batch and job rows, like every settlement.
pub async fn end(
    conn: &mut PgConnection,
    batch: &BatchRow,
    ending: &Ending<'_>,
) -> sqlx::Result<()> {
    if let Some(job_id) = batch.job_id {
        let job_status = match ending.status {
            BatchStatus::Completed => "completed",
            BatchStatus::Expired => "expired",
            _ => "cancelled",
        };
        sqlx::query(&format!(
            "update jobs j set status = $2, updated_at = now(), completed_at = now(),
                 calls_cost_micro_usd = {cost}, calls_tokens = {tokens}
             where job_id = $1",
            cost = super::settlement::SETTLED_COST,
            tokens = super::settlement::SETTLED_TOKENS,
        ))
        .bind(job_id)
        .bind(job_status)
        .execute(&mut *conn)
        .await?;
        settle_spend(conn, batch, job_id).await?;
    }
    let at_column = match ending.status {
        BatchStatus::Completed => "completed_at",
        BatchStatus::Expired => "expired_at",
        _ => "cancelled_at",
    };
    sqlx::query(&format!(
        "update batches set status = $2, {at_column} = clock_timestamp(), output_file_id = $3, error_file_id = $4,
             completed_lines = $5, failed_lines = $6, updated_at = now()
         where batch_id = $1 and status = 'finalizing'"
    ))
    .bind(&batch.batch_id)
    .bind(ending.status)
    .bind(ending.output_file_id)
    .bind(ending.error_file_id)
    .bind(ending.completed_lines)
    .bind(ending.failed_lines)
    .execute(conn)
    .await?;
    Ok(())
}

/// The lines' costs to spend records and the team's spend; the slice's reservation back.
async fn settle_spend(conn: &mut PgConnection, batch: &BatchRow, job_id: Uuid) -> sqlx::Result<()> {
    let spent: i64 = sqlx::query_scalar(&format!(
        "with recorded as (
             insert into spend_records (request_id, team_id, model, stream, endpoint, status, reserved_micro_usd,
                 prompt_tokens, completion_tokens, total_tokens, cost_micro_usd, cost_source, error, created_at, finished_at)
             select c.call_id, c.team_id, coalesce(c.model_used, c.model_group), false, c.endpoint,
                    case when {LINE_SPEND} > 0 then 'recorded' else 'released' end,
                    coalesce(c.budget_micro_usd, 0), c.prompt_tokens, c.completion_tokens, c.total_tokens,
                    {LINE_SPEND},
                    case when c.status = 'succeeded' and c.cost_micro_usd is null then 'default_price'
                         else 'price_table' end,
                    c.error, c.created_at, c.finished_at
             from llm_calls c
             where c.job_id = $1 and c.budget_micro_usd is not null
             on conflict (request_id) do nothing
             returning cost_micro_usd)
         select coalesce(sum(cost_micro_usd), 0)::int8 from recorded"
    ))
    .bind(job_id)
    .fetch_one(&mut *conn)
    .await?;
    let returned: i64 = match batch.budget_slice_id {
        Some(slice_id) => sqlx::query_scalar(
            "with gone as (delete from budget_slices where slice_id = $1 returning reserved_micro_usd)
             select coalesce(sum(reserved_micro_usd), 0)::int8 from gone",
        )
        .bind(slice_id)
        .fetch_one(&mut *conn)
        .await?,
        None => 0,
    };
    sqlx::query(&format!(
        "update credit_balances
         set spend_micro_usd = least(spend_micro_usd::numeric + $2, {MAX_MICRO_USD})::int8,
             budget_reserved_micro_usd = budget_reserved_micro_usd - $3, updated_at = now()
         where team_id = $1"
    ))
    .bind(&batch.team_id)
    .bind(spent)
    .bind(returned)
    .execute(conn)
    .await?;
    Ok(())
}
