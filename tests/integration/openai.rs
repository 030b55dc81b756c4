//! OpenAI-compatible endpoint: allowed models, OpenAI error shape, a budget that concurrent
//! requests cannot overspend, streaming passthrough and spend recorded on disconnect.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::ok_json;
use crate::helpers::fixtures::requests::assert_event_stream;
use crate::helpers::fixtures::requests::openai_error;
use crate::helpers::fixtures::spend::spend_and_open_reservations;
use crate::helpers::stack::{Stack, eventually, spawn_stack};

async fn chat(stack: &Stack, key: &str, body: Value) -> reqwest::Response {
    stack
        .app
        .with_key(key, Method::POST, "/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .expect("request sent")
}

/// (reserved beyond the budget slices, spend) of a team once the app's queued spend is written.
async fn open_reservations(stack: &Stack, team_id: &str) -> (i64, i64) {
    let (spend, reserved) = spend_and_open_reservations(stack, team_id).await;
    (reserved, spend)
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn passes_completions_through_and_lists_only_allowed_models(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_o", 10, &[("ChatAgent", &["gpt-3.5-turbo", "gpt-4"])])
        .await;

    let models = stack.app.key_ok(&key, Method::GET, "/v1/models").await;
    let completion = ok_json(Ok(chat(
        &stack,
        &key,
        json!({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "Hello!"}], "temperature": 0.3, "logit_bias": {"50256": -100}}),
    )
    .await))
    .await;
    let refused = openai_error(
        chat(
            &stack,
            &key,
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;

    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["gpt-3.5-turbo", "gpt-4"]);
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(
        completion["choices"][0]["message"]["content"],
        "echo: Hello!"
    );
    assert!(completion["usage"]["total_tokens"].as_i64().expect("usage") > 0);
    assert!(
        refused["message"]
            .as_str()
            .expect("message")
            .contains("not allowed")
    );
    let sent = stack.llm.requests();
    assert_eq!(
        sent.len(),
        1,
        "the refused request never reached the upstream"
    );
    assert_eq!(
        sent[0].body["logit_bias"],
        json!({"50256": -100}),
        "unknown fields pass through"
    );
    let (reserved, spend) = open_reservations(&stack, "team_o").await;
    assert_eq!(reserved, 0);
    assert!(spend > 0);
    stack.app.spend_written().await;
    let recorded: (String, Option<i64>) =
        sqlx::query_as("select status, total_tokens from spend_records where team_id = 'team_o'")
            .fetch_one(&db)
            .await
            .expect("record");
    assert_eq!(recorded.0, "recorded");
    assert_eq!(recorded.1, completion["usage"]["total_tokens"].as_i64());
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn keys_are_checked_with_openai_shaped_errors(db: PgPool) {
    let stack = spawn_stack(db).await;
    stack
        .team("team_k", 10, &[("ChatAgent", &["gpt-4o"])])
        .await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});

    let anonymous = stack
        .app
        .anonymous(Method::POST, "/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .expect("sent");
    let wrong = chat(&stack, "sk-not-a-key", body.clone()).await;
    let admin = stack
        .app
        .admin(Method::POST, "/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .expect("sent");

    openai_error(anonymous, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        openai_error(wrong, StatusCode::UNAUTHORIZED).await["code"],
        "invalid_api_key"
    );
    openai_error(admin, StatusCode::FORBIDDEN).await;
    assert_eq!(stack.llm.total_requests(), 0);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn fifty_concurrent_requests_cannot_overspend_a_one_dollar_budget(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    // 10 credits x $0.10 = $1.00. Each request is estimated at exactly $0.05 (no input price,
    // $50 per 1M output tokens, max_tokens 1000) and the upstream reports $0.05 as its cost.
    let key = stack.team("team_b", 10, &[]).await;
    stack.app.admin_ok_with(Method::POST, "/api/model-groups/create", &json!({"group_name": "Priced", "models": [{"model_name": "cost-50000", "config": {"input_cost_per_million": 0, "output_cost_per_million": 50}}]})).await;
    stack
        .app
        .admin_ok_with(
            Method::PUT,
            "/api/teams/team_b/model-groups",
            &json!(["Priced"]),
        )
        .await;
    let body = json!({"model": "cost-50000", "max_tokens": 1000, "messages": [{"role": "user", "content": "spend"}]});

    let responses = join_all((0..50).map(|_| chat(&stack, &key, body.clone()))).await;

    let mut admitted = 0;
    for response in responses {
        match response.status() {
            StatusCode::OK => admitted += 1,
            StatusCode::PAYMENT_REQUIRED => {
                let error = openai_error(response, StatusCode::PAYMENT_REQUIRED).await;
                assert!(
                    error["message"]
                        .as_str()
                        .expect("message")
                        .contains("Budget"),
                    "{error}"
                );
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(admitted, 20, "exactly $1.00 / $0.05 requests fit");
    assert_eq!(
        stack.llm.total_requests(),
        20,
        "rejected requests made no upstream call"
    );
    let (reserved, spend) = open_reservations(&stack, "team_b").await;
    assert_eq!(reserved, 0);
    assert_eq!(spend, 1_000_000, "recorded spend is exactly the budget");

    // Adding credits raises the budget at once.
    stack
        .app
        .admin_ok_with(
            Method::POST,
            "/api/credits/teams/team_b/add",
            &json!({"credits_amount": 1}),
        )
        .await;
    assert_eq!(
        chat(&stack, &key, body.clone()).await.status(),
        StatusCode::OK
    );
    let balance = stack
        .app
        .key_ok(&key, Method::GET, "/api/credits/teams/team_b/balance")
        .await;
    assert_eq!(balance["spend_usd"], 1.05);
    assert_eq!(balance["budget_usd"], 1.1);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn streams_chunks_as_they_arrive_and_records_usage(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_s", 10, &[("Streamy", &["chunkdelay-200"])])
        .await;

    let started = Instant::now();
    let response = chat(
        &stack,
        &key,
        json!({"model": "chunkdelay-200", "stream": true, "messages": [{"role": "user", "content": "tell me a long story"}]}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_event_stream(&response);
    let mut arrivals = Vec::new();
    let mut text = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        arrivals.push(started.elapsed());
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
    }

    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // The upstream was asked for usage, but this client did not ask: no chunk without choices
    // reaches it (SDK loops index choices[0]).
    assert!(!text.contains("\"choices\":[]"), "{text}");
    assert!(!text.contains("\"total_tokens\""), "{text}");
    let first_to_last = *arrivals.last().expect("chunks") - arrivals[0];
    assert!(
        first_to_last >= Duration::from_millis(600),
        "chunks arrived together: {arrivals:?}"
    );
    let sent = stack.llm.requests();
    assert_eq!(sent[0].body["stream_options"]["include_usage"], true);
    // Recorded before `[DONE]` was passed on: a balance read right after the stream includes it.
    stack.app.spend_written().await;
    let status: String =
        sqlx::query_scalar("select status from spend_records where team_id = 'team_s'")
            .fetch_one(&db)
            .await
            .expect("record");
    assert_eq!(status, "recorded");
    stack.app.spend_written().await;
    let tokens: Option<i64> =
        sqlx::query_scalar("select total_tokens from spend_records where team_id = 'team_s'")
            .fetch_one(&db)
            .await
            .expect("tokens");
    assert!(tokens.expect("usage recorded") > 0);
    assert_eq!(open_reservations(&stack, "team_s").await.0, 0);

    // A client that asks for usage gets the usage chunk.
    let with_usage = chat(
        &stack,
        &key,
        json!({"model": "chunkdelay-200", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "short"}]}),
    )
    .await
    .text()
    .await
    .expect("body");
    assert!(with_usage.contains("\"choices\":[]"), "{with_usage}");
    assert!(with_usage.contains("\"total_tokens\""), "{with_usage}");
    assert!(
        with_usage.trim_end().ends_with("data: [DONE]"),
        "{with_usage}"
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_client_leaving_mid_stream_still_leaves_a_spend_record_and_no_reservation(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_d", 10, &[("Streamy", &["chunkdelay-300"])])
        .await;

    let response = chat(
        &stack,
        &key,
        json!({"model": "chunkdelay-300", "stream": true, "messages": [{"role": "user", "content": "one two three four five six"}]}),
    )
    .await;
    let mut body = response.bytes_stream();
    for _ in 0..2 {
        body.next().await.expect("a chunk").expect("bytes");
    }
    drop(body);

    let settled = eventually(Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, String>("select status from spend_records where team_id = 'team_d'")
            .fetch_optional(&db)
            .await
            .expect("record")
            .is_some_and(|status| status != "reserved")
    })
    .await;
    assert!(settled, "the reservation was never settled");
    let (reserved, spend) = open_reservations(&stack, "team_d").await;
    assert_eq!(reserved, 0);
    assert!(spend > 0, "what was streamed is billed");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_suspended_team_gets_403_and_abandoned_reservations_are_released(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_x", 10, &[("ChatAgent", &["gpt-4o"])])
        .await;
    // A reservation left by an API process that died an hour ago.
    sqlx::query(
        "update credit_balances set budget_reserved_micro_usd = 7000 where team_id = 'team_x'",
    )
    .execute(&db)
    .await
    .expect("reserve");
    sqlx::query(
        "insert into spend_records (request_id, team_id, model, stream, reserved_micro_usd, created_at)
         values (gen_random_uuid(), 'team_x', 'gpt-4o', false, 7000, now() - interval '2 hours')",
    )
    .execute(&db)
    .await
    .expect("record");
    stack
        .app
        .admin_ok(Method::POST, "/api/teams/team_x/suspend")
        .await;

    let refused = chat(
        &stack,
        &key,
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;

    openai_error(refused, StatusCode::FORBIDDEN).await;
    assert_eq!(stack.llm.total_requests(), 0);
    let released = eventually(Duration::from_secs(10), || async {
        open_reservations(&stack, "team_x").await.0 == 0
    })
    .await;
    assert!(released, "the abandoned reservation still holds budget");
    stack.app.spend_written().await;
    let status: String =
        sqlx::query_scalar("select status from spend_records where team_id = 'team_x'")
            .fetch_one(&db)
            .await
            .expect("status");
    assert_eq!(status, "released");
}
