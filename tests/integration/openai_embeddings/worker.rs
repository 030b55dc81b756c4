//! The worker runs a queued call whose endpoint is embeddings, as a batch's embeddings lines
//! are: it falls back along the model group as chat does and stores the whole answer with its
//! usage and cost.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use super::{MICRO_USD_PER_TOKEN, priced};
use crate::helpers::fixtures::resilience::{attempt, attempts_of};
use crate::helpers::stack::{Stack, eventually, spawn_stack_without_workers};

/// Inserts a queued embeddings call of `group` in a new job of the team and pushes it to the
/// queue, as a batch of embeddings lines would; returns its id.
async fn queue_embeddings_call(stack: &Stack, key: &str, team_id: &str, group: &str) -> uuid::Uuid {
    let job_id = stack.create_job(key, team_id).await;
    let request = json!({"input": ["first text", "second text", "third"], "dimensions": 6});
    let call_id: uuid::Uuid = sqlx::query_scalar(
        "insert into llm_calls (call_id, job_id, team_id, model_group_id, model_group, request, endpoint)
         select gen_random_uuid(), j.job_id, j.team_id, g.model_group_id, g.group_name, $3, 'embeddings'
         from jobs j, model_groups g
         where j.job_id = $1::uuid and g.group_name = $2
         returning call_id",
    )
    .bind(&job_id)
    .bind(group)
    .bind(&request)
    .fetch_one(&stack.app.db)
    .await
    .expect("insert call");
    stack
        .queue()
        .push(team_id, &Default::default(), &[call_id])
        .await
        .expect("push");
    call_id
}

/// A finished call, as stored.
#[derive(Debug, sqlx::FromRow)]
struct CallRow {
    status: String,
    model_used: Option<String>,
    response_content: Option<String>,
    finish_reason: Option<String>,
    response: Option<Value>,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    total_tokens: Option<i64>,
    cost_micro_usd: Option<i64>,
}

/// Whether the call has finished (neither queued nor running), within 30 s.
async fn finished(db: &PgPool, call_id: uuid::Uuid) -> bool {
    eventually(Duration::from_secs(30), || async {
        let status: String = sqlx::query_scalar("select status from llm_calls where call_id = $1")
            .bind(call_id)
            .fetch_one(db)
            .await
            .expect("status");
        !matches!(status.as_str(), "queued" | "running")
    })
    .await
}

async fn call_row(db: &PgPool, call_id: uuid::Uuid) -> CallRow {
    sqlx::query_as(
        "select status, model_used, response_content, finish_reason, response, prompt_tokens,
                completion_tokens, total_tokens, cost_micro_usd
         from llm_calls where call_id = $1",
    )
    .bind(call_id)
    .fetch_one(db)
    .await
    .expect("call")
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_worker_runs_an_embeddings_call_with_fallback_and_stores_the_whole_answer(db: PgPool) {
    let mut stack = spawn_stack_without_workers(db.clone()).await;
    // The first model fails: the chain falls back to the next as it does for chat.
    let key = stack
        .team_with_models(
            "team_w",
            10,
            "Embedder",
            &[
                ("fail-503-embed", priced()),
                ("text-embedding-3-small", priced()),
            ],
        )
        .await;
    let call_id = queue_embeddings_call(&stack, &key, "team_w", "Embedder").await;

    stack.start_worker();
    assert!(finished(&db, call_id).await, "the call never finished");
    let call = call_row(&db, call_id).await;
    assert_eq!(call.status, "succeeded", "{call:?}");
    assert_eq!(call.model_used.as_deref(), Some("text-embedding-3-small"));
    assert_eq!((call.response_content, call.finish_reason), (None, None));
    let response = call.response.expect("the whole answer is stored");
    let data = response["data"].as_array().expect("data");
    assert_eq!(data.len(), 3);
    assert_eq!(data[2]["embedding"].as_array().expect("vector").len(), 6);
    let tokens = response["usage"]["prompt_tokens"].as_i64().expect("usage");
    assert_eq!(
        (
            call.prompt_tokens,
            call.completion_tokens,
            call.total_tokens
        ),
        (Some(tokens), Some(0), Some(tokens))
    );
    assert_eq!(call.cost_micro_usd, Some(tokens * MICRO_USD_PER_TOKEN));
    assert_eq!(
        attempts_of(&db, &json!({"call_id": call_id})).await,
        [
            attempt("fail-503-embed", "fallback", Some(503)),
            attempt("text-embedding-3-small", "succeeded", Some(200)),
        ]
    );
    let sent = stack.llm.requests();
    assert!(
        sent.iter().all(|r| r.path == "/v1/embeddings"),
        "{:?}",
        sent.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[1].body["input"],
        json!(["first text", "second text", "third"])
    );
    stack.stop_workers().await;
}
