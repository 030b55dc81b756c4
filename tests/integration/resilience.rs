//! Upstream resilience in the worker: a transient failure is retried on the same model with
//! backoff (honouring Retry-After) before the chain falls back, and a model that keeps failing
//! cools down so later calls skip it.

use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::app::ok_json;
use crate::helpers::stack::{StackOptions, chat, spawn_stack_with, test_worker_options};
use saasllm_worker::WorkerOptions;

fn options(worker_options: WorkerOptions) -> StackOptions {
    StackOptions {
        worker_options,
        ..StackOptions::default()
    }
}

async fn attempts_of(db: &PgPool, call: &Value) -> Vec<(String, String, Option<i32>)> {
    sqlx::query_as(
        "select model_name, outcome, http_status from llm_call_attempts
         where call_id = $1::uuid order by attempt_id",
    )
    .bind(call["call_id"].as_str().expect("call_id"))
    .fetch_all(db)
    .await
    .expect("attempts")
}

fn attempt(model: &str, outcome: &str, status: Option<i32>) -> (String, String, Option<i32>) {
    (model.to_owned(), outcome.to_owned(), status)
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_transient_failure_is_retried_on_the_same_model_until_it_answers(db: PgPool) {
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
        .team("team_rt", 5, &[("Flaky", &["flaky-2-gpt", "gpt-4o"])])
        .await;
    let job = stack.create_job(&key, "team_rt").await;

    let call = ok_json(Ok(stack.llm_call(&key, &job, chat("Flaky", "hi")).await)).await;

    assert_eq!(call["response"]["content"], "echo: hi");
    assert_eq!(
        attempts_of(&db, &call).await,
        vec![
            attempt("flaky-2-gpt", "retry", Some(503)),
            attempt("flaky-2-gpt", "retry", Some(503)),
            attempt("flaky-2-gpt", "succeeded", Some(200)),
        ]
    );
    let model_used: String = sqlx::query_scalar("select model_used from llm_calls")
        .fetch_one(&db)
        .await
        .expect("call");
    assert_eq!(model_used, "flaky-2-gpt", "no fallback was needed");
    assert_eq!(stack.llm.count_for_model("gpt-4o"), 0);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn retry_after_is_waited_for_and_a_model_still_failing_falls_back(db: PgPool) {
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
        .team("team_ra", 5, &[("Limited", &["fail-429", "gpt-4o"])])
        .await;
    let job = stack.create_job(&key, "team_ra").await;

    let call = ok_json(Ok(stack.llm_call(&key, &job, chat("Limited", "hi")).await)).await;

    assert_eq!(
        attempts_of(&db, &call).await,
        vec![
            attempt("fail-429", "retry", Some(429)),
            attempt("fail-429", "fallback", Some(429)),
            attempt("gpt-4o", "succeeded", Some(200)),
        ]
    );
    // The fake's 429 says `Retry-After: 1`: the retry waited for it (a lower bound, not a speed
    // measurement).
    let latency_ms: i64 = sqlx::query_scalar("select latency_ms from llm_calls")
        .fetch_one(&db)
        .await
        .expect("call");
    assert!(latency_ms >= 1_000, "retried after {latency_ms} ms");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_retry_after_longer_than_the_cap_falls_back_at_once(db: PgPool) {
    let stack = spawn_stack_with(
        db.clone(),
        options(WorkerOptions {
            upstream_retries: 3,
            upstream_retry_max_ms: 500,
            ..test_worker_options()
        }),
    )
    .await;
    let key = stack
        .team("team_rc", 5, &[("Limited", &["fail-429", "gpt-4o"])])
        .await;
    let job = stack.create_job(&key, "team_rc").await;

    let call = ok_json(Ok(stack.llm_call(&key, &job, chat("Limited", "hi")).await)).await;

    assert_eq!(
        attempts_of(&db, &call).await,
        vec![
            attempt("fail-429", "fallback", Some(429)),
            attempt("gpt-4o", "succeeded", Some(200)),
        ]
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_model_that_keeps_failing_cools_down_and_is_skipped(db: PgPool) {
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
        .team(
            "team_cd",
            5,
            &[
                ("Dying", &["fail-500", "gpt-4o"]),
                ("DeadOnly", &["fail-503"]),
            ],
        )
        .await;
    let job = stack.create_job(&key, "team_cd").await;

    let mut calls = Vec::new();
    for text in ["one", "two", "three", "four"] {
        calls.push(ok_json(Ok(stack.llm_call(&key, &job, chat("Dying", text)).await)).await);
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
    assert_eq!(
        stack.llm.count_for_model("fail-500"),
        2,
        "the cooling model was not called again"
    );

    // A group whose every model is cooling still tries them rather than failing unasked.
    for text in ["a", "b", "c"] {
        let response = stack.llm_call(&key, &job, chat("DeadOnly", text)).await;
        assert_eq!(response.status(), reqwest::StatusCode::BAD_GATEWAY);
    }
    assert_eq!(stack.llm.count_for_model("fail-503"), 3);
}
