//! Reconciler step: applies the scheduled credit grants and budget resets that are due. Each
//! boundary is applied once by one guarded update (`db::refills`), whatever the number of
//! reconcilers; after an outage one grant or reset is applied and the schedule moves to the
//! first boundary after `now`.

use chrono::{DateTime, Utc};
use saasllm_shared::db;
use sqlx::PgPool;

/// Most grants, and most resets, applied per pass.
const BATCH: i64 = 1_000;

/// Applies every grant and budget reset due at `now` (the reconciler's clock, injectable for
/// tests).
pub async fn apply_due(db: &PgPool, now: DateTime<Utc>) -> anyhow::Result<()> {
    for grant in db::refills::due_grants(db, now, BATCH).await? {
        let (due, next_at) = (&grant.due, grant.due.next_after(now));
        match db::refills::apply_grant(db, &grant, next_at).await? {
            Some((balance, _)) => {
                metrics::counter!("credit_refills_total").increment(1);
                tracing::info!(
                    team_id = %due.team_id, credits = grant.credits, due_at = %due.due_at,
                    %next_at, credits_remaining = balance.remaining(),
                    "scheduled credit grant applied"
                );
            }
            None => tracing::debug!(
                team_id = %due.team_id, due_at = %due.due_at,
                "scheduled grant already applied or changed meanwhile"
            ),
        }
    }
    for due in db::refills::due_resets(db, now, BATCH).await? {
        let next_at = due.next_after(now);
        match db::refills::apply_reset(db, &due, next_at).await? {
            Some(cleared) => {
                metrics::counter!("budget_resets_total").increment(1);
                tracing::info!(
                    team_id = %due.team_id, due_at = %due.due_at, %next_at,
                    spend_cleared_micro_usd = cleared, "budget period reset"
                );
            }
            None => tracing::debug!(
                team_id = %due.team_id, due_at = %due.due_at,
                "budget reset already applied or changed meanwhile"
            ),
        }
    }
    Ok(())
}
