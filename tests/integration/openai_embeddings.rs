//! OpenAI embeddings: `POST /v1/embeddings` passes through to the upstream for the team's allowed
//! models within its USD budget, recording `embeddings` spend; bad input is an OpenAI-shaped 400;
//! and the worker runs a call whose endpoint is embeddings, storing the whole answer. This file
//! holds the shared helpers, the pass-through and the upstream's failures; `refusals` what is
//! refused before the upstream (403, 402, 400); `worker` the worker's embeddings calls.

mod refusals;
mod worker;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::{assert_ledger_consistent, ok_json};
use crate::helpers::fixtures::requests::openai_error;
use crate::helpers::fixtures::spend::spend_and_open_reservations;
use crate::helpers::stack::{Stack, spawn_stack};
/// The embeddings model of the tests.
pub(super) const MODEL: &str = "text-embedding-3-small";
/// USD per 1M input tokens of the priced test model: one micro-dollar per token is $1 per 1M.
pub(super) const MICRO_USD_PER_TOKEN: i64 = 1_000;

/// The config pricing a model's input at [`MICRO_USD_PER_TOKEN`].
pub(super) fn priced() -> Value {
    json!({"input_cost_per_million": MICRO_USD_PER_TOKEN, "output_cost_per_million": 0})
}

pub(super) async fn embed(stack: &Stack, key: &str, body: &str) -> reqwest::Response {
    stack
        .app
        .with_key(key, Method::POST, "/v1/embeddings")
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request sent")
}

/// A spend record of the team, as written.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct SpendRow {
    endpoint: String,
    model: String,
    stream: bool,
    status: String,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    total_tokens: Option<i64>,
    cost_micro_usd: i64,
    cost_source: String,
    http_status: Option<i32>,
    reserved_micro_usd: i64,
}

pub(super) async fn spend_records(stack: &Stack, team_id: &str) -> Vec<SpendRow> {
    stack.app.spend_written().await;
    sqlx::query_as(
        "select endpoint, model, stream, status, prompt_tokens, completion_tokens, total_tokens,
                cost_micro_usd, cost_source, http_status, reserved_micro_usd
         from spend_records where team_id = $1 order by created_at, request_id",
    )
    .bind(team_id)
    .fetch_all(&stack.app.db)
    .await
    .expect("spend records")
}

