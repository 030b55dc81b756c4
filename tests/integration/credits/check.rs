//! `POST /api/credits/teams/{team_id}/check`: whether enough credits are available, reserving
//! nothing; a body may be absent or `{}` (one credit) but not whitespace nor an array.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::{TestApp, count, error_detail, ok_json};
use crate::helpers::spawn_app;

/// The admin's check of `team` with this body, or none; asserts a 200.
async fn check(app: &TestApp, team: &str, body: Option<Value>) -> Value {
    let request = app.admin(Method::POST, &format!("/api/credits/teams/{team}/check"));
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    ok_json(request.send().await).await
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn check_reports_whether_enough_credits_are_available(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_a", 5).await;
    app.team_with_key("team_empty", 0).await;

    let exact = check(&app, "team_a", Some(json!({"credits_required": 5}))).await;
    let too_many = check(&app, "team_a", Some(json!({"credits_required": 6}))).await;
    let empty_body = check(&app, "team_a", None).await;
    let empty_object = check(&app, "team_a", Some(json!({}))).await;
    let empty_team = check(&app, "team_empty", None).await;
    let by_team = ok_json(
        app.with_key(&key, Method::POST, "/api/credits/teams/team_a/check")
            .json(&json!({"credits_required": 2}))
            .send()
            .await,
    )
    .await;

    assert_eq!(exact["team_id"], "team_a");
    assert_eq!(exact["available"], true);
    assert_eq!(exact["credits_required"], 5);
    assert_eq!(exact["credits_remaining"], 5);
    assert_eq!(exact["credits_available"], 5);
    assert_eq!(too_many["available"], false);
    assert_eq!(too_many["credits_required"], 6);
    for defaulted in [&empty_body, &empty_object] {
        assert_eq!(defaulted["credits_required"], 1);
        assert_eq!(defaulted["available"], true);
    }
    assert_eq!(empty_team["credits_required"], 1);
    assert_eq!(empty_team["available"], false);
    assert_eq!(by_team["available"], true);
    // Checking reserves nothing.
    assert_eq!(
        count(
            &db,
            "select coalesce(sum(credits_reserved), 0)::bigint from credit_balances"
        )
        .await,
        0
    );
    assert_eq!(
        count(&db, "select count(*) from credit_transactions").await,
        1
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn check_refuses_a_body_of_whitespace_or_an_array(db: PgPool) {
    let app = spawn_app(db).await;
    app.team_with_key("team_a", 5).await;
    let send_raw = |body: &'static str| {
        app.admin(Method::POST, "/api/credits/teams/team_a/check")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let detail = error_detail(send_raw("\r\n ").await, StatusCode::BAD_REQUEST).await;
    assert!(detail.contains("only whitespace"), "{detail}");
    for array in ["[]", " [5]"] {
        let refused = send_raw(array).await.expect("request");
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{array}");
    }
}
