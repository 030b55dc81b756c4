//! Reading a job's calls: pages, summaries, totals and single calls.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::status::CallStatus;

/// A stored call.
#[derive(Debug, Clone)]
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

/// `sqlx::query_as!` into [`CallRow`], with the call's column list between `$head` and `$tail`
/// (sqlx's macros take only string literals, so the list cannot be a constant).
macro_rules! query_call {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            CallRow,
            $head
                + r#"call_id, job_id, team_id, model_group, purpose, custom_id,
                     status as "status: CallStatus", model_used, response_content, finish_reason,
                     response, prompt_tokens, completion_tokens, total_tokens, cost_micro_usd,
                     latency_ms, error, created_at, finished_at"#
                + $tail
            $(, $arg)*
        )
    };
}

/// A page of a job's calls in id (submission) order, after `after`, optionally of one status.
pub async fn page_for_job(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    status: Option<CallStatus>,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<CallRow>> {
    query_call!(
        "select ",
        " from llm_calls
         where job_id = $1 and ($2::text is null or status = $2) and ($3::uuid is null or call_id > $3)
         order by call_id limit $4",
        job_id,
        status as Option<CallStatus>,
        after,
        limit
    )
    .fetch_all(db)
    .await
}

/// The first `limit` calls of a job in id (submission) order, without their raw upstream
/// responses (for job summaries). The column list is written out: it differs from the others
/// in `response`.
pub async fn summaries_for_job(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<CallRow>> {
    sqlx::query_as!(
        CallRow,
        r#"select call_id, job_id, team_id, model_group, purpose, custom_id,
                  status as "status: CallStatus", model_used, response_content, finish_reason,
                  null::jsonb as "response?", prompt_tokens, completion_tokens, total_tokens,
                  cost_micro_usd, latency_ms, error, created_at, finished_at
           from llm_calls where job_id = $1 order by call_id limit $2"#,
        job_id,
        limit
    )
    .fetch_all(db)
    .await
}

/// Totals over all of a job's calls.
#[derive(Debug, Clone, Copy, Default)]
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
    sqlx::query_as!(
        JobCallTotals,
        r#"select count(*) as "total!",
                count(*) filter (where status = 'succeeded') as "succeeded!",
                count(*) filter (where status = 'failed') as "failed!",
                coalesce(sum(total_tokens), 0)::int8 as "tokens!",
                coalesce(sum(cost_micro_usd), 0)::int8 as "cost_micro_usd!",
                coalesce(avg(latency_ms) filter (where status in ('succeeded', 'failed')), 0)::int8
                    as "avg_latency_ms!"
         from llm_calls where job_id = $1"#,
        job_id
    )
    .fetch_one(db)
    .await
}

/// One call of a job.
pub async fn find(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    call_id: Uuid,
) -> sqlx::Result<Option<CallRow>> {
    query_call!(
        "select ",
        " from llm_calls where call_id = $1 and job_id = $2",
        call_id,
        job_id
    )
    .fetch_optional(db)
    .await
}

/// Every call of a job in id (submission) order, oldest first.
pub async fn list_for_job(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<Vec<CallRow>> {
    query_call!(
        "select ",
        " from llm_calls where job_id = $1 order by call_id",
        job_id
    )
    .fetch_all(db)
    .await
}
