//! Scheduled refills and budget periods: each boundary is applied exactly once even with two
//! reconcilers racing, every grant is a `refill` ledger row that keeps the ledger equal to the
//! balance, calendar months clamp to their last day without drifting, a service that was down
//! for several periods applies one grant, a budget reset clears the spend only (reservations and
//! slices stay), and the settings are validated and keep their schedule when resent.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use reqwest::{Method, StatusCode};
use saasllm_shared::config::RedisConfig;
use saasllm_shared::db::refills::{self, Schedule};
use saasllm_shared::domain::periods::Period;
use saasllm_shared::queue::CallQueue;
use saasllm_shared::redis_conn::RedisHandle;
use saasllm_worker::{ReconcilerSettings, apply_due_refills, reconcile_pass_at};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::helpers::app::{
    TestApp, assert_ledger_consistent, count, error_detail, ok_json, redis_url,
};
use crate::helpers::spawn_app;

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
        .single()
        .expect("valid date")
}

async fn put_refills(app: &TestApp, team_id: &str, body: Value) -> Value {
    ok_json(
        app.admin(Method::PUT, &format!("/api/teams/{team_id}/refills"))
            .json(&body)
            .send()
            .await,
    )
    .await
}

fn instant(value: &Value) -> DateTime<Utc> {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{value}: {e}"))
}

