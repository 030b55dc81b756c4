//! What a job reports of its calls: the first of them listed inline and, once it has settled, its
//! costs (the guide's `costs` block). The job's own answer and its completion answer share these.

use chrono::{DateTime, Utc};
use saasllm_shared::db;
use saasllm_shared::db::calls::CallRow;
use saasllm_shared::db::jobs::JobRow;
use saasllm_shared::domain::money::{MicroUsd, Usd};
use saasllm_shared::domain::status::CallStatus;
use serde::Serialize;
use uuid::Uuid;

use crate::auth::team_not_found;
use crate::error::ApiError;
use crate::state::AppState;

/// Calls listed inline in a job; a larger job is paged with `GET /api/jobs/{job_id}/calls`.
pub const INLINE_CALLS: i64 = 1_000;

/// One call as listed in a job.
#[derive(Serialize)]
pub struct CallSummary {
    call_id: Uuid,
    purpose: Option<String>,
    model_group: String,
    status: CallStatus,
    tokens: Option<i64>,
    latency_ms: Option<i64>,
    error: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<&CallRow> for CallSummary {
    fn from(c: &CallRow) -> Self {
        Self {
            call_id: c.call_id,
            purpose: c.purpose.clone(),
            model_group: c.model_group.clone(),
            status: c.status,
            tokens: c.total_tokens,
            latency_ms: c.latency_ms,
            error: c.error.as_ref().map(|e| format!("LLM call failed: {e}")),
            created_at: c.created_at,
        }
    }
}

/// The guide's `costs` block.
#[derive(Serialize)]
pub struct Costs {
    pub total_calls: usize,
    successful_calls: usize,
    failed_calls: usize,
    total_tokens: i64,
    total_cost_usd: Usd,
    avg_latency_ms: i64,
    credit_applied: bool,
    credits_remaining: i64,
}

/// The job's costs so far and its team's remaining credits.
pub async fn costs(state: &AppState, job: &JobRow) -> Result<Costs, ApiError> {
    let (totals, balance) = tokio::try_join!(
        db::calls::totals_for_job(&state.db, job.job_id),
        db::credits::find_balance(&state.db, &job.team_id)
    )?;
    let balance = balance.ok_or_else(|| team_not_found(&job.team_id))?;
    Ok(Costs {
        total_calls: totals.total as usize,
        successful_calls: totals.succeeded as usize,
        failed_calls: totals.failed as usize,
        total_tokens: totals.tokens,
        total_cost_usd: MicroUsd(totals.cost_micro_usd).usd(),
        avg_latency_ms: totals.avg_latency_ms,
        credit_applied: job.credit_applied(),
        credits_remaining: balance.remaining(),
    })
}

/// The job's first calls for inline listing (`INLINE_CALLS` at most).
pub async fn inline_calls(state: &AppState, job_id: Uuid) -> Result<Vec<CallSummary>, ApiError> {
    let calls = db::calls::summaries_for_job(&state.db, job_id, INLINE_CALLS).await?;
    Ok(calls.iter().map(CallSummary::from).collect())
}
