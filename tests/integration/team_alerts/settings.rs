//! Alert settings: shown in the team's info (a team key sees the URL's origin only), the secret
//! only in the answer that set it; bad settings refused with 400, team keys with 403.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::put_alerts;
use crate::helpers::app::{count, error_detail};
use crate::helpers::fixtures::requests::assert_settings_refused;
use crate::helpers::spawn_app;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn team_info_shows_the_settings_a_team_key_sees_the_url_origin_and_nobody_the_secret(
    db: PgPool,
) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_info", 5).await;
    let url = "https://hooks.example.com:8443/alerts?token=s3cr3t";
    let first = put_alerts(
        &app,
        "team_info",
        json!({"url": url, "credits_below": 2, "budget_spend_pct": 90}),
    )
    .await;
    let secret = first["signing_secret"].as_str().expect("secret").to_owned();
    // Resending keeps the secret and does not show it again.
    let again = put_alerts(
        &app,
        "team_info",
        json!({"url": url, "credits_below": 2, "budget_spend_pct": 90}),
    )
    .await;
    assert_eq!(again.get("signing_secret"), None);
    let stored: String =
        sqlx::query_scalar("select secret from team_alerts where team_id = 'team_info'")
            .fetch_one(&db)
            .await
            .expect("secret");
    assert_eq!(stored, secret);

    let by_admin = app.admin_ok(Method::GET, "/api/teams/team_info").await;
    let by_team = app.key_ok(&key, Method::GET, "/api/teams/team_info").await;
    assert_eq!(by_admin["alerts"]["url"], url);
    assert_eq!(by_team["alerts"]["url"], "https://hooks.example.com:8443");
    for info in [&by_admin, &by_team] {
        assert_eq!(info["alerts"]["credits_below"], 2);
        assert_eq!(info["alerts"]["budget_spend_pct"], 90);
        assert_eq!(info["alerts"]["credits_below_state"], "armed");
        assert_eq!(info["refills"]["credit_grant"], Value::Null);
        assert!(!info.to_string().contains(&secret), "secret shown: {info}");
    }
    assert!(!by_team.to_string().contains("s3cr3t"), "{by_team}");

    // Rotating shows the new secret once; turning alerts off keeps it for pending deliveries.
    let rotated = put_alerts(
        &app,
        "team_info",
        json!({"url": url, "credits_below": 2, "rotate_secret": true}),
    )
    .await;
    let new_secret = rotated["signing_secret"].as_str().expect("rotated secret");
    assert_ne!(new_secret, secret);
    assert_eq!(rotated["alerts"]["budget_spend_pct"], Value::Null);
    let off = put_alerts(&app, "team_info", json!({"enabled": false})).await;
    assert_eq!(off["alerts"]["enabled"], false);
    assert_eq!(off["alerts"]["url"], Value::Null);
    assert_eq!(
        count(
            &db,
            "select count(*) from team_alerts where team_id = 'team_info'
               and url is null and credits_below is null and budget_spend_pct is null and secret <> ''"
        )
        .await,
        1
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn bad_alert_settings_get_400_team_keys_403_and_unknown_teams_404(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_bad", 5).await;
    assert_settings_refused(&app, "/api/teams/team_bad/alerts", bad_alert_settings()).await;
    let raw = error_detail(
        app.admin(Method::PUT, "/api/teams/team_bad/alerts")
            .body("{\"credits_below\": ")
            .send()
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(raw.contains("Malformed JSON"), "{raw}");

    let body = json!({"url": "https://hooks.example.com/alerts", "credits_below": 5});
    app.key_refused(
        &key,
        Method::PUT,
        "/api/teams/team_bad/alerts",
        Some(&body),
        StatusCode::FORBIDDEN,
    )
    .await;
    let missing = app
        .admin_refused(
            Method::PUT,
            "/api/teams/team_nobody/alerts",
            Some(&body),
            StatusCode::NOT_FOUND,
        )
        .await;
    assert!(missing.contains("team_nobody"), "{missing}");
    assert_eq!(count(&db, "select count(*) from team_alerts").await, 0);
    assert_eq!(
        count(&db, "select count(*) from webhook_deliveries").await,
        0
    );
}

/// Alert settings the API refuses, each with the words its 400 must contain.
fn bad_alert_settings() -> Vec<(Value, &'static str)> {
    let ok_url = "https://hooks.example.com/alerts";
    let long_url = format!("https://hooks.example.com/{}", "a".repeat(10 * 1024));
    vec![
        (json!([]), "JSON object"),
        (
            json!({"url": "http://127.0.0.1/hook", "credits_below": 5}),
            "url",
        ),
        (
            json!({"url": "http://169.254.169.254/latest", "credits_below": 5}),
            "url",
        ),
        (
            json!({"url": "http://localhost:8080/hook", "credits_below": 5}),
            "url",
        ),
        (
            json!({"url": "ftp://hooks.example.com/", "credits_below": 5}),
            "url",
        ),
        (json!({"url": long_url, "credits_below": 5}), "at most 2048"),
        (
            json!({"url": "https://hooks.example.com/\u{0}", "credits_below": 5}),
            "NUL",
        ),
        (json!({"url": ok_url, "credits_below": 0}), "credits_below"),
        (
            json!({"url": ok_url, "credits_below": 1_000_000_000_000i64}),
            "credits_below",
        ),
        (
            json!({"url": ok_url, "credits_below": 1e30}),
            "whole number",
        ),
        (
            json!({"url": ok_url, "budget_spend_pct": 0}),
            "budget_spend_pct",
        ),
        (
            json!({"url": ok_url, "budget_spend_pct": 101}),
            "budget_spend_pct",
        ),
        (
            json!({"url": ok_url, "budget_spend_pct": "80"}),
            "Invalid request body",
        ),
        (json!({"credits_below": 5}), "url is required"),
        (json!({"url": ok_url}), "no threshold"),
        (
            json!({"enabled": false, "credits_below": 5, "url": ok_url}),
            "enabled is false",
        ),
        (json!({"enabled": true, "url": ok_url}), "no threshold"),
        (
            json!({"url": ok_url, "credits_below": 5, "secret": "whsec_short"}),
            "secret",
        ),
        (
            json!({"url": ok_url, "credits_below": 5, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "rotate_secret": true}),
            "not both",
        ),
        (
            json!({"url": ok_url, "credits_below": 5, "unknown": 1}),
            "unknown field",
        ),
    ]
}
