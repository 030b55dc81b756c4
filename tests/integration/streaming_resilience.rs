//! Upstream resilience on the streaming job path (`"stream": true` on llm-call), which the API
//! process runs through the same model chain as the worker: a transient failure before the first
//! byte is retried on the same model (honouring Retry-After), and a model that keeps failing
//! cools down so later streamed calls skip it.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::fixtures::resilience::{
    assert_cooled_down_after_two_failures, assert_waited_for_retry_after, attempts_of,
    cooldown_after_two_failures, one_retry_honouring_retry_after, retried_after_429_then_fell_back,
    retried_twice_then_succeeded, stack_with_job, two_quick_retries,
};
use crate::helpers::stack::{Stack, chat};

/// Streams a call of `group` and returns its final event (`call_id`, `response`, `metadata`).
async fn stream_call(stack: &Stack, key: &str, job: &str, group: &str, text: &str) -> Value {
    let mut body = chat(group, text);
    body["stream"] = json!(true);
    let response = stack.llm_call(key, job, body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    let events: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    serde_json::from_str(events[events.len() - 2]).expect("final event")
}

/// The call's status, the model that served it, and the worker id it was claimed under.
async fn call_row(db: &PgPool, event: &Value) -> (String, Option<String>, Option<String>) {
    sqlx::query_as("select status, model_used, worker_id from llm_calls where call_id = $1::uuid")
        .bind(event["call_id"].as_str().expect("call_id"))
        .fetch_one(db)
        .await
        .expect("call")
}

fn succeeded_with(model: &str) -> (String, Option<String>, Option<String>) {
    (
        "succeeded".to_owned(),
        Some(model.to_owned()),
        Some("api-stream".to_owned()),
    )
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_streamed_call_retries_a_transient_failure_on_the_same_model(db: PgPool) {
    let (stack, key, job) = stack_with_job(
        &db,
        two_quick_retries(),
        "team_srt",
        &[("Flaky", &["flaky-2-gpt", "gpt-4o"])],
    )
    .await;

    let last = stream_call(&stack, &key, &job, "Flaky", "hi").await;

    assert_eq!(last["response"]["content"], "echo: hi");
    assert_eq!(
        attempts_of(&db, &last).await,
        retried_twice_then_succeeded()
    );
    assert_eq!(call_row(&db, &last).await, succeeded_with("flaky-2-gpt"));
    assert_eq!(stack.llm.count_for_model("flaky-2-gpt"), 3);
    assert_eq!(stack.llm.count_for_model("gpt-4o"), 0, "no fallback");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_streamed_call_waits_for_retry_after_then_falls_back(db: PgPool) {
    let (stack, key, job) = stack_with_job(
        &db,
        one_retry_honouring_retry_after(),
        "team_sra",
        &[("Limited", &["fail-429", "gpt-4o"])],
    )
    .await;

    let last = stream_call(&stack, &key, &job, "Limited", "hi").await;

    assert_eq!(
        attempts_of(&db, &last).await,
        retried_after_429_then_fell_back()
    );
    assert_eq!(call_row(&db, &last).await, succeeded_with("gpt-4o"));
    // The fake's 429 says `Retry-After: 1`: the retry waited for it.
    assert_waited_for_retry_after(&db, &last).await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_model_that_keeps_failing_streams_cools_down_and_is_skipped(db: PgPool) {
    let (stack, key, job) = stack_with_job(
        &db,
        cooldown_after_two_failures(),
        "team_scd",
        &[("Dying", &["fail-500", "gpt-4o"])],
    )
    .await;

    let mut calls = Vec::new();
    for text in ["one", "two", "three", "four"] {
        calls.push(stream_call(&stack, &key, &job, "Dying", text).await);
    }

    assert_cooled_down_after_two_failures(&stack, &db, &calls).await;
    for call in &calls {
        assert_eq!(call_row(&db, call).await, succeeded_with("gpt-4o"));
    }
}