/// Asserts the spend record of a request for the priced model: `tokens` input tokens, costed
/// from the price table, answered 200, reserved at least its cost.
fn assert_priced_record(priced: &SpendRow, tokens: i64) {
    assert_eq!(
        (
            priced.endpoint.as_str(),
            priced.model.as_str(),
            priced.stream
        ),
        ("embeddings", "text-embedding-3-small", false)
    );
    assert_eq!(
        (priced.status.as_str(), priced.cost_source.as_str()),
        ("recorded", "price_table")
    );
    assert_eq!(
        (
            priced.prompt_tokens,
            priced.completion_tokens,
            priced.total_tokens
        ),
        (Some(tokens), Some(0), Some(tokens))
    );
    assert_eq!(priced.cost_micro_usd, tokens * MICRO_USD_PER_TOKEN);
    assert!(
        priced.reserved_micro_usd >= priced.cost_micro_usd,
        "{priced:?}"
    );
    assert_eq!(priced.http_status, Some(200));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn passes_embeddings_through_and_records_their_spend(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team_with_models(
            "team_e",
            10,
            "Embedder",
            &[
                ("text-embedding-3-small", priced()),
                ("cost-2500-embed", json!({})),
            ],
        )
        .await;
    let body = json!({"model": "text-embedding-3-small", "input": ["alpha beta", "gamma"],
                      "encoding_format": "float", "dimensions": 4, "user": "user-7"});

    let response = embed(&stack, &key, &body.to_string()).await;
    let content_type = response.headers()["content-type"].clone();
    let vectors = ok_json(Ok(response)).await;
    let by_header = ok_json(Ok(embed(
        &stack,
        &key,
        r#"{"model": "cost-2500-embed", "input": [[1, 2, 3], [4]]}"#,
    )
    .await))
    .await;

    assert_eq!(content_type, "application/json");
    assert_eq!(vectors["object"], "list");
    let data = vectors["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["embedding"].as_array().expect("vector").len(), 4);
    assert_eq!(by_header["data"].as_array().expect("data").len(), 2);
    let sent = stack.llm.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].path, "/v1/embeddings");
    assert_eq!(sent[0].body, body, "the body passes through unchanged");
    let tokens = vectors["usage"]["prompt_tokens"].as_i64().expect("usage");
    let records = spend_records(&stack, "team_e").await;
    assert_eq!(records.len(), 2, "{records:?}");
    let (priced, reported) = (&records[0], &records[1]);
    assert_priced_record(priced, tokens);
    assert_eq!(
        (
            reported.endpoint.as_str(),
            reported.cost_micro_usd,
            reported.cost_source.as_str()
        ),
        ("embeddings", 2_500, "header")
    );
    let (spend, open) = spend_and_open_reservations(&stack, "team_e").await;
    assert_eq!(spend, priced.cost_micro_usd + 2_500);
    assert_eq!(open, 0, "nothing is left reserved by the requests");
    let balance = stack
        .app
        .key_ok(&key, Method::GET, "/api/credits/teams/team_e/balance")
        .await;
    let spend_usd = balance["spend_usd"].as_f64().expect("spend_usd");
    assert!(
        (spend_usd - spend as f64 / 1e6).abs() < 1e-9,
        "{balance} vs {spend}"
    );
    assert_ledger_consistent(&db, "team_e").await;
}
#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn upstream_failures_pass_through_and_release_the_budget(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team_with_models(
            "team_f",
            10,
            "Failing",
            &[("fail-500-embed", priced()), ("fail-429-embed", priced())],
        )
        .await;

    let failed = embed(&stack, &key, r#"{"model": "fail-500-embed", "input": "x"}"#).await;
    let failed = openai_error(failed, StatusCode::INTERNAL_SERVER_ERROR).await;
    let limited = embed(&stack, &key, r#"{"model": "fail-429-embed", "input": "x"}"#).await;
    let limited_status = limited.status();

    assert_eq!(
        failed["type"], "server_error",
        "the upstream's error as it is"
    );
    assert_eq!(limited_status, StatusCode::TOO_MANY_REQUESTS);
    let records = spend_records(&stack, "team_f").await;
    let outcomes: Vec<(&str, &str, Option<i32>, i64)> = records
        .iter()
        .map(|r| {
            (
                r.endpoint.as_str(),
                r.status.as_str(),
                r.http_status,
                r.cost_micro_usd,
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("embeddings", "released", Some(500), 0),
            ("embeddings", "released", Some(429), 0)
        ]
    );
    assert_eq!(spend_and_open_reservations(&stack, "team_f").await, (0, 0));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_unreachable_upstream_is_a_502_that_costs_nothing(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team_with_models(
            "team_gone",
            10,
            "Embedder",
            &[("text-embedding-3-small", priced())],
        )
        .await;
    let app = stack.app;
    stack.llm.shutdown().await.expect("the upstream stops");

    let response = app
        .with_key(&key, Method::POST, "/v1/embeddings")
        .json(&json!({"model": "text-embedding-3-small", "input": "hello"}))
        .send()
        .await
        .expect("request sent");
    let error = openai_error(response, StatusCode::BAD_GATEWAY).await;

    assert_eq!(error["type"], "server_error");
    app.spend_written().await;
    let record: (String, String, i64, Option<String>) = sqlx::query_as(
        "select endpoint, status, cost_micro_usd, error from spend_records where team_id = 'team_gone'",
    )
    .fetch_one(&db)
    .await
    .expect("spend record");
    assert_eq!(
        (record.0.as_str(), record.1.as_str(), record.2),
        ("embeddings", "released", 0)
    );
    assert!(record.3.is_some(), "the failure is recorded");
    let spend: i64 = sqlx::query_scalar(
        "select spend_micro_usd from credit_balances where team_id = 'team_gone'",
    )
    .fetch_one(&db)
    .await
    .expect("balance");
    assert_eq!(spend, 0);
}
