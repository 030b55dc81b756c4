//! Upstream resilience in the worker: a transient failure is retried on the same model with
//! backoff (honouring Retry-After) before the chain falls back, and a model that keeps failing
//! cools down so later calls skip it.

use sqlx::PgPool;

use crate::helpers::app::ok_json;
use crate::helpers::fixtures::resilience::{
    assert_cooled_down_after_two_failures, assert_waited_for_retry_after, attempt, attempts_of,
    cooldown_after_two_failures, one_retry_honouring_retry_after, retried_after_429_then_fell_back,
    retried_twice_then_succeeded, stack_with_job, two_quick_retries,
};
use crate::helpers::stack::{chat, test_worker_options};
use saasllm_worker::WorkerOptions;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_transient_failure_is_retried_on_the_same_model_until_it_answers(db: PgPool) {
    let (stack, key, job) = stack_with_job(
        &db,
        two_quick_retries(),
        "team_rt",
        &[("Flaky", &["flaky-2-gpt", "gpt-4o"])],
    )
    .await;

    let call = ok_json(Ok(stack.llm_call(&key, &job, chat("Flaky", "hi")).await)).await;

    assert_eq!(call["response"]["content"], "echo: hi");
    assert_eq!(
        attempts_of(&db, &call).await,
        retried_twice_then_succeeded()
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
    let (stack, key, job) = stack_with_job(
        &db,
        one_retry_honouring_retry_after(),
        "team_ra",
        &[("Limited", &["fail-429", "gpt-4o"])],
    )
    .await;

    let call = ok_json(Ok(stack.llm_call(&key, &job, chat("Limited", "hi")).await)).await;

    assert_eq!(
        attempts_of(&db, &call).await,
        retried_after_429_then_fell_back()
    );
    // The fake's 429 says `Retry-After: 1`: the retry waited for it.
    assert_waited_for_retry_after(&db, &call).await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_retry_after_longer_than_the_cap_falls_back_at_once(db: PgPool) {
    let (stack, key, job) = stack_with_job(
        &db,
        WorkerOptions {
            upstream_retries: 3,
            upstream_retry_max_ms: 500,
            ..test_worker_options()
        },
        "team_rc",
        &[("Limited", &["fail-429", "gpt-4o"])],
    )
    .await;

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
    let (stack, key, job) = stack_with_job(
        &db,
        cooldown_after_two_failures(),
        "team_cd",
        &[
            ("Dying", &["fail-500", "gpt-4o"]),
            ("DeadOnly", &["fail-503"]),
        ],
    )
    .await;

    let mut calls = Vec::new();
    for text in ["one", "two", "three", "four"] {
        calls.push(ok_json(Ok(stack.llm_call(&key, &job, chat("Dying", text)).await)).await);
    }

    assert_cooled_down_after_two_failures(&stack, &db, &calls).await;

    // A group whose every model is cooling still tries them rather than failing unasked.
    for text in ["a", "b", "c"] {
        let response = stack.llm_call(&key, &job, chat("DeadOnly", text)).await;
        assert_eq!(response.status(), reqwest::StatusCode::BAD_GATEWAY);
    }
    assert_eq!(stack.llm.count_for_model("fail-503"), 3);
}
