//! A call's lease: claimed by a worker, extended while it runs, and its result written once
//! under the lease it was claimed with.

use sqlx::PgExecutor;
use uuid::Uuid;

use super::calls::CALL_FINISHED_CHANNEL;
use crate::domain::outcomes::AttemptOutcome;
use crate::domain::status::{CallEndpoint, CallStatus};

/// A call claimed by a worker.
#[derive(Debug, Clone)]
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

/// `sqlx::query_as!` into [`ClaimedCall`], with the claim's `returning` list between `$head`
/// and `$tail`: the single and the batch claim return the same columns. `models` is never null:
/// the group's list is `coalesce`d to an empty array.
macro_rules! query_claimed {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $crate::db::call_leases::ClaimedCall,
            $head
                + r#"returning call_id, job_id, team_id, model_group_id, model_group, request,
                         lease_token, request_id, notify_on_finish,
                         endpoint as "endpoint: CallEndpoint",
                         coalesce(llm_calls.model_chain,
                             (select coalesce(jsonb_agg(jsonb_build_array(m.model_name, m.config) order by m.priority), '[]')
                              from model_group_models m where m.model_group_id = llm_calls.model_group_id))
                             as "models!: sqlx::types::Json<Vec<(String, serde_json::Value)>>""#
                + $tail
            $(, $arg)*
        )
    };
}
pub(crate) use query_claimed;

/// queued -> running under a new lease. `None` when the call is not queued (finished, or running
/// elsewhere): a duplicate or stale queue message, to be dropped.
pub async fn claim(
    db: impl PgExecutor<'_>,
    call_id: Uuid,
    worker_id: &str,
    lease_secs: f64,
) -> sqlx::Result<Option<ClaimedCall>> {
    query_claimed!(
        "update llm_calls set status = 'running', lease_token = lease_token + 1, worker_id = $2,
             lease_expires_at = now() + make_interval(secs => $3), started_at = coalesce(started_at, now())
         where call_id = $1 and status = 'queued' ",
        "",
        call_id,
        worker_id,
        lease_secs
    )
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
    let result = sqlx::query!(
        "update llm_calls set lease_expires_at = now() + make_interval(secs => $3)
         where call_id = $1 and lease_token = $2 and status = 'running'",
        call_id,
        lease_token,
        lease_secs
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// One upstream attempt, as recorded.
pub struct Attempt<'a> {
    pub model_name: &'a str,
    pub http_status: Option<i32>,
    pub outcome: AttemptOutcome,
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

impl<'a> CallResult<'a> {
    /// The result of a call no model served, `error` saying why.
    pub fn failed(error: &'a str, latency_ms: i64) -> Self {
        Self {
            status: CallStatus::Failed,
            model_used: None,
            response_content: None,
            finish_reason: None,
            response: None,
            prompt_tokens: None,
            completion_tokens: None,
            total_tokens: None,
            cost_micro_usd: None,
            latency_ms,
            error: Some(error),
        }
    }
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
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome.as_str()).collect();
    let latencies: Vec<i64> = attempts.iter().map(|a| a.latency_ms).collect();
    let errors: Vec<Option<&str>> = attempts.iter().map(|a| a.error).collect();
    // The arrays of borrowed or optional elements are typed by their casts: sqlx's check
    // expects arrays of owned, non-null elements (`Vec<String>`, `Vec<i32>`).
    let written = sqlx::query_scalar!(
        r#"with written as (
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
         select count(*) as "count!" from written left join notified on true"#,
        call.call_id,
        call.lease_token,
        result.status as CallStatus,
        result.model_used,
        result.response_content,
        result.finish_reason,
        result.response,
        result.prompt_tokens,
        result.completion_tokens,
        result.total_tokens,
        result.cost_micro_usd,
        result.latency_ms,
        result.error,
        &models as &[&str],
        &statuses as &[Option<i32>],
        &outcomes as &[&str],
        &latencies,
        &errors as &[Option<&str>],
        CALL_FINISHED_CHANNEL,
        call.notify_on_finish
    )
    .fetch_one(db)
    .await?;
    Ok(written == 1)
}
