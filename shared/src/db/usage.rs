//! Usage reports: jobs, tokens and LLM cost per team and job type over a period, computed from
//! the jobs and calls themselves, in one pass over the period's jobs.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgExecutor;

use crate::domain::status::CallEndpoint;

/// Totals of one team's jobs of one type created in the period.
#[derive(Debug, Clone)]
pub struct UsageRow {
    pub team_id: String,
    pub job_type: String,
    pub jobs: i64,
    pub completed: i64,
    pub failed: i64,
    pub cost_micro_usd: i64,
    pub tokens: i64,
}

/// `sqlx::query_as!` into `$row`: the totals of the jobs `j` of the teams `$1` created in
/// `[$2, $3)`, selected after `$keys` and grouped by `$grouping`. sqlx's macros take only string
/// literals, so the reports' shared figures are spelled here.
///
/// The cost and tokens of a job: a settled job's own totals (see `jobs.calls_cost_micro_usd`),
/// else (an open job, or a settled one with a call that finished after it) the sum of its calls.
/// `coalesce` evaluates the subquery only for those jobs; the sums stay `int8`, which PostgreSQL
/// adds far faster than `numeric`.
macro_rules! query_job_usage {
    ($row:ident, $keys:literal, $grouping:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $row,
            "select "
                + $keys
                + r#", count(*) as "jobs!",
                count(*) filter (where j.status = 'completed') as "completed!",
                count(*) filter (where j.status = 'failed') as "failed!",
                coalesce(sum(coalesce(j.calls_cost_micro_usd,
                    (select sum(c.cost_micro_usd)::int8 from llm_calls c where c.job_id = j.job_id))), 0)::int8
                    as "cost_micro_usd!",
                coalesce(sum(coalesce(j.calls_tokens,
                    (select sum(c.total_tokens)::int8 from llm_calls c where c.job_id = j.job_id))), 0)::int8
                    as "tokens!"
         from jobs j where j.team_id = any($1) and j.created_at >= $2 and j.created_at < $3
         group by "#
                + $grouping
            $(, $arg)*
        )
    };
}

/// Usage of the given teams' jobs created in `[from, to)`, by team and job type.
pub async fn by_team_and_type(
    db: impl PgExecutor<'_>,
    team_ids: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<UsageRow>> {
    query_job_usage!(
        UsageRow,
        "j.team_id, j.job_type",
        "j.team_id, j.job_type order by j.team_id, j.job_type",
        team_ids,
        from,
        to
    )
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
    // `sum` of a group is never null: each group has a row, and `credits_amount` is not null.
    let rows = sqlx::query!(
        r#"select team_id, sum(credits_amount)::int8 as "used!" from credit_transactions
         where team_id = any($1) and transaction_type = 'deduction' and created_at >= $2 and created_at < $3
         group by team_id"#,
        team_ids,
        from,
        to
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.team_id, row.used))
        .collect())
}

/// Totals of the given teams' jobs created on one UTC day.
#[derive(Debug, Clone)]
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
    query_job_usage!(
        DailyUsageRow,
        r#"(j.created_at at time zone 'UTC')::date as "day!""#,
        "1 order by 1",
        team_ids,
        from,
        to
    )
    .fetch_all(db)
    .await
}

/// Spend of the OpenAI-compatible path (requests and batch lines) of one team and endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiUsageRow {
    pub team_id: String,
    pub endpoint: CallEndpoint,
    pub requests: i64,
    pub cost_micro_usd: i64,
    pub tokens: i64,
}

/// The given teams' `/v1` spend records made in `[from, to)`, by team and endpoint.
pub async fn openai_by_endpoint(
    db: impl PgExecutor<'_>,
    team_ids: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<OpenAiUsageRow>> {
    sqlx::query_as!(
        OpenAiUsageRow,
        r#"select team_id, endpoint as "endpoint: CallEndpoint", count(*) as "requests!",
                coalesce(sum(cost_micro_usd), 0)::int8 as "cost_micro_usd!",
                coalesce(sum(total_tokens), 0)::int8 as "tokens!"
         from spend_records
         where team_id = any($1) and created_at >= $2 and created_at < $3
         group by team_id, endpoint order by team_id, endpoint"#,
        team_ids,
        from,
        to
    )
    .fetch_all(db)
    .await
}