/// A second pool on the same database, as another worker process has.
async fn other_pool(db: &PgPool) -> PgPool {
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
    let shown = ok_json(
        app.admin(Method::GET, "/api/credits/teams/team_refill/transactions")
            .send()
            .await,
    )
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

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_budget_reset_clears_the_spend_once_and_leaves_reservations_and_slices_alone(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_period", 10).await;
    let set = put_refills(&app, "team_period", json!({"budget_duration": "7d"})).await;
    let mut due = instant(&set["refills"]["next_budget_reset_at"]);
    // A slice an API process holds, and spend recorded as the /v1 batch writer does.
    let slice = uuid::Uuid::now_v7();
    sqlx::query(
        "insert into budget_slices (slice_id, team_id, holder, reserved_micro_usd, expires_at)
         values ($1, 'team_period', 'other-host:1', 200000, now() + interval '1 hour')",
    )
    .bind(slice)
    .execute(&db)
    .await
    .expect("slice");
    sqlx::query(
        "update credit_balances set budget_reserved_micro_usd = 200000 where team_id = 'team_period'",
    )
    .execute(&db)
    .await
    .expect("reserve");
    let other = other_pool(&db).await;

    for (round, spent) in [(1i64, 300_000i64), (2, 0), (3, 450_000)] {
        sqlx::query(
            "insert into spend_records (request_id, team_id, model, stream, status, reserved_micro_usd,
                                        cost_micro_usd, cost_source, finished_at)
             values ($1, 'team_period', 'gpt-4', false, 'recorded', $2, $2, 'price_table', now())",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(spent)
        .execute(&db)
        .await
        .expect("spend record");
        sqlx::query(
            "update credit_balances set spend_micro_usd = spend_micro_usd + $1 where team_id = 'team_period'",
        )
        .bind(spent)
        .execute(&db)
        .await
        .expect("spend");
        let now = due + TimeDelta::seconds(1);
        let (a, b) = tokio::join!(apply_due_refills(&db, now), apply_due_refills(&other, now));
        a.expect("first reconciler");
        b.expect("second reconciler");

        let (spend, reserved, slice_reserved): (i64, i64, i64) = sqlx::query_as(
            "select b.spend_micro_usd, b.budget_reserved_micro_usd, s.reserved_micro_usd
             from credit_balances b join budget_slices s using (team_id) where b.team_id = 'team_period'",
        )
        .fetch_one(&db)
        .await
        .expect("balance");
        assert_eq!((spend, reserved, slice_reserved), (0, 200_000, 200_000));
        let cleared: Vec<i64> = sqlx::query_scalar(
            "select spend_cleared_micro_usd from budget_resets where team_id = 'team_period' order by due_at",
        )
        .fetch_all(&db)
        .await
        .expect("resets");
        assert_eq!(cleared.len() as i64, round, "{cleared:?}");
        assert_eq!(cleared.last(), Some(&spent));
        // Every cost is accounted for: the spend now plus what the resets cleared.
        assert_eq!(
            count(
                &db,
                "select (select coalesce(sum(spend_cleared_micro_usd), 0) from budget_resets)::int8
                      + (select spend_micro_usd from credit_balances where team_id = 'team_period')
                      - (select coalesce(sum(cost_micro_usd), 0) from spend_records)::int8"
            )
            .await,
            0
        );
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

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn resending_a_schedule_keeps_its_boundaries_and_bad_settings_are_refused(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_sched", 5).await;
    let body = json!({"credit_grant": {"credits": 100, "period": "1mo"}, "budget_duration": "30d"});
    let first = put_refills(&app, "team_sched", body.clone()).await;
    let next_grant = instant(&first["refills"]["next_grant_at"]);
    let next_reset = instant(&first["refills"]["next_budget_reset_at"]);
    assert!(
        next_grant > Utc::now() + TimeDelta::days(27),
        "{next_grant}"
    );
    assert!(
        next_reset > Utc::now() + TimeDelta::days(29),
        "{next_reset}"
    );
    assert_eq!(first["alerts"]["enabled"], false);

    let again = put_refills(&app, "team_sched", body).await;
    assert_eq!(instant(&again["refills"]["next_grant_at"]), next_grant);
    let more = put_refills(
        &app,
        "team_sched",
        json!({"credit_grant": {"credits": 200, "period": "1mo"}, "budget_duration": "30d"}),
    )
    .await;
    assert_eq!(instant(&more["refills"]["next_grant_at"]), next_grant);
    assert_eq!(more["refills"]["credit_grant"]["credits"], 200);
    let weekly = put_refills(
        &app,
        "team_sched",
        json!({"credit_grant": {"credits": 200, "period": "7d"}, "budget_duration": "30d"}),
    )
    .await;
    assert!(instant(&weekly["refills"]["next_grant_at"]) < Utc::now() + TimeDelta::days(8));
    assert_eq!(
        instant(&weekly["refills"]["next_budget_reset_at"]),
        next_reset
    );

    let info = ok_json(
        app.with_key(&key, Method::GET, "/api/teams/team_sched")
            .send()
            .await,
    )
    .await;
    assert_eq!(
        info["refills"]["credit_grant"],
        json!({"credits": 200, "period": "7d"})
    );
    assert_eq!(info["refills"]["budget_duration"], "30d");

    let cases: Vec<(Value, &str)> = vec![
        (json!([]), "JSON object"),
        (
            json!({"credit_grant": []}),
            "credit_grant must be a JSON object",
        ),
        (
            json!({"credit_grant": {"credits": 100, "period": "2w"}}),
            "credit_grant.period must be one of",
        ),
        (
            json!({"credit_grant": {"credits": 0, "period": "1d"}}),
            "credit_grant.credits",
        ),
        (
            json!({"credit_grant": {"credits": 1_000_000_000_000i64, "period": "1d"}}),
            "credit_grant.credits",
        ),
        (json!({"credit_grant": {"credits": 100}}), "period"),
        (
            json!({"credit_grant": {"credits": 100, "period": "1d", "extra": true}}),
            "unknown field",
        ),
        (
            json!({"budget_duration": "month"}),
            "budget_duration must be one of",
        ),
        (json!({"budget_duration": "1d\u{0}"}), "NUL"),
        (
            json!({"budget_duration": "x".repeat(10 * 1024)}),
            "budget_duration",
        ),
        (json!({"budget_duration": 30}), "Invalid request body"),
    ];
    for (body, expected) in cases {
        let detail = error_detail(
            app.admin(Method::PUT, "/api/teams/team_sched/refills")
                .json(&body)
                .send()
                .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(detail.contains(expected), "{body}: {detail}");
        assert!(detail.len() < 400, "detail echoes the input: {detail}");
    }
    error_detail(
        app.with_key(&key, Method::PUT, "/api/teams/team_sched/refills")
            .json(&json!({}))
            .send()
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    error_detail(
        app.admin(Method::PUT, "/api/teams/team_nobody/refills")
            .json(&json!({"budget_duration": "1d"}))
            .send()
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(count(&db, "select count(*) from team_refills").await, 1);

    // An empty body turns both off.
    let off = put_refills(&app, "team_sched", json!({})).await;
    assert_eq!(off["refills"]["credit_grant"], Value::Null);
    assert_eq!(off["refills"]["next_grant_at"], Value::Null);
    assert_eq!(off["refills"]["budget_duration"], Value::Null);
    assert_eq!(
        count(
            &db,
            "select count(*) from team_refills where team_id = 'team_sched'
               and grant_period is null and budget_duration is null"
        )
        .await,
        1
    );
}
