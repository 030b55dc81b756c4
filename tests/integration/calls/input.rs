//! What a call sends upstream (its parameters and the upstream key, never the client's model),
//! what it costs, and what is refused before anything is sent.

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::app::{error_detail, ok_json};
use crate::helpers::stack::{chat, spawn_stack};
use crate::helpers::team_jobs::{refused_call, team_with_job};

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn chat_parameters_and_the_upstream_key_pass_through(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let (key, job_id) = team_with_job(&stack, "team_p", 5, &[("ChatAgent", &["gpt-4o"])]).await;
    let body = json!({
        "model_group": "ChatAgent",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "purpose": "params",
        "temperature": 0.2,
        "max_tokens": 50,
        "top_p": 0.9,
        "stop": ["\n"],
        "seed": 7,
        "user": "end-user-1",
        "response_format": {"type": "json_object"},
        "model": "client-must-not-choose",
    });

    ok_json(Ok(stack.llm_call(&key, &job_id, body).await)).await;

    let sent = stack.llm.requests().pop().expect("one request");
    assert_eq!(sent.model, "gpt-4o");
    assert_eq!(
        sent.authorization.as_deref(),
        Some("Bearer sk-upstream-test")
    );
    for field in [
        "temperature",
        "max_tokens",
        "top_p",
        "stop",
        "seed",
        "user",
        "response_format",
    ] {
        assert!(sent.body.get(field).is_some(), "{field} not passed through");
    }
    assert_eq!(sent.body["messages"][0]["content"], "be brief");
    assert!(sent.body.get("purpose").is_none() && sent.body.get("model_group").is_none());
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn cost_comes_from_the_litellm_header_else_from_the_price_table(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let (key, job_id) = team_with_job(
        &stack,
        "team_cost",
        5,
        &[
            ("Header", &["cost-2500"]),
            ("Table", &["gpt-3.5-turbo"]),
            ("Unknown", &["mystery"]),
        ],
    )
    .await;

    for group in ["Header", "Table", "Unknown"] {
        ok_json(Ok(stack
            .llm_call(&key, &job_id, chat(group, "price me please"))
            .await))
        .await;
    }

    let rows: Vec<(String, Option<i64>, i64, i64)> = sqlx::query_as(
        "select model_group, cost_micro_usd, prompt_tokens, completion_tokens from llm_calls order by created_at",
    )
    .fetch_all(&db)
    .await
    .expect("calls");
    assert_eq!(rows[0].1, Some(2_500));
    // gpt-3.5-turbo: $0.50 / $1.50 per 1M tokens, rounded to the micro-dollar.
    let expected = (rows[1].2 * 500_000 + rows[1].3 * 1_500_000 + 500_000) / 1_000_000;
    assert_eq!(rows[1].1, Some(expected));
    assert_eq!(rows[2].1, None, "an unknown model is not silently priced");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn calls_are_refused_for_groups_the_team_lacks_and_on_bad_input(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let (key, job_id) = team_with_job(&stack, "team_in", 5, &[("ChatAgent", &["gpt-4o"])]).await;
    stack.app.create_group("Secret", &["gpt-4"]).await;

    let forbidden = refused_call(
        &stack,
        &key,
        &job_id,
        chat("Secret", "hi"),
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        forbidden,
        "Team 'team_in' does not have access to model group 'Secret'"
    );
    let missing = refused_call(
        &stack,
        &key,
        &job_id,
        chat("Nope", "hi"),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(missing, "Model group 'Nope' not found");
    for bad in [
        json!({"model_group": "ChatAgent"}),
        json!({"model_group": "ChatAgent", "messages": []}),
        json!({"model_group": "ChatAgent", "messages": "hi"}),
        json!({"model_group": "ChatAgent", "messages": [{"content": "no role"}]}),
        json!({"model_group": "ChatAgent", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
        json!({"model_group": "ChatAgent", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
    ] {
        refused_call(&stack, &key, &job_id, bad, StatusCode::BAD_REQUEST).await;
    }
    error_detail(
        Ok(stack
            .llm_call(&key, "not-a-uuid", chat("ChatAgent", "hi"))
            .await),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let calls: i64 = sqlx::query_scalar("select count(*) from llm_calls")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(calls, 0);
    assert_eq!(stack.llm.total_requests(), 0);
}
