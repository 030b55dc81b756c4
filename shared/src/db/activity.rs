//! The fleet's recent activity, for the console's overview: per-minute counts, the queue and
//! the workers seen.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// Counts for one minute of the last hour (missing minutes had nothing).
#[derive(Debug, Clone, Default)]
pub struct MinuteActivity {
    pub minute: DateTime<Utc>,
    pub calls: i64,
    pub failed_calls: i64,
    pub fallbacks: i64,
    pub jobs: i64,
    pub spend_micro_usd: i64,
    pub credits_deducted: i64,
}

/// Per-minute activity since `since`, optionally of one team: calls created and those that
/// failed, attempts that fell back to the next model, jobs created, `/v1` spend recorded and
/// credits deducted.
pub async fn activity(
    db: impl PgExecutor<'_>,
    team_id: Option<&str>,
    since: DateTime<Utc>,
) -> sqlx::Result<Vec<MinuteActivity>> {
    // `!`: every minute comes from a `date_trunc` of a not-null `created_at`, and the counts are
    // `coalesce`d with 0.
    sqlx::query_as!(
        MinuteActivity,
        r#"with calls as (
             select date_trunc('minute', created_at) as minute, count(*) as calls,
                    count(*) filter (where status = 'failed') as failed_calls
             from llm_calls where created_at >= $2 and ($1::text is null or team_id = $1) group by 1),
         fallbacks as (
             select date_trunc('minute', a.created_at) as minute, count(*) as fallbacks
             from llm_call_attempts a
             where a.created_at >= $2 and a.outcome = 'fallback'
               and ($1::text is null or exists (select 1 from llm_calls c where c.call_id = a.call_id and c.team_id = $1))
             group by 1),
         jobs as (
             select date_trunc('minute', created_at) as minute, count(*) as jobs
             from jobs where created_at >= $2 and ($1::text is null or team_id = $1) group by 1),
         spend as (
             select date_trunc('minute', created_at) as minute, sum(coalesce(cost_micro_usd, 0))::int8 as spend
             from spend_records where created_at >= $2 and ($1::text is null or team_id = $1) group by 1),
         credits as (
             select date_trunc('minute', created_at) as minute, sum(credits_amount)::int8 as credits
             from credit_transactions
             where created_at >= $2 and transaction_type = 'deduction' and ($1::text is null or team_id = $1)
             group by 1)
         select minute as "minute!", coalesce(calls.calls, 0) as "calls!",
                coalesce(calls.failed_calls, 0) as "failed_calls!",
                coalesce(fallbacks.fallbacks, 0) as "fallbacks!", coalesce(jobs.jobs, 0) as "jobs!",
                coalesce(spend.spend, 0) as "spend_micro_usd!", coalesce(credits.credits, 0) as "credits_deducted!"
         from calls full join fallbacks using (minute) full join jobs using (minute)
              full join spend using (minute) full join credits using (minute)
         order by minute"#,
        team_id,
        since
    )
    .fetch_all(db)
    .await
}

/// The queue as PostgreSQL sees it: calls waiting and how long the oldest has waited.
#[derive(Debug, Clone)]
pub struct QueueState {
    pub queued: i64,
    pub running: i64,
    pub oldest_queued_at: Option<DateTime<Utc>>,
}

/// Calls queued and running now (served by the partial indexes on unfinished calls).
pub async fn queue_state(db: impl PgExecutor<'_>) -> sqlx::Result<QueueState> {
    sqlx::query_as!(
        QueueState,
        r#"select count(*) filter (where status = 'queued') as "queued!",
                count(*) filter (where status = 'running') as "running!",
                min(enqueued_at) filter (where status = 'queued') as "oldest_queued_at?"
         from llm_calls where finished_at is null"#
    )
    .fetch_one(db)
    .await
}

/// A worker process that ran calls recently.
#[derive(Debug, Clone)]
pub struct WorkerSeen {
    pub worker_id: String,
    pub last_seen: DateTime<Utc>,
    pub calls: i64,
}

/// Workers that claimed calls created since `since`, most recently seen first.
pub async fn workers_seen(
    db: impl PgExecutor<'_>,
    since: DateTime<Utc>,
) -> sqlx::Result<Vec<WorkerSeen>> {
    // `worker_id!`: the rows are those with a worker; `last_seen!`: the `max` over a group (never
    // empty) of a `coalesce` ending in the not-null `created_at`.
    sqlx::query_as!(
        WorkerSeen,
        r#"select worker_id as "worker_id!",
                max(coalesce(finished_at, started_at, created_at)) as "last_seen!", count(*) as "calls!"
         from llm_calls where created_at >= $1 and worker_id is not null
         group by worker_id order by "last_seen!" desc limit 50"#,
        since
    )
    .fetch_all(db)
    .await
}
