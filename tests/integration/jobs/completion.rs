//! Completing a job: ten concurrent completes charge once, a complete waits for an in-flight
//! call, and past its wait answers 202 `completing` while the worker settles the job.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::CHAT;
use crate::helpers::app::{assert_ledger_consistent, error_detail, ok_json};
use crate::helpers::stack::{StackOptions, chat, eventually, spawn_stack, spawn_stack_with};

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn complete_repeated_ten_times_concurrently_charges_once(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack.team("team_r", 5, &[CHAT]).await;
    let job_id = stack.create_job(&key, "team_r").await;
    ok_json(Ok(stack
        .llm_call(&key, &job_id, chat("ChatAgent", "hi"))
        .await))
    .await;

    let responses = join_all((0..10).map(|_| stack.complete(&key, &job_id, "completed"))).await;
    let mut bodies = Vec::new();
    for response in responses {
        bodies.push(ok_json(Ok(response)).await);
    }
    let conflict = error_detail(
        Ok(stack.complete(&key, &job_id, "failed").await),
        StatusCode::CONFLICT,
    )
    .await;

    assert!(bodies.iter().all(|b| b["costs"]["credit_applied"] == true));
    assert!(bodies.iter().all(|b| b["costs"]["credits_remaining"] == 4));
    assert!(conflict.contains("already completed"), "{conflict}");
    let deductions: i64 = sqlx::query_scalar(
        "select count(*) from credit_transactions where transaction_type = 'deduction'",
    )
    .fetch_one(&db)
    .await
    .expect("count");
    assert_eq!(deductions, 1);
    assert_ledger_consistent(&db, "team_r").await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn complete_waits_for_an_in_flight_call_then_settles(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack.team("team_w", 3, &[("Slow", &["slow-700"])]).await;
    let job_id = stack.create_job(&key, "team_w").await;
    let mut body = chat("Slow", "take your time");
    body["async"] = json!(true);
    let accepted = stack.llm_call(&key, &job_id, body).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);

    let completion = ok_json(Ok(stack.complete(&key, &job_id, "completed").await)).await;

    assert_eq!(completion["costs"]["successful_calls"], 1);
    assert_eq!(completion["costs"]["credit_applied"], true);
    assert_eq!(completion["costs"]["credits_remaining"], 2);
    assert_ledger_consistent(&db, "team_w").await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn complete_answers_202_completing_and_the_worker_settles_when_the_call_ends(db: PgPool) {
    let options = StackOptions {
        complete_wait: Duration::from_millis(100),
        ..StackOptions::default()
    };
    let stack = spawn_stack_with(db.clone(), options).await;
    let key = stack.team("team_c", 3, &[("Slow", &["slow-1500"])]).await;
    let job_id = stack.create_job(&key, "team_c").await;
    let mut body = chat("Slow", "long");
    body["async"] = json!(true);
    assert_eq!(
        stack.llm_call(&key, &job_id, body).await.status(),
        StatusCode::ACCEPTED
    );

    let response = stack.complete(&key, &job_id, "completed").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let pending: Value = response.json().await.expect("json");
    assert_eq!(pending["status"], "completing");
    let extra = stack
        .llm_call(&key, &job_id, chat("Slow", "too late"))
        .await;
    assert_eq!(extra.status(), StatusCode::CONFLICT);

    let settled = eventually(Duration::from_secs(15), || async {
        let job = stack.get_job(&key, &job_id).await;
        job["status"] == "completed"
    })
    .await;
    assert!(settled, "the worker did not settle the job");
    let job = stack.get_job(&key, &job_id).await;
    assert_eq!(job["credit_applied"], true);
    assert_eq!(job["costs"]["credits_remaining"], 2);
    assert_ledger_consistent(&db, "team_c").await;
}
