//! Scheduled refills and budget periods: each boundary is applied exactly once even with two
//! reconcilers racing, every grant is a `refill` ledger row that keeps the ledger equal to the
//! balance, calendar months clamp to their last day without drifting, a service that was down
//! for several periods applies one grant, a budget reset clears the spend only (reservations and
//! slices stay), and the settings are validated and keep their schedule when resent.

mod budget;
mod settings;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use reqwest::Method;
use saasllm_shared::config::RedisConfig;
use saasllm_shared::db::refills::{self, Schedule};
use saasllm_shared::domain::periods::Period;
use saasllm_shared::queue::CallQueue;
use saasllm_shared::redis_conn::RedisHandle;
use saasllm_worker::{ReconcilerSettings, apply_due_refills, reconcile_pass_at};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::helpers::app::{TestApp, assert_ledger_consistent, count, redis_url};
use crate::helpers::spawn_app;

pub(super) fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
        .single()
        .expect("valid date")
}

pub(super) async fn put_refills(app: &TestApp, team_id: &str, body: Value) -> Value {
    app.admin_ok_with(Method::PUT, &format!("/api/teams/{team_id}/refills"), &body)
        .await
}

pub(super) fn instant(value: &Value) -> DateTime<Utc> {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{value}: {e}"))
}

/// A second pool on the same database, as another worker process has.
pub(super) async fn other_pool(db: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect_with(db.connect_options().as_ref().clone())
        .await
        .expect("second pool")
}

/// Writes a schedule as the API would have at `set_at`.
async fn schedule(
    db: &PgPool,
    team_id: &str,
    grant: Option<(i64, Period)>,
    budget: Option<Period>,
    set_at: DateTime<Utc>,
) {
    let mut conn = db.acquire().await.expect("connection");
    refills::upsert(
        &mut conn,
        team_id,
        grant.map(|(credits, period)| (credits, Schedule::keep_or_start(period, None, set_at))),
        budget.map(|period| Schedule::keep_or_start(period, None, set_at)),
    )
    .await
    .expect("schedule");
}

async fn next_grant_at(db: &PgPool, team_id: &str) -> Option<DateTime<Utc>> {
    sqlx::query_scalar("select next_grant_at from team_refills where team_id = $1")
        .bind(team_id)
        .fetch_one(db)
        .await
        .expect("schedule")
}

