//! LLM calls: queued by the API, claimed by a worker under a lease, finished exactly once.
//! Every write after the claim is fenced by the lease token, so a worker whose lease expired
//! (and whose call was handed to another worker) can no longer change the call.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

pub use super::call_leases::{Attempt, CallResult, ClaimedCall, claim, extend_lease, finish};
pub use super::call_reads::{
    CallRow, JobCallTotals, find, list_for_job, page_for_job, summaries_for_job, totals_for_job,
};
use crate::domain::status::JobStatus;

/// PostgreSQL notification channel carrying the id of each finished call.
pub const CALL_FINISHED_CHANNEL: &str = "saasllm_call_finished";

/// A call to queue.
pub struct NewCall<'a> {
    pub job_id: Uuid,
    pub team_id: &'a str,
    pub model_group_id: Uuid,
    pub model_group: &'a str,
    pub purpose: Option<&'a str>,
    pub request: &'a serde_json::Value,
    /// The submitting request's `x-request-id`, carried into the worker's logs.
    pub request_id: Option<&'a str>,
    pub custom_id: Option<&'a str>,
    /// A request waits for the result (synchronous call): the worker notifies when it is written.
    pub notify_on_finish: bool,
}

/// What `insert_into_open_job` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insertion {
    Inserted(Uuid),
    /// The job has finished (completing, settled, expired or cancelled): nothing was inserted.
    JobFinished(JobStatus),
    JobNotFound,
}

/// Inserts a `queued` call into its job if the job is still open, and marks a pending job
/// `in_progress`: one statement (one round trip, one commit) that locks the job row, so a
/// concurrent complete or cancel cannot slip in between the check and the insert. Violates
/// `llm_calls_job_custom_id_key` when the job already has a call with its `custom_id`.
pub async fn insert_into_open_job(
    db: impl PgExecutor<'_>,
    call: &NewCall<'_>,
) -> sqlx::Result<Insertion> {
    // `status` is the locked job's (never null); `call_id` is null when nothing was inserted.
    let row = sqlx::query!(
        r#"with job as (
             select job_id, status from jobs where job_id = $2 for no key update
         ), inserted as (
             insert into llm_calls (call_id, job_id, team_id, model_group_id, model_group, purpose, request, request_id, custom_id, notify_on_finish)
             select $1, job.job_id, $3, $4, $5, $6, $7, $8, $9, $10 from job where job.status in ('pending', 'in_progress')
             returning call_id
         ), started as (
             update jobs set status = 'in_progress', updated_at = now()
             where job_id = $2 and status = 'pending' and exists (select 1 from inserted)
         )
         select job.status as "status!: JobStatus", (select call_id from inserted) as "call_id?" from job"#,
        Uuid::now_v7(),
        call.job_id,
        call.team_id,
        call.model_group_id,
        call.model_group,
        call.purpose,
        call.request,
        call.request_id,
        call.custom_id,
        call.notify_on_finish
    )
    .fetch_optional(db)
    .await?;
    Ok(match row {
        None => Insertion::JobNotFound,
        Some(row) => match row.call_id {
            Some(call_id) => Insertion::Inserted(call_id),
            None => Insertion::JobFinished(row.status),
        },
    })
}

/// One call of a bulk submission.
pub struct BulkCall<'a> {
    pub model_group_id: Uuid,
    pub model_group: &'a str,
    pub purpose: Option<&'a str>,
    pub custom_id: Option<&'a str>,
    pub request: serde_json::Value,
}

