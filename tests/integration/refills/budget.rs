//! Budget periods: a reset clears the spend once, even with two reconcilers racing, and leaves
//! the reservations and the slices API processes hold alone.

use chrono::{DateTime, TimeDelta, Utc};
use saasllm_worker::apply_due_refills;
use serde_json::json;
use sqlx::PgPool;

use super::{instant, other_pool, put_refills};
use crate::helpers::app::{assert_ledger_consistent, count};
use crate::helpers::spawn_app;

/// A slice of 0.20 USD another API process holds for `team_period`, reserved in its balance.
async fn hold_a_slice(db: &PgPool) {
    let slice = uuid::Uuid::now_v7();
    sqlx::query(
        "insert into budget_slices (slice_id, team_id, holder, reserved_micro_usd, expires_at)
         values ($1, 'team_period', 'other-host:1', 200000, now() + interval '1 hour')",
    )
    .bind(slice)
    .execute(db)
    .await
    .expect("slice");
    sqlx::query(
        "update credit_balances set budget_reserved_micro_usd = 200000 where team_id = 'team_period'",
    )
    .execute(db)
    .await
    .expect("reserve");
}

/// Records `spent` micro-USD of `team_period` as the /v1 batch writer does: a spend record and
/// the balance's spend.
async fn record_spend(db: &PgPool, spent: i64) {
    sqlx::query(
        "insert into spend_records (request_id, team_id, model, stream, status, reserved_micro_usd,
                                    cost_micro_usd, cost_source, finished_at)
         values ($1, 'team_period', 'gpt-4', false, 'recorded', $2, $2, 'price_table', now())",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(spent)
    .execute(db)
    .await
    .expect("spend record");
    sqlx::query(
        "update credit_balances set spend_micro_usd = spend_micro_usd + $1 where team_id = 'team_period'",
    )
    .bind(spent)
    .execute(db)
    .await
    .expect("spend");
}

/// Asserts the state after the `round`th reset of `team_period`: the spend cleared (the last
/// reset clearing `spent`), the reservation and the slice kept, and every cost accounted for.
async fn assert_reset_cleared(db: &PgPool, round: i64, spent: i64) {
    let (spend, reserved, slice_reserved): (i64, i64, i64) = sqlx::query_as(
        "select b.spend_micro_usd, b.budget_reserved_micro_usd, s.reserved_micro_usd
         from credit_balances b join budget_slices s using (team_id) where b.team_id = 'team_period'",
    )
    .fetch_one(db)
    .await
    .expect("balance");
    assert_eq!((spend, reserved, slice_reserved), (0, 200_000, 200_000));
    let cleared: Vec<i64> = sqlx::query_scalar(
        "select spend_cleared_micro_usd from budget_resets where team_id = 'team_period' order by due_at",
    )
    .fetch_all(db)
    .await
    .expect("resets");
    assert_eq!(cleared.len() as i64, round, "{cleared:?}");
    assert_eq!(cleared.last(), Some(&spent));
    // Every cost is accounted for: the spend now plus what the resets cleared.
    assert_eq!(
        count(
            db,
            "select (select coalesce(sum(spend_cleared_micro_usd), 0) from budget_resets)::int8
              + (select spend_micro_usd from credit_balances where team_id = 'team_period')
              - (select coalesce(sum(cost_micro_usd), 0) from spend_records)::int8"
        )
        .await,
        0
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_budget_reset_clears_the_spend_once_and_leaves_reservations_and_slices_alone(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_period", 10).await;
    let set = put_refills(&app, "team_period", json!({"budget_duration": "7d"})).await;
    let mut due = instant(&set["refills"]["next_budget_reset_at"]);
    // A slice an API process holds, and spend recorded as the /v1 batch writer does.
    hold_a_slice(&db).await;
    let other = other_pool(&db).await;

    for (round, spent) in [(1i64, 300_000i64), (2, 0), (3, 450_000)] {
        record_spend(&db, spent).await;
        let now = due + TimeDelta::seconds(1);
        let (a, b) = tokio::join!(apply_due_refills(&db, now), apply_due_refills(&other, now));
        a.expect("first reconciler");
        b.expect("second reconciler");

        assert_reset_cleared(&db, round, spent).await;
        let next: DateTime<Utc> = sqlx::query_scalar(
            "select next_budget_reset_at from team_refills where team_id = 'team_period'",
        )
        .fetch_one(&db)
        .await
        .expect("next reset");
        assert_eq!(next, due + TimeDelta::days(7));
        due = next;
    }
    // Credits were never touched by the resets.
    assert_ledger_consistent(&db, "team_period").await;
}
