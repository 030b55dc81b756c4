//! LLM calls: fallback through the model group, attempts recorded, sync and async answers,
//! parameters passed through, costs. This file holds fallback and failure; `answers` sync and
//! async answers, `input` what is passed through, priced or refused, `streaming` the job path's
//! streams.

use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::app::ok_json;
use crate::helpers::stack::{StackOptions, chat, spawn_stack, spawn_stack_with};
use crate::helpers::team_jobs::{call_status_of_job, refused_call, team_with_job};

mod answers;
mod input;
mod streaming;

pub(super) async fn attempts(db: &PgPool, call_id: &str) -> Vec<(String, Option<i32>, String)> {
    sqlx::query_as(
        "select model_name, http_status, outcome from llm_call_attempts where call_id = $1::uuid order by attempt_id",
    )
    .bind(call_id)
    .fetch_all(db)
    .await
    .expect("attempts")
}

pub(super) async fn call_id_of_job(db: &PgPool, job_id: &str) -> String {
    sqlx::query_scalar("select call_id::text from llm_calls where job_id = $1::uuid")
        .bind(job_id)
        .fetch_one(db)
        .await
        .expect("call")
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn falls_back_on_500_429_and_context_length_400_recording_every_attempt(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let (key, job_id) = team_with_job(
        &stack,
        "team_fb",
        5,
        &[("Resilient", &["fail-500", "fail-429", "ctx-400", "gpt-4o"])],
    )
    .await;

    let result = ok_json(Ok(stack
        .llm_call(&key, &job_id, chat("Resilient", "hello"))
        .await))
    .await;

    assert!(
        result["response"]["content"]
            .as_str()
            .expect("content")
            .starts_with("echo: ")
    );
    let call_id = result["call_id"].as_str().expect("call_id");
    assert_eq!(
        attempts(&db, call_id).await,
        vec![
            ("fail-500".to_owned(), Some(500), "fallback".to_owned()),
            ("fail-429".to_owned(), Some(429), "fallback".to_owned()),
            ("ctx-400".to_owned(), Some(400), "fallback".to_owned()),
            ("gpt-4o".to_owned(), Some(200), "succeeded".to_owned()),
        ]
    );
    let model_used: String =
        sqlx::query_scalar("select model_used from llm_calls where call_id = $1::uuid")
            .bind(call_id)
            .fetch_one(&db)
            .await
            .expect("model");
    assert_eq!(model_used, "gpt-4o");
    for model in ["fail-500", "fail-429", "ctx-400", "gpt-4o"] {
        assert_eq!(stack.llm.count_for_model(model), 1, "{model}");
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn falls_back_when_a_model_times_out(db: PgPool) {
    let options = StackOptions {
        llm_timeout_secs: 1,
        ..StackOptions::default()
    };
    let stack = spawn_stack_with(db.clone(), options).await;
    let (key, job_id) = team_with_job(
        &stack,
        "team_to",
        5,
        &[("Timeouts", &["slow-3000", "gpt-4o-mini"])],
    )
    .await;

    let result = ok_json(Ok(stack
        .llm_call(&key, &job_id, chat("Timeouts", "hi"))
        .await))
    .await;

    let recorded = attempts(&db, result["call_id"].as_str().expect("call_id")).await;
    assert_eq!(recorded.len(), 2);
    assert_eq!(
        recorded[0],
        ("slow-3000".to_owned(), None, "fallback".to_owned())
    );
    assert_eq!(recorded[1].0, "gpt-4o-mini");
    let error: Option<String> =
        sqlx::query_scalar("select error from llm_call_attempts where model_name = 'slow-3000'")
            .fetch_one(&db)
            .await
            .expect("error");
    assert!(error.expect("error text").contains("timed out"));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_plain_client_error_stops_the_chain_with_502(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let (key, job_id) = team_with_job(
        &stack,
        "team_stop",
        5,
        &[("Strict", &["bad-400", "gpt-4o"])],
    )
    .await;

    let detail = refused_call(
        &stack,
        &key,
        &job_id,
        chat("Strict", "hi"),
        StatusCode::BAD_GATEWAY,
    )
    .await;

    assert_eq!(detail, "LLM call failed: Invalid value for temperature");
    assert_eq!(stack.llm.count_for_model("gpt-4o"), 0);
    let call_id = call_id_of_job(&db, &job_id).await;
    assert_eq!(
        attempts(&db, &call_id).await,
        vec![("bad-400".to_owned(), Some(400), "fatal".to_owned())]
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn every_model_failing_gives_502_with_the_last_error(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let (key, job_id) = team_with_job(
        &stack,
        "team_down",
        5,
        &[("Down", &["fail-500", "fail-429"])],
    )
    .await;

    let detail = refused_call(
        &stack,
        &key,
        &job_id,
        chat("Down", "hi"),
        StatusCode::BAD_GATEWAY,
    )
    .await;

    assert_eq!(detail, "LLM call failed: Rate limit exceeded");
    assert_eq!(call_status_of_job(&db, &job_id).await, "failed");
}
