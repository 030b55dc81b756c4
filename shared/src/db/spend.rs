//! Spend records of the OpenAI-compatible path: what a finished request used and cost, and the
//! release of per-request reservations left by API processes of earlier versions (requests are
//! now admitted against budget slices, see `budget_slices`).

use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::outcomes::{CostSource, SpendStatus};

/// What a finished request cost.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    pub cost_micro_usd: i64,
    pub cost_source: CostSource,
    pub http_status: Option<i32>,
    pub error: Option<String>,
}

impl Usage {
    /// The spend record's final status: `released` for a failed request that cost nothing,
    /// `recorded` otherwise.
    pub fn status(&self) -> SpendStatus {
        if self.error.is_some() && self.cost_micro_usd == 0 {
            SpendStatus::Released
        } else {
            SpendStatus::Recorded
        }
    }
}

/// Replaces the reservation by the actual cost (zero for a failed request), once: a second
/// call for the same request changes nothing. Returns whether this call recorded it. An absurd
/// reported cost saturates the spend at `i64::MAX` rather than failing the statement, so the
/// request is still recorded and the team is over budget.
async fn settle(db: &PgPool, request_id: Uuid, usage: &Usage) -> sqlx::Result<bool> {
    let status = usage.status();
    // One statement: the record's guarded transition and the balance change commit together.
    let settled = sqlx::query!(
        "with settled as (
             update spend_records set status = $2, prompt_tokens = $3, completion_tokens = $4, total_tokens = $5,
                 cost_micro_usd = $6, cost_source = $7, http_status = $8, error = $9, finished_at = now()
             where request_id = $1 and status = 'reserved'
             returning team_id, reserved_micro_usd
         )
         update credit_balances b set budget_reserved_micro_usd = b.budget_reserved_micro_usd - s.reserved_micro_usd,
             spend_micro_usd = least(b.spend_micro_usd::numeric + $6, 9223372036854775807)::int8, updated_at = now()
         from settled s where b.team_id = s.team_id",
        request_id,
        status as SpendStatus,
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        usage.cost_micro_usd,
        usage.cost_source as CostSource,
        usage.http_status,
        usage.error.as_deref()
    )
    .execute(db)
    .await?;
    Ok(settled.rows_affected() == 1)
}

/// Releases reservations older than `max_age` whose request never finished (its API process
/// died mid-request), so they stop holding budget. Returns how many were released.
pub async fn release_stale(db: &PgPool, max_age_secs: f64, limit: i64) -> sqlx::Result<u64> {
    let stale: Vec<Uuid> = sqlx::query_scalar!(
        "select request_id from spend_records
         where status = 'reserved' and created_at < now() - make_interval(secs => $1)
         order by created_at limit $2",
        max_age_secs,
        limit
    )
    .fetch_all(db)
    .await?;
    let mut released = 0;
    let usage = Usage {
        cost_source: CostSource::PriceTable,
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
