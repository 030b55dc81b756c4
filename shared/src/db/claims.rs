//! A worker's calls in batches: many calls claimed in one statement, their leases extended in
//! one statement, and many results written in one statement (one commit). Each call keeps its
//! own fencing token: a result is written only under the lease it was claimed with, so a worker
//! whose lease expired (its call handed to another worker) still cannot change the call.
//!
//! Every statement here that changes several calls first locks them in `call_id` order (the
//! `locked` step). Without it each statement locks rows in whatever order its plan visits them,
//! and two statements over the same calls in different orders (a lease extension and a group of
//! results, say) deadlock: PostgreSQL then aborts one of them, and an aborted group of results
//! meant calls run again once their leases lapsed.

use sqlx::PgExecutor;
use uuid::Uuid;

use super::call_leases::query_claimed;
use super::calls::{Attempt, CALL_FINISHED_CHANNEL, CallResult, ClaimedCall};
// Named by the column types of `query_claimed!`.
use crate::domain::status::CallEndpoint;

/// queued -> running under a new lease, for each of `call_ids` that is still queued; the others
/// (duplicate or stale queue entries, calls of cancelled jobs) are left alone and not returned.
/// Sets the same columns as a single claim, none of them indexed, so the update stays on the
/// row's page (a HOT update).
pub async fn claim_many(
    db: impl PgExecutor<'_>,
    call_ids: &[Uuid],
    worker_id: &str,
    lease_secs: f64,
) -> sqlx::Result<Vec<ClaimedCall>> {
    match call_ids {
        [] => return Ok(Vec::new()),
        // A batch of one (a worker with little to do) takes the single-call statement: a third
        // of the work for PostgreSQL, which matters to the latency of a lone synchronous call.
        [call_id] => {
            return Ok(super::calls::claim(db, *call_id, worker_id, lease_secs)
                .await?
                .into_iter()
                .collect());
        }
        _ => {}
    }
    query_claimed!(
        "update llm_calls set status = 'running', lease_token = lease_token + 1, worker_id = $2,
             lease_expires_at = now() + make_interval(secs => $3), started_at = coalesce(started_at, now())
         where call_id in (
             select call_id from llm_calls where call_id = any($1) and status = 'queued'
             order by call_id for update)
           and status = 'queued' ",
        "",
        call_ids,
        worker_id,
        lease_secs
    )
    .fetch_all(db)
    .await
}

/// Extends the leases of running calls held under the given tokens; returns the calls whose
/// lease is still held (the others were lost to the reconciler).
pub async fn extend_leases(
    db: impl PgExecutor<'_>,
    leases: &[(Uuid, i64)],
    lease_secs: f64,
) -> sqlx::Result<Vec<Uuid>> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, tokens): (Vec<Uuid>, Vec<i64>) = leases.iter().copied().unzip();
    sqlx::query_scalar!(
        "with locked as materialized (
             select call_id from llm_calls where call_id = any($1) order by call_id for update)
         update llm_calls c set lease_expires_at = now() + make_interval(secs => $3)
         from unnest($1::uuid[], $2::int8[]) as held(call_id, lease_token)
         where c.call_id = held.call_id and c.lease_token = held.lease_token and c.status = 'running'
           and c.call_id in (select call_id from locked)
         returning c.call_id",
        &ids,
        &tokens,
        lease_secs
    )
    .fetch_all(db)
    .await
}

/// Gives claimed calls that were never started back to the queue (a worker stopping with calls
/// taken but not yet begun). They are marked as pushed long ago, so the reconciler's next pass
/// pushes them to Redis again. Returns how many were given back.
pub async fn release_unstarted(
    db: impl PgExecutor<'_>,
    leases: &[(Uuid, i64)],
) -> sqlx::Result<u64> {
    if leases.is_empty() {
        return Ok(0);
    }
    let (ids, tokens): (Vec<Uuid>, Vec<i64>) = leases.iter().copied().unzip();
    let result = sqlx::query!(
        "with locked as materialized (
             select call_id from llm_calls where call_id = any($1) order by call_id for update)
         update llm_calls c set status = 'queued', worker_id = null, lease_expires_at = null,
             enqueued_at = '-infinity'
         from unnest($1::uuid[], $2::int8[]) as held(call_id, lease_token)
         where c.call_id = held.call_id and c.lease_token = held.lease_token and c.status = 'running'
           and c.call_id in (select call_id from locked)",
        &ids,
        &tokens
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

/// One finished call to write.
pub struct Finished<'a> {
    pub call: &'a ClaimedCall,
    pub attempts: &'a [Attempt<'a>],
    pub result: &'a CallResult<'a>,
}

