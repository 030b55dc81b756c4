//! A team's alert and refill settings are admin changes like any other: one audit row each
//! (never the alert signing secret), none when nothing changed or the request was refused.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::Trail;
use crate::helpers::app::{assert_not_stored, error_detail};
use crate::helpers::spawn_app;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn alert_settings_leave_one_row_per_change_and_never_the_secret(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("audited", 10).await;
    let mut trail = Trail::start(&app).await;
    let set_alerts = || app.admin(Method::PUT, "/api/teams/audited/alerts");

    let alerts = json!({"url": "https://hooks.example.com/alerts", "credits_below": 3});
    let (set, row) = trail
        .logged(
            set_alerts().json(&alerts),
            "req-alerts",
            "team.set_alerts",
            ("team", "audited"),
        )
        .await;
    let secret = set["signing_secret"].as_str().expect("secret shown once");
    assert_eq!(row["before"], Value::Null, "{row}");
    assert_eq!(row["after"]["credits_below"], 3, "{row}");
    assert_eq!(row["after"]["secret_set"], true, "{row}");

    // The same settings again change nothing: no row.
    super::change(set_alerts().json(&alerts), "req-same").await;
    trail.no_new_row().await;

    // Rotating only the secret is a change, recorded without the secret.
    let (_, row) = trail
        .logged(
            set_alerts().json(&json!({"url": "https://hooks.example.com/alerts", "credits_below": 3, "rotate_secret": true})),
            "req-rotate",
            "team.set_alerts",
            ("team", "audited"),
        )
        .await;
    assert_eq!(row["after"]["secret_set"], true, "{row}");

    // Refused: an array body.
    error_detail(
        set_alerts()
            .header("content-type", "application/json")
            .body("[]")
            .send()
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_not_stored(&db, secret).await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn refill_settings_leave_one_row_per_change_and_none_when_refused(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("audited", 10).await;
    let set_refills = || app.admin(Method::PUT, "/api/teams/audited/refills");
    let mut trail = Trail::start(&app).await;

    let (_, row) = trail
        .logged(
            set_refills().json(
                &json!({"credit_grant": {"credits": 100, "period": "1mo"}, "budget_duration": "30d"}),
            ),
            "req-refills",
            "team.set_refills",
            ("team", "audited"),
        )
        .await;
    assert_eq!(row["before"], Value::Null, "{row}");
    assert_eq!(row["after"]["credit_grant"]["credits"], 100, "{row}");

    // Refused: a bad period, another team's key. Neither leaves a row.
    error_detail(
        set_refills()
            .json(&json!({"budget_duration": "2w"}))
            .send()
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let other = app.team_with_key("other", 1).await;
    let mut trail = Trail::start(&app).await;
    error_detail(
        app.with_key(&other, Method::PUT, "/api/teams/audited/refills")
            .json(&json!({"budget_duration": "1d"}))
            .send()
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    trail.no_new_row().await;

    // Turning them off is a change with the settings before it.
    super::change(
        set_refills().json(&json!({"credit_grant": null, "budget_duration": null})),
        "req-off",
    )
    .await;
    let row = trail.one_new_row().await;
    assert_eq!(row["before"]["credit_grant"]["credits"], 100, "{row}");
}
