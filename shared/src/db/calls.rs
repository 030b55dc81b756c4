//! LLM calls: queued by the API, claimed by a worker under a lease, finished exactly once.
//! Every write after the claim is fenced by the lease token, so a worker whose lease expired
//! (and whose call was handed to another worker) can no longer change the call.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::status::{CallEndpoint, CallStatus};

/// PostgreSQL notification channel carrying the id of each finished call.
pub const CALL_FINISHED_CHANNEL: &str = "saasllm_call_finished";

/// A stored call.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CallRow {
    pub call_id: Uuid,
    pub job_id: Uuid,
    pub team_id: String,
    pub model_group: String,
    pub purpose: Option<String>,
    /// The client's id for the call, unique within the job.
    pub custom_id: Option<String>,
    pub status: CallStatus,
    pub model_used: Option<String>,
    pub response_content: Option<String>,
    pub finish_reason: Option<String>,
    pub response: Option<serde_json::Value>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    pub cost_micro_usd: Option<i64>,
    pub latency_ms: Option<i64>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const CALL_COLUMNS: &str = "call_id, job_id, team_id, model_group, purpose, custom_id, status, model_used, response_content, \
     finish_reason, response, prompt_tokens, completion_tokens, total_tokens, cost_micro_usd, latency_ms, error, \
     created_at, finished_at";

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
    JobFinished(crate::domain::status::JobStatus),
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
    let row: Option<(crate::domain::status::JobStatus, Option<Uuid>)> = sqlx::query_as(
        "with job as (
             select job_id, status from jobs where job_id = $2 for no key update
         ), inserted as (
             insert into llm_calls (call_id, job_id, team_id, model_group_id, model_group, purpose, request, request_id, custom_id, notify_on_finish)
             select $1, job.job_id, $3, $4, $5, $6, $7, $8, $9, $10 from job where job.status in ('pending', 'in_progress')
             returning call_id
         ), started as (
             update jobs set status = 'in_progress', updated_at = now()
             where job_id = $2 and status = 'pending' and exists (select 1 from inserted)
         )
         select job.status, (select call_id from inserted) from job",
    )
    .bind(Uuid::now_v7())
    .bind(call.job_id)
    .bind(call.team_id)
    .bind(call.model_group_id)
    .bind(call.model_group)
    .bind(call.purpose)
    .bind(call.request)
    .bind(call.request_id)
    .bind(call.custom_id)
    .bind(call.notify_on_finish)
    .fetch_optional(db)
    .await?;
    Ok(match row {
        None => Insertion::JobNotFound,
        Some((_, Some(call_id))) => Insertion::Inserted(call_id),
        Some((status, None)) => Insertion::JobFinished(status),
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
    sqlx::query(
        "insert into llm_calls (call_id, job_id, team_id, model_group_id, model_group, purpose, custom_id, request, request_id)
         select id, $2, $3, g, n, p, c, r, $9
         from unnest($1::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::jsonb[]) as t(id, g, n, p, c, r)",
    )
    .bind(&ids)
    .bind(job_id)
    .bind(team_id)
    .bind(&group_ids)
    .bind(&groups)
    .bind(&purposes)
    .bind(&custom_ids)
    .bind(&requests)
    .bind(request_id)
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
    let result = sqlx::query(
        "delete from llm_calls where call_id = any($1) and status = 'queued' and lease_token = 0",
    )
    .bind(call_ids)
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

/// A page of a job's calls in id (submission) order, after `after`, optionally of one status.
pub async fn page_for_job(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    status: Option<CallStatus>,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<CallRow>> {
    sqlx::query_as(&format!(
        "select {CALL_COLUMNS} from llm_calls
         where job_id = $1 and ($2::text is null or status = $2) and ($3::uuid is null or call_id > $3)
         order by call_id limit $4"
    ))
    .bind(job_id)
    .bind(status)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The first `limit` calls of a job in id (submission) order, without their raw upstream
/// responses (for job summaries).
pub async fn summaries_for_job(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<CallRow>> {
    let columns = CALL_COLUMNS.replace("response,", "null::jsonb as response,");
    sqlx::query_as(&format!(
        "select {columns} from llm_calls where job_id = $1 order by call_id limit $2"
    ))
    .bind(job_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Totals over all of a job's calls.
#[derive(Debug, Clone, Copy, Default, sqlx::FromRow)]
pub struct JobCallTotals {
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub tokens: i64,
    pub cost_micro_usd: i64,
    /// Mean latency of the finished calls, 0 when none finished.
    pub avg_latency_ms: i64,
}

/// Sums a job's calls in SQL (a batch job may have hundreds of thousands).
pub async fn totals_for_job(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<JobCallTotals> {
    sqlx::query_as(
        "select count(*) as total,
                count(*) filter (where status = 'succeeded') as succeeded,
                count(*) filter (where status = 'failed') as failed,
                coalesce(sum(total_tokens), 0)::int8 as tokens,
                coalesce(sum(cost_micro_usd), 0)::int8 as cost_micro_usd,
                coalesce(avg(latency_ms) filter (where status in ('succeeded', 'failed')), 0)::int8 as avg_latency_ms
         from llm_calls where job_id = $1",
    )
    .bind(job_id)
    .fetch_one(db)
    .await
}

/// Cancels a job's queued calls (they will never run; their queue entries are dropped by the
/// claim) and notifies waiters; returns how many. The calls are locked in `call_id` order, as a
/// worker's batch claim locks them, so the two cannot deadlock.
pub async fn cancel_queued(conn: &mut PgConnection, job_id: Uuid) -> sqlx::Result<u64> {
    let cancelled: Vec<(Uuid, bool)> = sqlx::query_as(
        "update llm_calls set status = 'cancelled', error = 'job cancelled', finished_at = now()
         where call_id in (
             select call_id from llm_calls where job_id = $1 and status = 'queued'
             order by call_id for update)
           and status = 'queued'
         returning call_id, notify_on_finish",
    )
    .bind(job_id)
    .fetch_all(&mut *conn)
    .await?;
    let waited_for: Vec<Uuid> = cancelled
        .iter()
        .filter_map(|&(id, notify)| notify.then_some(id))
        .collect();
    if !waited_for.is_empty() {
        sqlx::query("select pg_notify($1, id::text) from unnest($2::uuid[]) as t(id)")
            .bind(CALL_FINISHED_CHANNEL)
            .bind(&waited_for)
            .execute(conn)
            .await?;
    }
    Ok(cancelled.len() as u64)
}

/// Withdraws a call that could not be enqueued, if no worker has claimed it yet.
pub async fn withdraw_unclaimed(db: impl PgExecutor<'_>, call_id: Uuid) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "delete from llm_calls where call_id = $1 and status = 'queued' and lease_token = 0",
    )
    .bind(call_id)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// One call of a job.
pub async fn find(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    call_id: Uuid,
) -> sqlx::Result<Option<CallRow>> {
    sqlx::query_as(&format!(
        "select {CALL_COLUMNS} from llm_calls where call_id = $1 and job_id = $2"
    ))
    .bind(call_id)
    .bind(job_id)
    .fetch_optional(db)
    .await
}

/// Every call of a job in id (submission) order, oldest first.
pub async fn list_for_job(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<Vec<CallRow>> {
    sqlx::query_as(&format!(
        "select {CALL_COLUMNS} from llm_calls where job_id = $1 order by call_id"
    ))
    .bind(job_id)
    .fetch_all(db)
    .await
}

/// A call claimed by a worker.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedCall {
    pub call_id: Uuid,
    pub job_id: Uuid,
    pub team_id: String,
    pub model_group_id: Option<Uuid>,
    pub model_group: String,
    pub request: serde_json::Value,
    pub lease_token: i64,
    pub request_id: Option<String>,
    /// The group's models in priority order with their config, read with the claim (or the
    /// one model a batch line names directly).
    pub models: sqlx::types::Json<Vec<(String, serde_json::Value)>>,
    /// Where the request is sent.
    pub endpoint: CallEndpoint,
    /// A request waits for the result: `finish` notifies it.
    pub notify_on_finish: bool,
}

/// queued -> running under a new lease. `None` when the call is not queued (finished, or running
/// elsewhere): a duplicate or stale queue message, to be dropped.
pub async fn claim(
    db: impl PgExecutor<'_>,
    call_id: Uuid,
    worker_id: &str,
    lease_secs: f64,
) -> sqlx::Result<Option<ClaimedCall>> {
    sqlx::query_as(
        "update llm_calls set status = 'running', lease_token = lease_token + 1, worker_id = $2,
             lease_expires_at = now() + make_interval(secs => $3), started_at = coalesce(started_at, now())
         where call_id = $1 and status = 'queued'
         returning call_id, job_id, team_id, model_group_id, model_group, request, lease_token, request_id, notify_on_finish, endpoint,
             coalesce(llm_calls.model_chain,
                 (select coalesce(jsonb_agg(jsonb_build_array(m.model_name, m.config) order by m.priority), '[]')
                  from model_group_models m where m.model_group_id = llm_calls.model_group_id)) as models",
    )
    .bind(call_id)
    .bind(worker_id)
    .bind(lease_secs)
    .fetch_optional(db)
    .await
}

/// Extends the lease of a running call; false when the lease was lost.
pub async fn extend_lease(
    db: impl PgExecutor<'_>,
    call_id: Uuid,
    lease_token: i64,
    lease_secs: f64,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "update llm_calls set lease_expires_at = now() + make_interval(secs => $3)
         where call_id = $1 and lease_token = $2 and status = 'running'",
    )
    .bind(call_id)
    .bind(lease_token)
    .bind(lease_secs)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// One upstream attempt, as recorded.
pub struct Attempt<'a> {
    pub model_name: &'a str,
    pub http_status: Option<i32>,
    pub outcome: &'a str,
    pub latency_ms: i64,
    pub error: Option<&'a str>,
}

/// The final result of a call.
pub struct CallResult<'a> {
    pub status: CallStatus,
    pub model_used: Option<&'a str>,
    pub response_content: Option<&'a str>,
    pub finish_reason: Option<&'a str>,
    pub response: Option<&'a serde_json::Value>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    pub cost_micro_usd: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<&'a str>,
}

/// Writes the result and the attempts, if the lease is still ours, and notifies waiting API
/// processes on commit when a request waits for it: one statement, so one round trip and one
/// commit. Returns false (writing nothing) when the lease was lost: another worker owns the call
/// now.
pub async fn finish(
    db: impl PgExecutor<'_>,
    call: &ClaimedCall,
    attempts: &[Attempt<'_>],
    result: &CallResult<'_>,
) -> sqlx::Result<bool> {
    let models: Vec<&str> = attempts.iter().map(|a| a.model_name).collect();
    let statuses: Vec<Option<i32>> = attempts.iter().map(|a| a.http_status).collect();
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome).collect();
    let latencies: Vec<i64> = attempts.iter().map(|a| a.latency_ms).collect();
    let errors: Vec<Option<&str>> = attempts.iter().map(|a| a.error).collect();
    let written: i64 = sqlx::query_scalar(
        "with written as (
             update llm_calls set status = $3, model_used = $4, response_content = $5, finish_reason = $6,
                 response = $7, prompt_tokens = $8, completion_tokens = $9, total_tokens = $10,
                 cost_micro_usd = $11, latency_ms = $12, error = $13, finished_at = now(), lease_expires_at = null
             where call_id = $1 and lease_token = $2 and status = 'running'
             returning call_id
         ), attempts as (
             insert into llm_call_attempts (call_id, lease_token, model_name, http_status, outcome, latency_ms, error)
             select $1, $2, m, s, o, l, e
             from unnest($14::text[], $15::int4[], $16::text[], $17::int8[], $18::text[]) with ordinality as t(m, s, o, l, e, n)
             where exists (select 1 from written)
             order by n
         ), notified as (
             select pg_notify($19, call_id::text) from written where $20
         )
         select count(*) from written left join notified on true",
    )
    .bind(call.call_id)
    .bind(call.lease_token)
    .bind(result.status)
    .bind(result.model_used)
    .bind(result.response_content)
    .bind(result.finish_reason)
    .bind(result.response)
    .bind(result.prompt_tokens)
    .bind(result.completion_tokens)
    .bind(result.total_tokens)
    .bind(result.cost_micro_usd)
    .bind(result.latency_ms)
    .bind(result.error)
    .bind(&models)
    .bind(&statuses)
    .bind(&outcomes)
    .bind(&latencies)
    .bind(&errors)
    .bind(CALL_FINISHED_CHANNEL)
    .bind(call.notify_on_finish)
    .fetch_one(db)
    .await?;
    Ok(written == 1)
}

/// Running calls whose lease expired go back to `queued` (their worker died or stalled); returns
/// their ids and teams for re-enqueueing. The candidates come from the index of unfinished calls
/// (`finished_at is null`), which holds no status or lease so that claims and lease extensions
/// leave it alone: the scan reads the calls in flight, never the finished ones.
pub async fn requeue_expired_leases(
    db: impl PgExecutor<'_>,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, String)>> {
    sqlx::query_as(
        "update llm_calls set status = 'queued', worker_id = null, lease_expires_at = null, enqueued_at = now()
         where call_id in (
             select call_id from llm_calls
             where finished_at is null and status = 'running' and lease_expires_at < now()
             limit $1 for update skip locked)
         returning call_id, team_id",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Teams with queued calls last pushed before `before`: the candidates for lost queue entries.
/// Read from the index of unfinished calls by `enqueued_at`.
pub async fn teams_with_queued_before(
    db: impl PgExecutor<'_>,
    before: DateTime<Utc>,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "select distinct team_id from llm_calls
         where finished_at is null and status = 'queued' and enqueued_at < $1",
    )
    .bind(before)
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
    sqlx::query_scalar(
        "with lost as (
             select call_id, enqueued_at from llm_calls
             where finished_at is null and status = 'queued' and team_id = $1 and enqueued_at < $2
             order by enqueued_at, call_id limit $3 for update skip locked)
         update llm_calls c set enqueued_at = now() from lost
         where c.call_id = lost.call_id
         returning c.call_id",
    )
    .bind(team_id)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// When a queued call was last pushed.
pub async fn enqueued_at(
    db: impl PgExecutor<'_>,
    call_id: Uuid,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar("select enqueued_at from llm_calls where call_id = $1 and status = 'queued'")
        .bind(call_id)
        .fetch_optional(db)
        .await
}