/// What writing one result found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub call_id: Uuid,
    pub job_id: Uuid,
}

/// Writes many results and their attempts in one statement (one round trip, one commit), each
/// under its own lease, and notifies waiting API processes on commit for the calls a request
/// waits on. Returns the calls written; a call missing from the answer had lost its lease
/// (another worker owns it now) and nothing of it was written.
pub async fn finish_many(
    db: impl PgExecutor<'_>,
    finished: &[Finished<'_>],
) -> sqlx::Result<Vec<Written>> {
    match finished {
        [] => return Ok(Vec::new()),
        // A group of one (a worker with little to do) takes the single-call statement: cheaper
        // for PostgreSQL to plan and run, and a lone synchronous call waits on it.
        [one] => {
            let written = super::calls::finish(db, one.call, one.attempts, one.result).await?;
            return Ok(written
                .then_some(Written {
                    call_id: one.call.call_id,
                    job_id: one.call.job_id,
                })
                .into_iter()
                .collect());
        }
        _ => {}
    }
    let mut results = ResultColumns::default();
    let mut attempts = AttemptColumns::default();
    for item in finished {
        results.push(item.call, item.result);
        for attempt in item.attempts {
            attempts.push(item.call, attempt);
        }
    }
    write_results(db, &results, &attempts).await
}

/// The results and their attempts in one statement: lock the calls, write each result under
/// its lease, add the attempts of the calls written and notify the waiting API processes.
async fn write_results(
    db: impl PgExecutor<'_>,
    results: &ResultColumns<'_>,
    attempts: &AttemptColumns<'_>,
) -> sqlx::Result<Vec<Written>> {
    // The arrays of borrowed or optional elements are typed by their casts: sqlx's check expects
    // arrays of owned, non-null elements (`Vec<String>`, `Vec<i64>`, `Vec<JsonValue>`). The
    // answer's columns come from `written`, the update's `returning` of non-null columns.
    sqlx::query_as!(
        Written,
        r#"with input as (
             select * from unnest($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[],
                 $7::jsonb[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::text[], $14::bool[])
             as t(call_id, lease_token, status, model_used, response_content, finish_reason, response,
                  prompt_tokens, completion_tokens, total_tokens, cost_micro_usd, latency_ms, error, notify)
         ), locked as materialized (
             select call_id from llm_calls where call_id = any($1) order by call_id for update
         ), written as (
             update llm_calls c set status = i.status, model_used = i.model_used,
                 response_content = i.response_content, finish_reason = i.finish_reason, response = i.response,
                 prompt_tokens = i.prompt_tokens, completion_tokens = i.completion_tokens,
                 total_tokens = i.total_tokens, cost_micro_usd = i.cost_micro_usd, latency_ms = i.latency_ms,
                 error = i.error, finished_at = now(), lease_expires_at = null
             from input i
             where c.call_id = i.call_id and c.lease_token = i.lease_token and c.status = 'running'
               and c.call_id in (select call_id from locked)
             returning c.call_id, c.job_id, c.lease_token, i.notify
         ), attempts as (
             insert into llm_call_attempts (call_id, lease_token, model_name, http_status, outcome, latency_ms, error)
             select a.call_id, a.lease_token, a.m, a.s, a.o, a.l, a.e
             from unnest($15::uuid[], $16::int8[], $17::text[], $18::int4[], $19::text[], $20::int8[], $21::text[])
                 with ordinality as a(call_id, lease_token, m, s, o, l, e, n)
             join written w on w.call_id = a.call_id and w.lease_token = a.lease_token
             order by a.n
         ), notified as (
             select pg_notify($22, call_id::text) from written where notify
         )
         select call_id as "call_id!", job_id as "job_id!" from written where (select count(*) from notified) >= 0"#,
        &results.call_ids,
        &results.lease_tokens,
        &results.statuses as &[&str],
        &results.models_used as &[Option<&str>],
        &results.contents as &[Option<&str>],
        &results.finish_reasons as &[Option<&str>],
        &results.responses as &[Option<&serde_json::Value>],
        &results.prompt_tokens as &[Option<i64>],
        &results.completion_tokens as &[Option<i64>],
        &results.total_tokens as &[Option<i64>],
        &results.costs as &[Option<i64>],
        &results.latencies,
        &results.errors as &[Option<&str>],
        &results.notify,
        &attempts.call_ids,
        &attempts.lease_tokens,
        &attempts.models as &[&str],
        &attempts.http_statuses as &[Option<i32>],
        &attempts.outcomes as &[&str],
        &attempts.latencies,
        &attempts.errors as &[Option<&str>],
        CALL_FINISHED_CHANNEL
    )
    .fetch_all(db)
    .await
}

/// The jobs among `job_ids` waiting on their calls to settle.
pub async fn completing_jobs(db: impl PgExecutor<'_>, job_ids: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    if job_ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar!(
        "select job_id from jobs where job_id = any($1) and status = 'completing'",
        job_ids
    )
    .fetch_all(db)
    .await
}

