//! Limits are set by the admin only, validated, shown to the team and stored as given; `{}`
//! removes them.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::set_limits;
use crate::helpers::app::error_detail;
use crate::helpers::stack::{Stack, spawn_stack};

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn limits_are_set_by_the_admin_only_and_validated(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_lim", 5, &[("ChatAgent", &["gpt-4o"])])
        .await;
    let put = |body: Value| {
        stack
            .app
            .admin(Method::PUT, "/api/teams/team_lim/limits")
            .json(&body)
            .send()
    };
    for body in [
        json!({"max_concurrent_calls": 0}),
        json!({"requests_per_minute": -5}),
        json!({"tokens_per_minute": 2_000_000_000_i64}),
        json!({"concurrency": 3}),
    ] {
        error_detail(put(body).await, StatusCode::BAD_REQUEST).await;
    }
    let by_team = stack
        .app
        .with_key(&key, Method::PUT, "/api/teams/team_lim/limits")
        .json(&json!({"max_concurrent_calls": 100}))
        .send()
        .await;
    error_detail(by_team, StatusCode::FORBIDDEN).await;
    let unknown = stack
        .app
        .admin(Method::PUT, "/api/teams/nobody/limits")
        .json(&json!({}))
        .send()
        .await;
    error_detail(unknown, StatusCode::NOT_FOUND).await;

    let limits =
        json!({"max_concurrent_calls": 4, "requests_per_minute": 100, "tokens_per_minute": 5000});
    assert_eq!(
        limits_after_setting(&stack, &key, limits.clone()).await,
        limits
    );
    let stored: (Option<i32>, Option<i32>, Option<i32>) = sqlx::query_as(
        "select max_concurrent_calls, requests_per_minute, tokens_per_minute from teams where team_id = 'team_lim'",
    )
    .fetch_one(&db)
    .await
    .expect("limits");
    assert_eq!(stored, (Some(4), Some(100), Some(5000)));
    assert_eq!(
        limits_after_setting(&stack, &key, json!({})).await,
        json!({"max_concurrent_calls": null, "requests_per_minute": null, "tokens_per_minute": null})
    );
}

/// Sets team_lim's limits with the admin key, then reads them back as the team sees them.
async fn limits_after_setting(stack: &Stack, key: &str, limits: Value) -> Value {
    set_limits(stack, "team_lim", limits).await;
    let team = stack
        .app
        .key_ok(key, Method::GET, "/api/teams/team_lim")
        .await;
    team["limits"].clone()
}
