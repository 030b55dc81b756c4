//! Reconciler step: evaluates team alerts. Fired thresholds whose value is back on the safe side
//! are armed again, then armed thresholds that are crossed fire, each queuing one signed
//! `team.credits_low` or `team.budget_threshold` delivery (sent by `webhooks`). Latency: one
//! reconciler interval (`RECONCILE_INTERVAL_SECS`) plus the webhook poll.

use chrono::{DateTime, Utc};
use saasllm_shared::db;
use sqlx::PgPool;

/// Most thresholds fired, and most re-armed, of each kind per pass.
const BATCH: i64 = 1_000;

/// One evaluation at `now` (the reconciler's clock, injectable for tests; it stamps the events).
pub async fn evaluate(db: &PgPool, now: DateTime<Utc>) -> anyhow::Result<()> {
    let rearmed = db::team_alerts::rearm(db, BATCH).await?;
    if rearmed > 0 {
        tracing::debug!(count = rearmed, "team alert thresholds armed again");
    }
    for alert in db::team_alerts::fire_crossed(db, now, BATCH).await? {
        metrics::counter!("team_alerts_fired_total", "event" => alert.event_type).increment(1);
        tracing::info!(
            team_id = %alert.team_id, event = alert.event_type, delivery_id = %alert.delivery_id,
            "team alert fired"
        );
    }
    Ok(())
}
