//! What the credit routes refuse: amounts out of range or of the wrong type (400), unknown
//! teams (404), a team key adding credits (403) or reading another team's (404); none writes.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use super::{allocated, ledger};
use crate::helpers::app::{count, error_detail};
use crate::helpers::spawn_app;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn check_with_a_required_amount_below_one_is_400(db: PgPool) {
    let app = spawn_app(db).await;
    app.team_with_key("team_a", 5).await;

    for required in [0, -3] {
        let detail = error_detail(
            app.admin(Method::POST, "/api/credits/teams/team_a/check")
                .json(&json!({"credits_required": required}))
                .send()
                .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(
            detail.starts_with("credits_required must be between 1 and"),
            "{detail}"
        );
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn invalid_credit_amounts_are_400_and_write_nothing(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_a", 100).await;
    let cases = [
        (
            json!({"credits_amount": 0}),
            "credits_amount must be a whole number between 1 and",
        ),
        (
            json!({"credits_amount": -5}),
            "credits_amount must be a whole number between 1 and",
        ),
        (
            json!({"credits_amount": 1_000_000_001_i64}),
            "credits_amount must be a whole number between 1 and",
        ),
        (
            json!({"credits_amount": 2.5}),
            "Invalid request body: invalid value: 2.5, expected a whole number",
        ),
        (
            json!({"credits_amount": "10"}),
            "Invalid request body: invalid type: string",
        ),
        (
            json!({"credits_amount": null}),
            "Invalid request body: invalid type: null",
        ),
        (
            json!({"reason": "no amount"}),
            "Invalid request body: missing field `credits_amount`",
        ),
    ];

    for (body, expected) in &cases {
        let detail = error_detail(
            app.admin(Method::POST, "/api/credits/teams/team_a/add")
                .json(body)
                .send()
                .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(detail.starts_with(expected), "{body}: {detail}");
    }

    assert_eq!(
        ledger(&db, "team_a").await,
        vec![("allocation".to_owned(), 100, 100)]
    );
    assert_eq!(allocated(&db, "team_a").await, 100);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn credits_of_an_unknown_team_are_404(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_a", 1).await;
    let requests = [
        app.admin(Method::GET, "/api/credits/teams/team_nope/balance"),
        app.admin(Method::GET, "/api/credits/teams/team_nope/transactions"),
        app.admin(Method::POST, "/api/credits/teams/team_nope/check"),
        app.admin(Method::POST, "/api/credits/teams/team_nope/add")
            .json(&json!({"credits_amount": 10})),
    ];

    for request in requests {
        let detail = error_detail(request.send().await, StatusCode::NOT_FOUND).await;
        assert_eq!(detail, "Team 'team_nope' not found");
    }
    assert_eq!(
        count(&db, "select count(*) from credit_transactions").await,
        1
    );
    assert_eq!(count(&db, "select count(*) from credit_balances").await, 1);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_team_key_cannot_add_credits_even_to_its_own_team(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_a", 10).await;

    let detail = error_detail(
        app.with_key(&key, Method::POST, "/api/credits/teams/team_a/add")
            .json(&json!({"credits_amount": 1000}))
            .send()
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;

    assert_eq!(detail, "This endpoint requires the admin key");
    assert_eq!(
        ledger(&db, "team_a").await,
        vec![("allocation".to_owned(), 10, 10)]
    );
    assert_eq!(allocated(&db, "team_a").await, 10);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn another_teams_key_gets_404_on_balance_transactions_and_check(db: PgPool) {
    let app = spawn_app(db).await;
    app.team_with_key("team_a", 10).await;
    let other_key = app.team_with_key("team_b", 10).await;
    let requests = [
        app.with_key(&other_key, Method::GET, "/api/credits/teams/team_a/balance"),
        app.with_key(
            &other_key,
            Method::GET,
            "/api/credits/teams/team_a/transactions",
        ),
        app.with_key(&other_key, Method::POST, "/api/credits/teams/team_a/check")
            .json(&json!({"credits_required": 1})),
    ];

    for request in requests {
        let detail = error_detail(request.send().await, StatusCode::NOT_FOUND).await;
        assert_eq!(detail, "Team 'team_a' not found");
    }
}
