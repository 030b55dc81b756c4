//! USD budget of the OpenAI-compatible path: reserve an estimate before the upstream call,
//! replace it by the actual cost after. One conditional UPDATE admits a request, so concurrent
//! requests cannot together pass the budget.

use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// Reserves `estimate` micro-dollars for a request if `spend + reserved + estimate` stays within
/// `credits_allocated x usd_per_credit`. Returns the request id, or `None` when over budget.
/// The comparison is in `numeric`, so no estimate or budget can overflow `bigint` (an error, not
/// a refusal); a budget above `i64::MAX` micro-dollars counts as `i64::MAX`, so an admitted
/// reservation always fits the column.
pub async fn reserve(
    db: impl PgExecutor<'_>,
    team_id: &str,
    model: &str,
    stream: bool,
    estimate: i64,
    usd_per_credit_micro: i64,
) -> sqlx::Result<Option<Uuid>> {
    // One statement: the conditional budget update and the spend record commit together.
    let request_id = Uuid::now_v7();
    let admitted = sqlx::query(
        "with admitted as (
             update credit_balances set budget_reserved_micro_usd = budget_reserved_micro_usd + $2, updated_at = now()
             where team_id = $1
               and spend_micro_usd::numeric + budget_reserved_micro_usd + $2
                   <= least(credits_allocated::numeric * $3, 9223372036854775807)
             returning team_id
         )
         insert into spend_records (request_id, team_id, model, stream, reserved_micro_usd)
         select $4, team_id, $5, $6, $2 from admitted",
    )
    .bind(team_id)
    .bind(estimate)
    .bind(usd_per_credit_micro)
    .bind(request_id)
    .bind(model)
    .bind(stream)
    .execute(db)
    .await?;
    Ok((admitted.rows_affected() == 1).then_some(request_id))
}

/// What a finished request cost.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    pub cost_micro_usd: i64,
    pub cost_source: &'static str,
    pub http_status: Option<i32>,
    pub error: Option<String>,
}

impl Usage {
    /// The spend record's final status: `released` for a failed request that cost nothing,
    /// `recorded` otherwise.
    pub fn status(&self) -> &'static str {
        if self.error.is_some() && self.cost_micro_usd == 0 {
            "released"
        } else {
            "recorded"
        }
    }
}

/// Replaces the reservation by the actual cost (zero for a failed request), once: a second
/// call for the same request changes nothing. Returns whether this call recorded it. An absurd
/// reported cost saturates the spend at `i64::MAX` rather than failing the statement, so the
/// request is still recorded and the team is over budget.
pub async fn settle(db: &PgPool, request_id: Uuid, usage: &Usage) -> sqlx::Result<bool> {
    let status = usage.status();
    // One statement: the record's guarded transition and the balance change commit together.
    let settled = sqlx::query(
        "with settled as (
             update spend_records set status = $2, prompt_tokens = $3, completion_tokens = $4, total_tokens = $5,
                 cost_micro_usd = $6, cost_source = $7, http_status = $8, error = $9, finished_at = now()
             where request_id = $1 and status = 'reserved'
             returning team_id, reserved_micro_usd
         )
         update credit_balances b set budget_reserved_micro_usd = b.budget_reserved_micro_usd - s.reserved_micro_usd,
             spend_micro_usd = least(b.spend_micro_usd::numeric + $6, 9223372036854775807)::int8, updated_at = now()
         from settled s where b.team_id = s.team_id",
    )
    .bind(request_id)
    .bind(status)
    .bind(usage.prompt_tokens)
    .bind(usage.completion_tokens)
    .bind(usage.total_tokens)
    .bind(usage.cost_micro_usd)
    .bind(usage.cost_source)
    .bind(usage.http_status)
    .bind(usage.error.as_deref())
    .execute(db)
    .await?;
    Ok(settled.rows_affected() == 1)
}

/// The price config of `model` in the team's groups (first grant first), for cost estimates.
pub async fn model_config(
    db: impl PgExecutor<'_>,
    team_id: &str,
    model: &str,
) -> sqlx::Result<Option<serde_json::Value>> {
    sqlx::query_scalar(
        "select m.config from team_model_groups t join model_group_models m using (model_group_id)
         where t.team_id = $1 and m.model_name = $2 order by t.position, m.priority limit 1",
    )
    .bind(team_id)
    .bind(model)
    .fetch_optional(db)
    .await
}

/// Releases reservations older than `max_age` whose request never finished (its API process
/// died mid-request), so they stop holding budget. Returns how many were released.
pub async fn release_stale(db: &PgPool, max_age_secs: f64, limit: i64) -> sqlx::Result<u64> {
    let stale: Vec<Uuid> = sqlx::query_scalar(
        "select request_id from spend_records
         where status = 'reserved' and created_at < now() - make_interval(secs => $1)
         order by created_at limit $2",
    )
    .bind(max_age_secs)
    .bind(limit)
    .fetch_all(db)
    .await?;
    let mut released = 0;
    let usage = Usage {
        cost_source: "price_table",
        error: Some("reservation expired: the request never finished".into()),
        ..Usage::default()
    };
    for request_id in stale {
        if settle(db, request_id, &usage).await? {
            released += 1;
        }
    }
    Ok(released)
}
