//! Streaming on the job path: fallback before the first byte, the call recorded and charged like
//! any other, and a 502 when every model fails.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::attempts;
use crate::helpers::app::ok_json;
use crate::helpers::fixtures::requests::assert_event_stream;
use crate::helpers::stack::{chat, spawn_stack};
use crate::helpers::team_jobs::{call_status_of_job, refused_call, team_with_job};

/// Reads an SSE body into its `data:` payloads.
async fn sse_events(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.expect("body");
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn job_path_streaming_falls_back_before_the_first_byte_and_records_the_call(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let (key, job_id) = team_with_job(
        &stack,
        "team_js",
        3,
        &[("Streamy", &["fail-500", "chunkdelay-50"])],
    )
    .await;
    let mut body = chat("Streamy", "stream this answer please");
    body["stream"] = json!(true);

    let response = stack.llm_call(&key, &job_id, body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_event_stream(&response);
    let events = sse_events(response).await;

    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let deltas: Vec<Value> = events[..events.len() - 2]
        .iter()
        .map(|e| serde_json::from_str(e).expect("json event"))
        .collect();
    assert!(deltas.len() > 1, "{events:?}");
    let text: String = deltas
        .iter()
        .map(|d| d["content"].as_str().expect("delta"))
        .collect();
    assert_eq!(text, "echo: stream this answer please");
    let last: Value = serde_json::from_str(&events[events.len() - 2]).expect("final event");
    assert_eq!(last["response"]["content"], text);
    assert_eq!(last["metadata"]["model_group"], "Streamy");
    assert!(last["metadata"]["tokens_used"].as_i64().expect("tokens") > 0);
    assert!(
        !events.iter().any(|e| e.contains("chunkdelay")),
        "the model name is not exposed"
    );
    let call_id = last["call_id"].as_str().expect("call_id");
    assert_eq!(
        attempts(&db, call_id).await,
        vec![
            ("fail-500".to_owned(), Some(500), "fallback".to_owned()),
            (
                "chunkdelay-50".to_owned(),
                Some(200),
                "succeeded".to_owned()
            ),
        ]
    );
    let (status, tokens, cost): (String, Option<i64>, Option<i64>) = sqlx::query_as(
        "select status, total_tokens, cost_micro_usd from llm_calls where call_id = $1::uuid",
    )
    .bind(call_id)
    .fetch_one(&db)
    .await
    .expect("call");
    assert_eq!(status, "succeeded");
    assert!(tokens.expect("tokens") > 0);
    assert!(
        cost.is_none(),
        "chunkdelay-50 has no known price, so no made-up cost"
    );
    let completion = ok_json(Ok(stack.complete(&key, &job_id, "completed").await)).await;
    assert_eq!(completion["costs"]["credit_applied"], true);
    assert_eq!(completion["costs"]["credits_remaining"], 2);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn job_path_streaming_with_every_model_failing_is_502(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let (key, job_id) =
        team_with_job(&stack, "team_jf", 3, &[("Down", &["fail-503", "fail-500"])]).await;
    let mut body = chat("Down", "hi");
    body["stream"] = json!(true);

    let detail = refused_call(&stack, &key, &job_id, body, StatusCode::BAD_GATEWAY).await;

    assert!(detail.starts_with("LLM call failed: "), "{detail}");
    assert_eq!(call_status_of_job(&db, &job_id).await, "failed");
}
