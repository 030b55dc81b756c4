//! Refill settings: resending a schedule keeps its boundaries, bad settings are refused, and an
//! empty body turns both schedules off.

use chrono::{TimeDelta, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{instant, put_refills};
use crate::helpers::app::count;
use crate::helpers::fixtures::requests::assert_settings_refused;
use crate::helpers::spawn_app;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn resending_a_schedule_keeps_its_boundaries(db: PgPool) {
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

    let info = app.key_ok(&key, Method::GET, "/api/teams/team_sched").await;
    assert_eq!(
        info["refills"]["credit_grant"],
        json!({"credits": 200, "period": "7d"})
    );
    assert_eq!(info["refills"]["budget_duration"], "30d");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn bad_refill_settings_are_refused_and_an_empty_body_turns_both_schedules_off(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_sched", 5).await;
    put_refills(
        &app,
        "team_sched",
        json!({"credit_grant": {"credits": 100, "period": "1mo"}, "budget_duration": "30d"}),
    )
    .await;

    assert_settings_refused(&app, "/api/teams/team_sched/refills", bad_refill_settings()).await;
    app.key_refused(
        &key,
        Method::PUT,
        "/api/teams/team_sched/refills",
        Some(&json!({})),
        StatusCode::FORBIDDEN,
    )
    .await;
    app.admin_refused(
        Method::PUT,
        "/api/teams/team_nobody/refills",
        Some(&json!({"budget_duration": "1d"})),
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

/// Refill settings the API refuses, each with the words its 400 must contain.
fn bad_refill_settings() -> Vec<(Value, &'static str)> {
    vec![
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
    ]
}
