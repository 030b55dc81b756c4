//! Upstream resilience on the streaming job path (`"stream": true` on llm-call), which the API
//! process runs through the same model chain as the worker: a transient failure before the first
//! byte is retried on the same model (honouring Retry-After), and a model that keeps failing
//! cools down so later streamed calls skip it.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::stack::{Stack, StackOptions, chat, spawn_stack_with, test_worker_options};
use saasllm_worker::WorkerOptions;

fn options(worker_options: WorkerOptions) -> StackOptions {
    StackOptions {
        worker_options,
        ..StackOptions::default()
    }
}

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

async fn attempts_of(db: &PgPool, event: &Value) -> Vec<(String, String, Option<i32>)> {
    sqlx::query_as(
        "select model_name, outcome, http_status from llm_call_attempts
         where call_id = $1::uuid order by attempt_id",
    )
    .bind(event["call_id"].as_str().expect("call_id"))
    .fetch_all(db)
    .await
    .expect("attempts")
}

/// The call's status, the model that served it, and the worker id it was claimed under.
async fn call_row(db: &PgPool, event: &Value) -> (String, Option<String>, Option<String>) {
    sqlx::query_as("select status, model_used, worker_id from llm_calls where call_id = $1::uuid")
        .bind(event["call_id"].as_str().expect("call_id"))
        .fetch_one(db)
        .await
        .expect("call")
}

fn attempt(model: &str, outcome: &str, status: Option<i32>) -> (String, String, Option<i32>) {
    (model.to_owned(), outcome.to_owned(), status)
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
    let stack = spawn_stack_with(
        db.clone(),
        options(WorkerOptions {
            upstream_retries: 2,
            upstream_retry_base_ms: 20,
            ..test_worker_options()
        }),
    )
    .await;
    let key = stack
        .team("team_srt", 5, &[("Flaky", &["flaky-2-gpt", "gpt-4o"])])
        .await;
    let job = stack.create_job(&key, "team_srt").await;

    let last = stream_call(&stack, &key, &job, "Flaky", "hi").await;

    assert_eq!(last["response"]["content"], "echo: hi");
    assert_eq!(
        attempts_of(&db, &last).await,
        vec![
            attempt("flaky-2-gpt", "retry", Some(503)),
            attempt("flaky-2-gpt", "retry", Some(503)),
            attempt("flaky-2-gpt", "succeeded", Some(200)),
        ]
    );
    assert_eq!(call_row(&db, &last).await, succeeded_with("flaky-2-gpt"));
    assert_eq!(stack.llm.count_for_model("flaky-2-gpt"), 3);
    assert_eq!(stack.llm.count_for_model("gpt-4o"), 0, "no fallback");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_streamed_call_waits_for_retry_after_then_falls_back(db: PgPool) {
    let stack = spawn_stack_with(
        db.clone(),
        options(WorkerOptions {
            upstream_retries: 1,
            upstream_retry_base_ms: 10,
            upstream_retry_max_ms: 2_000,
            ..test_worker_options()
        }),
    )
    .await;
    let key = stack
        .team("team_sra", 5, &[("Limited", &["fail-429", "gpt-4o"])])
        .await;
    let job = stack.create_job(&key, "team_sra").await;

    let last = stream_call(&stack, &key, &job, "Limited", "hi").await;

    assert_eq!(
        attempts_of(&db, &last).await,
        vec![
            attempt("fail-429", "retry", Some(429)),
            attempt("fail-429", "fallback", Some(429)),
            attempt("gpt-4o", "succeeded", Some(200)),
        ]
    );
    assert_eq!(call_row(&db, &last).await, succeeded_with("gpt-4o"));
    // The fake's 429 says `Retry-After: 1`: the retry waited for it (a lower bound, not a speed
    // measurement).
    let latency_ms: i64 =
        sqlx::query_scalar("select latency_ms from llm_calls where call_id = $1::uuid")
            .bind(last["call_id"].as_str().expect("call_id"))
            .fetch_one(&db)
            .await
            .expect("call");
    assert!(latency_ms >= 1_000, "retried after {latency_ms} ms");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_model_that_keeps_failing_streams_cools_down_and_is_skipped(db: PgPool) {
    let stack = spawn_stack_with(
        db.clone(),
        options(WorkerOptions {
            model_cooldown_failures: 2,
            model_cooldown_secs: 60,
            ..test_worker_options()
        }),
    )
    .await;
    let key = stack
        .team("team_scd", 5, &[("Dying", &["fail-500", "gpt-4o"])])
        .await;
    let job = stack.create_job(&key, "team_scd").await;

    let mut calls = Vec::new();
    for text in ["one", "two", "three", "four"] {
        calls.push(stream_call(&stack, &key, &job, "Dying", text).await);
    }

    let tried_then_fell_back = vec![
        attempt("fail-500", "fallback", Some(500)),
        attempt("gpt-4o", "succeeded", Some(200)),
    ];
    let skipped = vec![
        attempt("fail-500", "skipped", None),
        attempt("gpt-4o", "succeeded", Some(200)),
    ];
    assert_eq!(attempts_of(&db, &calls[0]).await, tried_then_fell_back);
    assert_eq!(attempts_of(&db, &calls[1]).await, tried_then_fell_back);
    assert_eq!(attempts_of(&db, &calls[2]).await, skipped);
    assert_eq!(attempts_of(&db, &calls[3]).await, skipped);
    for call in &calls {
        assert_eq!(call_row(&db, call).await, succeeded_with("gpt-4o"));
    }
    assert_eq!(
        stack.llm.count_for_model("fail-500"),
        2,
        "the cooling model was not asked again"
    );
}