/// Inserts a job's calls in one statement, in order, with time-ordered ids; returns the ids.
/// Violates `llm_calls_job_custom_id_key` when a `custom_id` is already used in the job.
pub async fn insert_bulk(
    conn: &mut PgConnection,
    job_id: Uuid,
    team_id: &str,
    request_id: Option<&str>,
    calls: &[BulkCall<'_>],
) -> sqlx::Result<Vec<Uuid>> {
    let ids: Vec<Uuid> = calls.iter().map(|_| Uuid::now_v7()).collect();
    let group_ids: Vec<Uuid> = calls.iter().map(|c| c.model_group_id).collect();
    let groups: Vec<&str> = calls.iter().map(|c| c.model_group).collect();
    let purposes: Vec<Option<&str>> = calls.iter().map(|c| c.purpose).collect();
    let custom_ids: Vec<Option<&str>> = calls.iter().map(|c| c.custom_id).collect();
    let requests: Vec<&serde_json::Value> = calls.iter().map(|c| &c.request).collect();
    // The arrays of borrowed or optional elements are typed by their casts: sqlx's check
    // expects arrays of owned, non-null elements (`Vec<String>`, `Vec<JsonValue>`).
    sqlx::query!(
        "insert into llm_calls (call_id, job_id, team_id, model_group_id, model_group, purpose, custom_id, request, request_id)
         select id, $2, $3, g, n, p, c, r, $9
         from unnest($1::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::jsonb[]) as t(id, g, n, p, c, r)",
        &ids,
        job_id,
        team_id,
        &group_ids,
        &groups as &[&str],
        &purposes as &[Option<&str>],
        &custom_ids as &[Option<&str>],
        &requests as &[&serde_json::Value],
        request_id
    )
    .execute(conn)
    .await?;
    Ok(ids)
}

/// Withdraws calls that could not be enqueued, where no worker has claimed them yet; returns
/// how many were withdrawn.
pub async fn withdraw_unclaimed_many(
    db: impl PgExecutor<'_>,
    call_ids: &[Uuid],
) -> sqlx::Result<u64> {
    let result = sqlx::query!(
        "delete from llm_calls where call_id = any($1) and status = 'queued' and lease_token = 0",
        call_ids
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

/// Cancels a job's queued calls (they will never run; their queue entries are dropped by the
/// claim) and notifies waiters; returns how many. The calls are locked in `call_id` order, as a
/// worker's batch claim locks them, so the two cannot deadlock.
pub async fn cancel_queued(conn: &mut PgConnection, job_id: Uuid) -> sqlx::Result<u64> {
    let cancelled = sqlx::query!(
        "update llm_calls set status = 'cancelled', error = 'job cancelled', finished_at = now()
         where call_id in (
             select call_id from llm_calls where job_id = $1 and status = 'queued'
             order by call_id for update)
           and status = 'queued'
         returning call_id, notify_on_finish",
        job_id
    )
    .fetch_all(&mut *conn)
    .await?;
    let waited_for: Vec<Uuid> = cancelled
        .iter()
        .filter_map(|c| c.notify_on_finish.then_some(c.call_id))
        .collect();
    if !waited_for.is_empty() {
        sqlx::query!(
            "select pg_notify($1, id::text) from unnest($2::uuid[]) as t(id)",
            CALL_FINISHED_CHANNEL,
            &waited_for
        )
        .execute(conn)
        .await?;
    }
    Ok(cancelled.len() as u64)
}

/// Withdraws a call that could not be enqueued, if no worker has claimed it yet.
pub async fn withdraw_unclaimed(db: impl PgExecutor<'_>, call_id: Uuid) -> sqlx::Result<bool> {
    let result = sqlx::query!(
        "delete from llm_calls where call_id = $1 and status = 'queued' and lease_token = 0",
        call_id
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Running calls whose lease expired go back to `queued` (their worker died or stalled); returns
/// their ids and teams for re-enqueueing. The candidates come from the index of unfinished calls
/// (`finished_at is null`), which holds no status or lease so that claims and lease extensions
/// leave it alone: the scan reads the calls in flight, never the finished ones.
pub async fn requeue_expired_leases(
    db: impl PgExecutor<'_>,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, String)>> {
    let requeued = sqlx::query!(
        "update llm_calls set status = 'queued', worker_id = null, lease_expires_at = null, enqueued_at = now()
         where call_id in (
             select call_id from llm_calls
             where finished_at is null and status = 'running' and lease_expires_at < now()
             limit $1 for update skip locked)
         returning call_id, team_id",
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(requeued
        .into_iter()
        .map(|r| (r.call_id, r.team_id))
        .collect())
}

/// Teams with queued calls last pushed before `before`: the candidates for lost queue entries.
/// Read from the index of unfinished calls by `enqueued_at`.
pub async fn teams_with_queued_before(
    db: impl PgExecutor<'_>,
    before: DateTime<Utc>,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "select distinct team_id from llm_calls
         where finished_at is null and status = 'queued' and enqueued_at < $1",
        before
    )
    .fetch_all(db)
    .await
}

/// A team's queued calls last pushed before `before` (so no longer in Redis): marks them pushed
/// now and returns their ids. Read from the index of unfinished calls by `enqueued_at`.
pub async fn take_lost_queued(
    db: impl PgExecutor<'_>,
    team_id: &str,
    before: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        "with lost as (
             select call_id, enqueued_at from llm_calls
             where finished_at is null and status = 'queued' and team_id = $1 and enqueued_at < $2
             order by enqueued_at, call_id limit $3 for update skip locked)
         update llm_calls c set enqueued_at = now() from lost
         where c.call_id = lost.call_id
         returning c.call_id",
        team_id,
        before,
        limit
    )
    .fetch_all(db)
    .await
}

/// When a queued call was last pushed.
pub async fn enqueued_at(
    db: impl PgExecutor<'_>,
    call_id: Uuid,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar!(
        "select enqueued_at from llm_calls where call_id = $1 and status = 'queued'",
        call_id
    )
    .fetch_optional(db)
    .await
}
