//! Usage reports: jobs, tokens and LLM cost per team and job type over a period, computed from
//! the jobs and calls themselves.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgExecutor;

/// The call totals of the period's jobs that have none of their own (open jobs, and settled
/// ones with a call that finished after them; see `jobs.calls_cost_micro_usd`): every other
/// job is counted from its own row, not from its calls.
const LIVE_TOTALS: &str = "call_totals as (
             select job_id, sum(cost_micro_usd) as cost, sum(total_tokens) as tokens from llm_calls
             where job_id in (select job_id from period_jobs where calls_cost_micro_usd is null)
             group by job_id)";

/// Totals of one team's jobs of one type created in the period.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageRow {
    pub team_id: String,
    pub job_type: String,
    pub jobs: i64,
    pub completed: i64,
    pub failed: i64,
    pub cost_micro_usd: i64,
    pub tokens: i64,
}

/// Usage of the given teams' jobs created in `[from, to)`, by team and job type.
pub async fn by_team_and_type(
    db: impl PgExecutor<'_>,
    team_ids: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<UsageRow>> {
    sqlx::query_as(&format!(
        "with period_jobs as (
             select job_id, team_id, job_type, status, calls_cost_micro_usd, calls_tokens from jobs
             where team_id = any($1) and created_at >= $2 and created_at < $3),
         {LIVE_TOTALS}
         select j.team_id, j.job_type, count(*) as jobs,
                count(*) filter (where j.status = 'completed') as completed,
                count(*) filter (where j.status = 'failed') as failed,
                coalesce(sum(coalesce(j.calls_cost_micro_usd, c.cost)), 0)::int8 as cost_micro_usd,
                coalesce(sum(coalesce(j.calls_tokens, c.tokens)), 0)::int8 as tokens
         from period_jobs j left join call_totals c using (job_id)
         group by j.team_id, j.job_type order by j.team_id, j.job_type"
    ))
    .bind(team_ids)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await
}

/// Credits deducted from the given teams in `[from, to)`, per team.
pub async fn credits_used(
    db: impl PgExecutor<'_>,
    team_ids: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "select team_id, sum(credits_amount)::int8 from credit_transactions
         where team_id = any($1) and transaction_type = 'deduction' and created_at >= $2 and created_at < $3
         group by team_id",
    )
    .bind(team_ids)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await
}

/// Totals of the given teams' jobs created on one UTC day.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DailyUsageRow {
    pub day: NaiveDate,
    pub jobs: i64,
    pub completed: i64,
    pub failed: i64,
    pub cost_micro_usd: i64,
    pub tokens: i64,
}

/// Usage of the given teams' jobs created in `[from, to)`, by UTC day (days without jobs are
/// absent), for charts.
pub async fn by_day(
    db: impl PgExecutor<'_>,
    team_ids: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<DailyUsageRow>> {
    sqlx::query_as(&format!(
        "with period_jobs as (
             select job_id, status, (created_at at time zone 'UTC')::date as day,
                    calls_cost_micro_usd, calls_tokens from jobs
             where team_id = any($1) and created_at >= $2 and created_at < $3),
         {LIVE_TOTALS}
         select j.day, count(*) as jobs,
                count(*) filter (where j.status = 'completed') as completed,
                count(*) filter (where j.status = 'failed') as failed,
                coalesce(sum(coalesce(j.calls_cost_micro_usd, c.cost)), 0)::int8 as cost_micro_usd,
                coalesce(sum(coalesce(j.calls_tokens, c.tokens)), 0)::int8 as tokens
         from period_jobs j left join call_totals c using (job_id)
         group by j.day order by j.day"
    ))
    .bind(team_ids)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await
}
