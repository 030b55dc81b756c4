//! How a call is answered: async calls with 202 and polled, a sync call past its wait with 504
//! (it still finishes), the request id kept, and notifications only for calls a request awaits.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::call_id_of_job;
use crate::helpers::app::ok_json;
use crate::helpers::stack::{StackOptions, chat, eventually, spawn_stack, spawn_stack_with};
use crate::helpers::team_jobs::{refused_call, team_with_job};

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn async_calls_answer_202_and_are_polled_to_their_result(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let (key, job_id) = team_with_job(&stack, "team_async", 5, &[("Slow", &["slow-300"])]).await;

    let mut body = chat("Slow", "later");
    body["async"] = json!(true);
    let accepted = stack.llm_call(&key, &job_id, body).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let accepted: Value = accepted.json().await.expect("json");
    assert_eq!(accepted["status"], "queued");
    let call_id = accepted["call_id"].as_str().expect("call_id").to_owned();
    let preferred = stack
        .app
        .with_key(&key, Method::POST, &format!("/api/jobs/{job_id}/llm-call"))
        .header("Prefer", "respond-async")
        .json(&chat("Slow", "also later"))
        .send()
        .await
        .expect("request");
    assert_eq!(preferred.status(), StatusCode::ACCEPTED);

    let path = format!("/api/jobs/{job_id}/calls/{call_id}");
    let finished = eventually(Duration::from_secs(10), || async {
        let call = ok_json(stack.app.with_key(&key, Method::GET, &path).send().await).await;
        call["status"] == "succeeded"
    })
    .await;

    assert!(finished);
    let call = ok_json(stack.app.with_key(&key, Method::GET, &path).send().await).await;
    assert_eq!(call["response"]["content"], "echo: later");
    assert_eq!(call["metadata"]["model_group"], "Slow");
    assert!(call["metadata"]["tokens_used"].as_i64().expect("tokens") > 0);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_sync_call_past_its_wait_gets_504_and_still_finishes(db: PgPool) {
    let options = StackOptions {
        sync_call_timeout: Duration::from_millis(300),
        ..StackOptions::default()
    };
    let stack = spawn_stack_with(db.clone(), options).await;
    let (key, job_id) = team_with_job(&stack, "team_504", 5, &[("Slow", &["slow-1000"])]).await;

    let detail = refused_call(
        &stack,
        &key,
        &job_id,
        chat("Slow", "wait"),
        StatusCode::GATEWAY_TIMEOUT,
    )
    .await;

    let call_id = call_id_of_job(&db, &job_id).await;
    assert!(detail.contains(&call_id), "{detail}");
    let finished = eventually(Duration::from_secs(10), || async {
        let status: String =
            sqlx::query_scalar("select status from llm_calls where call_id = $1::uuid")
                .bind(&call_id)
                .fetch_one(&db)
                .await
                .expect("status");
        status == "succeeded"
    })
    .await;
    assert!(finished);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_call_keeps_the_request_id_it_was_submitted_with(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let (key, job) = team_with_job(&stack, "team_rid", 5, &[("Traced", &["gpt-4o"])]).await;

    let given = stack
        .app
        .with_key(&key, Method::POST, &format!("/api/jobs/{job}/llm-call"))
        .header("x-request-id", "trace-7f3a")
        .json(&chat("Traced", "hello"))
        .send()
        .await
        .expect("request");
    assert_eq!(given.headers()["x-request-id"], "trace-7f3a");
    ok_json(Ok(given)).await;
    // Without one, the API makes one up, answers it, and stores that same id.
    let generated = stack.llm_call(&key, &job, chat("Traced", "again")).await;
    let generated_id = generated.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    ok_json(Ok(generated)).await;

    let stored: Vec<Option<String>> = sqlx::query_scalar(
        "select request_id from llm_calls where job_id = $1::uuid order by created_at",
    )
    .bind(&job)
    .fetch_all(&db)
    .await
    .expect("calls");
    assert_eq!(
        stored,
        vec![Some("trace-7f3a".to_owned()), Some(generated_id)]
    );
}

/// A notifying transaction holds a database-wide lock through its commit, so the worker notifies
/// only for calls a request is waiting on (synchronous ones), not for asynchronous calls.
#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn only_calls_a_request_waits_for_are_notified_when_finished(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let (key, job_id) = team_with_job(&stack, "team_notify", 5, &[("Quick", &["gpt-4o"])]).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&db)
        .await
        .expect("listener");
    listener
        .listen(saasllm_shared::db::calls::CALL_FINISHED_CHANNEL)
        .await
        .expect("listen");

    let mut body = chat("Quick", "in the background");
    body["async"] = json!(true);
    let accepted: Value = stack
        .llm_call(&key, &job_id, body)
        .await
        .json()
        .await
        .expect("json");
    let async_id = accepted["call_id"].as_str().expect("call_id").to_owned();
    let path = format!("/api/jobs/{job_id}/calls/{async_id}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            let call = ok_json(stack.app.with_key(&key, Method::GET, &path).send().await).await;
            call["status"] == "succeeded"
        })
        .await
    );
    let answered = ok_json(Ok(stack
        .llm_call(&key, &job_id, chat("Quick", "waiting"))
        .await))
    .await;
    let sync_id = answered["call_id"].as_str().expect("call_id").to_owned();

    let mut notified = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await {
        notified.push(n.payload().to_owned());
    }
    assert_eq!(notified, vec![sync_id.clone()]);
    let flags: Vec<(String, bool)> = sqlx::query_as(
        "select call_id::text, notify_on_finish from llm_calls where job_id = $1::uuid order by created_at",
    )
    .bind(&job_id)
    .fetch_all(&db)
    .await
    .expect("flags");
    assert_eq!(flags, vec![(async_id, false), (sync_id, true)]);
}