/// The boundaries granted, from the ledger's `refill` rows, oldest first.
async fn refills_granted(db: &PgPool, team_id: &str) -> Vec<(i64, String)> {
    sqlx::query_as(
        "select credits_amount, metadata ->> 'due_at' from credit_transactions
         where team_id = $1 and transaction_type = 'refill' order by seq",
    )
    .bind(team_id)
    .fetch_all(db)
    .await
    .expect("ledger")
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn each_period_is_granted_exactly_once_with_two_reconcilers_racing(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_refill", 5).await;
    let before = Utc::now();
    let set = put_refills(
        &app,
        "team_refill",
        json!({"credit_grant": {"credits": 100, "period": "1d"}}),
    )
    .await;
    assert_eq!(
        set["refills"]["credit_grant"],
        json!({"credits": 100, "period": "1d"})
    );
    let mut due = instant(&set["refills"]["next_grant_at"]);
    assert!(
        due >= before + TimeDelta::days(1) && due <= Utc::now() + TimeDelta::days(1),
        "{due}"
    );
    // Nothing is due yet.
    apply_due_refills(&db, Utc::now()).await.expect("refills");
    assert!(refills_granted(&db, "team_refill").await.is_empty());

    let other = other_pool(&db).await;
    let redis = RedisHandle::new(&RedisConfig::standalone(
        &redis_url(),
        &format!("test-{}", uuid::Uuid::new_v4()),
    ))
    .expect("redis");
    let queue = CallQueue::new(redis);
    let settings = ReconcilerSettings {
        interval: Duration::from_secs(1),
        grace: Duration::from_secs(3),
    };
    for round in 1..=8i64 {
        let now = due + TimeDelta::seconds(1);
        if round == 1 {
            // Whole passes, as two worker processes run them.
            let (a, b) = tokio::join!(
                reconcile_pass_at(&db, &queue, settings, now),
                reconcile_pass_at(&other, &queue, settings, now)
            );
            a.expect("first pass");
            b.expect("second pass");
        } else {
            let (a, b) = tokio::join!(apply_due_refills(&db, now), apply_due_refills(&other, now));
            a.expect("first reconciler");
            b.expect("second reconciler");
        }
        // A later pass at the same time finds nothing due.
        apply_due_refills(&db, now).await.expect("refills");
        let granted = refills_granted(&db, "team_refill").await;
        assert_eq!(granted.len() as i64, round, "{granted:?}");
        assert_eq!(
            count(
                &db,
                "select credits_allocated from credit_balances where team_id = 'team_refill'"
            )
            .await,
            5 + 100 * round
        );
        let next = next_grant_at(&db, "team_refill").await.expect("next grant");
        assert_eq!(next, due + TimeDelta::days(1));
        due = next;
    }
    assert_ledger_consistent(&db, "team_refill").await;
    let shown = app
        .admin_ok(Method::GET, "/api/credits/teams/team_refill/transactions")
        .await;
    assert_eq!(shown["transactions"][0]["transaction_type"], "refill");
    assert_eq!(shown["transactions"][0]["reason"], "Scheduled refill (1d)");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn calendar_months_fall_on_the_anchor_day_or_the_last_day_of_shorter_months(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_month", 0).await;
    app.team_with_key("team_leap", 0).await;
    schedule(
        &db,
        "team_month",
        Some((10, Period::Month)),
        None,
        at(2027, 1, 31, 9),
    )
    .await;
    schedule(
        &db,
        "team_leap",
        Some((10, Period::Month)),
        None,
        at(2028, 1, 31, 9),
    )
    .await;
    assert_eq!(
        next_grant_at(&db, "team_month").await,
        Some(at(2027, 2, 28, 9))
    );

    // A second before the boundary nothing is due; at the boundary it is.
    apply_due_refills(&db, at(2027, 2, 28, 9) - TimeDelta::seconds(1))
        .await
        .expect("refills");
    assert!(refills_granted(&db, "team_month").await.is_empty());
    let mut now = at(2027, 2, 28, 9);
    for expected_next in [
        at(2027, 3, 31, 9),
        at(2027, 4, 30, 9),
        at(2027, 5, 31, 9),
        at(2027, 6, 30, 9),
    ] {
        apply_due_refills(&db, now).await.expect("refills");
        assert_eq!(next_grant_at(&db, "team_month").await, Some(expected_next));
        now = expected_next;
    }
    let due: Vec<String> = refills_granted(&db, "team_month")
        .await
        .into_iter()
        .map(|(credits, due_at)| {
            assert_eq!(credits, 10);
            due_at
        })
        .collect();
    assert_eq!(
        due,
        [
            "2027-02-28T09:00:00Z",
            "2027-03-31T09:00:00Z",
            "2027-04-30T09:00:00Z",
            "2027-05-31T09:00:00Z"
        ]
    );
    let last: Option<DateTime<Utc>> =
        sqlx::query_scalar("select last_grant_at from team_refills where team_id = 'team_month'")
            .fetch_one(&db)
            .await
            .expect("last grant");
    assert_eq!(last, Some(at(2027, 5, 31, 9)));

    apply_due_refills(&db, at(2028, 2, 29, 9))
        .await
        .expect("refills");
    assert_eq!(
        next_grant_at(&db, "team_leap").await,
        Some(at(2028, 3, 31, 9))
    );
    assert_eq!(
        refills_granted(&db, "team_leap").await,
        [(10, "2028-02-29T09:00:00Z".to_owned())]
    );
    assert_ledger_consistent(&db, "team_month").await;
    assert_ledger_consistent(&db, "team_leap").await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn after_downtime_one_grant_is_applied_and_the_schedule_moves_to_the_next_boundary(
    db: PgPool,
) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_down", 1).await;
    let anchor = at(2027, 3, 1, 0);
    schedule(
        &db,
        "team_down",
        Some((25, Period::Day)),
        Some(Period::Week),
        anchor,
    )
    .await;
    sqlx::query("update credit_balances set spend_micro_usd = 40000 where team_id = 'team_down'")
        .execute(&db)
        .await
        .expect("spend");

    // Down from before the first boundary until ten and a half days later.
    let back = anchor + TimeDelta::days(10) + TimeDelta::hours(12);
    apply_due_refills(&db, back).await.expect("refills");
    apply_due_refills(&db, back + TimeDelta::minutes(1))
        .await
        .expect("refills");

    assert_eq!(
        refills_granted(&db, "team_down").await,
        [(25, "2027-03-02T00:00:00Z".to_owned())]
    );
    assert_eq!(
        next_grant_at(&db, "team_down").await,
        Some(anchor + TimeDelta::days(11))
    );
    let (resets, next_reset): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "select (select count(*) from budget_resets where team_id = 'team_down'), next_budget_reset_at
         from team_refills where team_id = 'team_down'",
    )
    .fetch_one(&db)
    .await
    .expect("resets");
    assert_eq!(resets, 1);
    assert_eq!(next_reset, Some(anchor + TimeDelta::days(14)));
    assert_eq!(
        count(
            &db,
            "select credits_allocated from credit_balances where team_id = 'team_down'"
        )
        .await,
        26
    );
    assert_ledger_consistent(&db, "team_down").await;
}
