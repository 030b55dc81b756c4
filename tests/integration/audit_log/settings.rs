//! A team's alert and refill settings are admin changes like any other: one audit row each
//! (never the alert signing secret), none when nothing changed or the request was refused.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{assert_row, change, no_new_row, one_new_row};
use crate::helpers::app::{assert_not_stored, count, error_detail};
use crate::helpers::spawn_app;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn alert_and_refill_settings_leave_one_row_per_change(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("audited", 10).await;
    let mut rows = count(&db, "select count(*) from audit_log").await;

    let alerts = json!({"url": "https://hooks.example.com/alerts", "credits_below": 3});
    let set = change(
        app.admin(Method::PUT, "/api/teams/audited/alerts")
            .json(&alerts),
        "req-alerts",
    )
    .await;
    let secret = set["signing_secret"]
        .as_str()
        .expect("secret shown once")
        .to_owned();
    let row = one_new_row(&app, &mut rows).await;
    assert_row(&row, "team.set_alerts", ("team", "audited"), "req-alerts");
    assert_eq!(row["before"], Value::Null, "{row}");
    assert_eq!(row["after"]["credits_below"], 3, "{row}");
    assert_eq!(row["after"]["secret_set"], true, "{row}");

    // The same settings again change nothing: no row.
    change(
        app.admin(Method::PUT, "/api/teams/audited/alerts")
            .json(&alerts),
        "req-same",
    )
    .await;
    no_new_row(&app, rows).await;

    // Rotating only the secret is a change, recorded without the secret.
    change(
        app.admin(Method::PUT, "/api/teams/audited/alerts")
            .json(&json!({"url": "https://hooks.example.com/alerts", "credits_below": 3, "rotate_secret": true})),
        "req-rotate",
    )
    .await;
    let row = one_new_row(&app, &mut rows).await;
    assert_row(&row, "team.set_alerts", ("team", "audited"), "req-rotate");
    assert_eq!(row["after"]["secret_set"], true, "{row}");

    change(
        app.admin(Method::PUT, "/api/teams/audited/refills").json(
            &json!({"credit_grant": {"credits": 100, "period": "1mo"}, "budget_duration": "30d"}),
        ),
        "req-refills",
    )
    .await;
    let row = one_new_row(&app, &mut rows).await;
    assert_row(&row, "team.set_refills", ("team", "audited"), "req-refills");
    assert_eq!(row["before"], Value::Null, "{row}");
    assert_eq!(row["after"]["credit_grant"]["credits"], 100, "{row}");

    // Refused: a bad period, an array body, another team's key. None leaves a row.
    error_detail(
        app.admin(Method::PUT, "/api/teams/audited/refills")
            .json(&json!({"budget_duration": "2w"}))
            .send()
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    error_detail(
        app.admin(Method::PUT, "/api/teams/audited/alerts")
            .header("content-type", "application/json")
            .body("[]")
            .send()
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let other = app.team_with_key("other", 1).await;
    rows = count(&db, "select count(*) from audit_log").await;
    error_detail(
        app.with_key(&other, Method::PUT, "/api/teams/audited/refills")
            .json(&json!({"budget_duration": "1d"}))
            .send()
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    no_new_row(&app, rows).await;

    // Turning them off is a change with the settings before it.
    change(
        app.admin(Method::PUT, "/api/teams/audited/refills")
            .json(&json!({"credit_grant": null, "budget_duration": null})),
        "req-off",
    )
    .await;
    let row = one_new_row(&app, &mut rows).await;
    assert_eq!(row["before"]["credit_grant"]["credits"], 100, "{row}");
    assert_not_stored(&db, &secret).await;
}