/// Results as columns, for `unnest`.
#[derive(Default)]
struct ResultColumns<'a> {
    call_ids: Vec<Uuid>,
    lease_tokens: Vec<i64>,
    statuses: Vec<&'static str>,
    models_used: Vec<Option<&'a str>>,
    contents: Vec<Option<&'a str>>,
    finish_reasons: Vec<Option<&'a str>>,
    responses: Vec<Option<&'a serde_json::Value>>,
    prompt_tokens: Vec<Option<i64>>,
    completion_tokens: Vec<Option<i64>>,
    total_tokens: Vec<Option<i64>>,
    costs: Vec<Option<i64>>,
    latencies: Vec<i64>,
    errors: Vec<Option<&'a str>>,
    notify: Vec<bool>,
}

impl<'a> ResultColumns<'a> {
    fn push(&mut self, call: &ClaimedCall, result: &'a CallResult<'a>) {
        self.call_ids.push(call.call_id);
        self.lease_tokens.push(call.lease_token);
        self.statuses.push(result.status.as_str());
        self.models_used.push(result.model_used);
        self.contents.push(result.response_content);
        self.finish_reasons.push(result.finish_reason);
        self.responses.push(result.response);
        self.prompt_tokens.push(result.prompt_tokens);
        self.completion_tokens.push(result.completion_tokens);
        self.total_tokens.push(result.total_tokens);
        self.costs.push(result.cost_micro_usd);
        self.latencies.push(result.latency_ms);
        self.errors.push(result.error);
        self.notify.push(call.notify_on_finish);
    }
}

/// Attempts as columns, for `unnest`.
#[derive(Default)]
struct AttemptColumns<'a> {
    call_ids: Vec<Uuid>,
    lease_tokens: Vec<i64>,
    models: Vec<&'a str>,
    http_statuses: Vec<Option<i32>>,
    outcomes: Vec<&'a str>,
    latencies: Vec<i64>,
    errors: Vec<Option<&'a str>>,
}

impl<'a> AttemptColumns<'a> {
    fn push(&mut self, call: &ClaimedCall, attempt: &'a Attempt<'a>) {
        self.call_ids.push(call.call_id);
        self.lease_tokens.push(call.lease_token);
        self.models.push(attempt.model_name);
        self.http_statuses.push(attempt.http_status);
        self.outcomes.push(attempt.outcome.as_str());
        self.latencies.push(attempt.latency_ms);
        self.errors.push(attempt.error);
    }
}

/// Arbitrary key of the advisory lock a reconciler pass holds (advisory locks are per database).
const RECONCILER_LOCK: i64 = 0x5AA5_11A1_0000_0001;

/// Starts a fleet-wide reconciler pass in `tx` if none runs (another process holds the advisory
/// lock until its transaction ends) and none started in the last `min_gap_secs`. True when the
/// caller runs the pass; it keeps `tx` open until the pass is done. Never waits for a lock.
pub async fn start_reconciler_pass(
    tx: &mut sqlx::PgConnection,
    min_gap_secs: f64,
) -> sqlx::Result<bool> {
    let locked = sqlx::query_scalar!(
        r#"select pg_try_advisory_xact_lock($1) as "locked!""#,
        RECONCILER_LOCK
    )
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        return Ok(false);
    }
    let started = sqlx::query!(
        "update reconciler_passes set last_started_at = now()
         where last_started_at <= now() - make_interval(secs => $1)",
        min_gap_secs
    )
    .execute(&mut *tx)
    .await?;
    Ok(started.rows_affected() == 1)
}
