//! How a team's credit counters are shown, and the most credits one request may move.

use saasllm_shared::db::credits::BalanceRow;
use serde::Serialize;
use utoipa::ToSchema;

/// Largest credit amount accepted in one request.
pub const MAX_CREDITS_PER_REQUEST: i64 = 1_000_000_000;

/// Longest a balance read waits for this process's queued spend to be written: spend this
/// process admitted is written in batches after each response, so a balance read right after a
/// response includes it.
pub const BALANCE_WRITE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The credit counters as the guide nests them under `credits`, plus the hold figures.
#[derive(Serialize, ToSchema)]
pub struct CreditsView {
    pub credits_allocated: i64,
    pub credits_used: i64,
    pub credits_remaining: i64,
    pub credits_reserved: i64,
    pub credits_available: i64,
    pub credit_limit: Option<i64>,
    pub auto_refill: bool,
}

impl From<&BalanceRow> for CreditsView {
    fn from(b: &BalanceRow) -> Self {
        Self {
            credits_allocated: b.credits_allocated,
            credits_used: b.credits_used,
            credits_remaining: b.remaining(),
            credits_reserved: b.credits_reserved,
            credits_available: b.available(),
            credit_limit: b.credit_limit,
            auto_refill: b.auto_refill,
        }
    }
}
