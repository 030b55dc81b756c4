//! The money and the output of a batch's lines: withdrawing the lines a running batch can no
//! longer pay for, reading its finished lines for the output files, and ending it with its
//! spend settled.

use sqlx::PgConnection;
use uuid::Uuid;

use super::batches::BatchRow;
use crate::domain::status::{BatchStatus, CallStatus};

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
    // `job_id!`: an in_progress batch always has its job (`batch_runs::start` sets both).
    let due = sqlx::query!(
        r#"update batches b set spend_checked_at = now()
         from budget_slices s
         where b.batch_id = $1 and b.status = 'in_progress' and s.slice_id = b.budget_slice_id
           and (b.spend_checked_at is null or b.spend_checked_at < now() - make_interval(secs => $2))
         returning b.job_id as "job_id!", s.reserved_micro_usd"#,
        batch_id,
        every_secs
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(due) = due else {
        return Ok(0);
    };
    let (job_id, reserved) = (due.job_id, due.reserved_micro_usd);
    // Each line's spend as `settle_spend` records it (the expression is written out in both).
    let committed = sqlx::query_scalar!(
        r#"select coalesce(sum(case when c.status = 'succeeded' then coalesce(c.cost_micro_usd, c.budget_micro_usd)
                                   when c.finished_at is not null then coalesce(c.cost_micro_usd, 0)
                                   else c.budget_micro_usd end), 0)::int8 as "committed!"
         from llm_calls c
         where c.job_id = $1 and c.budget_micro_usd is not null"#,
        job_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let mut excess = committed.saturating_sub(reserved);
    if excess <= 0 {
        return Ok(0);
    }
    // `budget_micro_usd!`: the filter leaves only lines with an estimate.
    let queued = sqlx::query!(
        r#"select call_id, budget_micro_usd as "budget_micro_usd!" from llm_calls
         where job_id = $1 and status = 'queued' and budget_micro_usd is not null
         order by call_id desc"#,
        job_id
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut lines = Vec::new();
    for line in queued {
        if excess <= 0 {
            break;
        }
        excess -= line.budget_micro_usd;
        lines.push(line.call_id);
    }
    if lines.is_empty() {
        return Ok(0);
    }
    // Locked in call id order, as a worker's batch claim locks them, so the two cannot deadlock.
    let withdrawn = sqlx::query!(
        "update llm_calls set status = 'cancelled', error_code = 'insufficient_quota', finished_at = now(),
             error = 'the batch''s lines cost more than estimated; the team''s budget cannot cover this line'
         where call_id in (
             select call_id from llm_calls where call_id = any($1) and status = 'queued'
             order by call_id for update)
           and status = 'queued'",
        &lines
    )
    .execute(conn)
    .await?;
    Ok(withdrawn.rows_affected())
}

/// One finished line, as its output or error line needs it.
#[derive(Debug)]
pub struct FinishedLine {
    pub call_id: Uuid,
    pub custom_id: Option<String>,
    pub status: CallStatus,
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
    sqlx::query_as!(
        FinishedLine,
        r#"select c.call_id, c.custom_id, c.status as "status: CallStatus", c.response, c.error, c.error_code,
                case when c.status = 'failed' then
                    (select a.http_status from llm_call_attempts a where a.call_id = c.call_id
                     order by a.attempt_id desc limit 1) end as "http_status?"
         from llm_calls c
         where c.job_id = $1 and c.call_id > $2
         order by c.call_id limit $3"#,
        job_id,
        after,
        limit
    )
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
        // The job's call totals as every settlement keeps them.
        super::settlement::settling_update!(
            query,
            "update jobs j set status = $2, updated_at = now(), completed_at = now(), ",
            " where job_id = $1",
            job_id,
            job_status
        )
        .execute(&mut *conn)
        .await?;
        settle_spend(conn, batch, job_id).await?;
    }
    // The time of the ending goes to its own column: `completed_at`, `expired_at`, or
    // `cancelled_at` for any other status.
    sqlx::query!(
        "update batches set status = $2,
             completed_at = case when $2 = 'completed' then clock_timestamp() else completed_at end,
             expired_at = case when $2 = 'expired' then clock_timestamp() else expired_at end,
             cancelled_at = case when $2 in ('completed', 'expired') then cancelled_at else clock_timestamp() end,
             output_file_id = $3, error_file_id = $4, completed_lines = $5, failed_lines = $6, updated_at = now()
         where batch_id = $1 and status = 'finalizing'",
        batch.batch_id,
        ending.status as BatchStatus,
        ending.output_file_id,
        ending.error_file_id,
        ending.completed_lines,
        ending.failed_lines
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The lines' costs to spend records and the team's spend; the slice's reservation back.
async fn settle_spend(conn: &mut PgConnection, batch: &BatchRow, job_id: Uuid) -> sqlx::Result<()> {
    // What a line counts against its reservation (the same in `withdraw_overrun`, written out
    // in each place: sqlx's macros cannot splice a shared fragment): a line that succeeded its
    // cost (its estimate when neither the upstream nor the price table gave one: such a line is
    // never free), a line that failed what it cost, a line not finished its estimate.
    let spent = sqlx::query_scalar!(
        r#"with recorded as (
             insert into spend_records (request_id, team_id, model, stream, endpoint, status, reserved_micro_usd,
                 prompt_tokens, completion_tokens, total_tokens, cost_micro_usd, cost_source, error, created_at, finished_at)
             select c.call_id, c.team_id, coalesce(c.model_used, c.model_group), false, c.endpoint,
                    case when (case when c.status = 'succeeded' then coalesce(c.cost_micro_usd, c.budget_micro_usd)
                                    when c.finished_at is not null then coalesce(c.cost_micro_usd, 0)
                                    else c.budget_micro_usd end) > 0
                         then 'recorded' else 'released' end,
                    coalesce(c.budget_micro_usd, 0), c.prompt_tokens, c.completion_tokens, c.total_tokens,
                    case when c.status = 'succeeded' then coalesce(c.cost_micro_usd, c.budget_micro_usd)
                         when c.finished_at is not null then coalesce(c.cost_micro_usd, 0)
                         else c.budget_micro_usd end,
                    case when c.status = 'succeeded' and c.cost_micro_usd is null then 'default_price'
                         else 'price_table' end,
                    c.error, c.created_at, c.finished_at
             from llm_calls c
             where c.job_id = $1 and c.budget_micro_usd is not null
             on conflict (request_id) do nothing
             returning cost_micro_usd)
         select coalesce(sum(cost_micro_usd), 0)::int8 as "spent!" from recorded"#,
        job_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let returned = match batch.budget_slice_id {
        Some(slice_id) => {
            sqlx::query_scalar!(
                r#"with gone as (delete from budget_slices where slice_id = $1 returning reserved_micro_usd)
                 select coalesce(sum(reserved_micro_usd), 0)::int8 as "returned!" from gone"#,
                slice_id
            )
            .fetch_one(&mut *conn)
            .await?
        }
        None => 0,
    };
    // 9223372036854775807: `i64::MAX`, as in `budget_slices::lock_room`.
    sqlx::query!(
        "update credit_balances
         set spend_micro_usd = least(spend_micro_usd::numeric + $2::int8, 9223372036854775807)::int8,
             budget_reserved_micro_usd = budget_reserved_micro_usd - $3, updated_at = now()
         where team_id = $1",
        batch.team_id,
        spent,
        returned
    )
    .execute(conn)
    .await?;
    Ok(())
}
