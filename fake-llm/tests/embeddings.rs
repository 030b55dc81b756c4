//! `/v1/embeddings` over real HTTP: OpenAI's response shape, the same vector for the same text,
//! usage, the failure conventions of model names, and bad input as OpenAI-shaped 400s.

use reqwest::StatusCode;
use saasllm_fake_llm::FakeLlm;
use serde_json::{Value, json};

async fn embed(llm: &FakeLlm, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/embeddings", llm.base_url()))
        .bearer_auth("sk-test-key")
        .json(&body)
        .send()
        .await
        .expect("request reaches the fake");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn answers_in_openais_shape_with_stable_vectors_and_usage() {
    let llm = FakeLlm::start();

    let (status, first) = embed(
        &llm,
        json!({"model": "text-embedding-3-small", "input": ["alpha beta", "gamma"]}),
    )
    .await;
    let (_, again) = embed(
        &llm,
        json!({"model": "text-embedding-3-small", "input": "alpha beta", "dimensions": 8}),
    )
    .await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["object"], "list");
    assert_eq!(first["model"], "text-embedding-3-small");
    let data = first["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    assert_eq!(
        (data[1]["object"].clone(), data[1]["index"].clone()),
        (json!("embedding"), json!(1))
    );
    assert_eq!(data[0]["embedding"].as_array().expect("vector").len(), 8);
    assert_eq!(
        data[0]["embedding"], again["data"][0]["embedding"],
        "same text, same vector"
    );
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    let tokens = first["usage"]["prompt_tokens"].as_u64().expect("usage");
    assert!(tokens >= 2, "{tokens}");
    assert_eq!(
        first["usage"]["total_tokens"],
        first["usage"]["prompt_tokens"]
    );
    let recorded = llm.requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].path, "/v1/embeddings");
}

#[tokio::test]
async fn model_names_choose_failures_and_bad_input_is_a_400() {
    let llm = FakeLlm::start();

    let (failed, body) = embed(&llm, json!({"model": "fail-500", "input": "x"})).await;
    let (limited, _) = embed(&llm, json!({"model": "fail-429", "input": "x"})).await;
    let (no_input, error) = embed(&llm, json!({"model": "m"})).await;
    let (too_wide, _) = embed(
        &llm,
        json!({"model": "m", "input": "x", "dimensions": 100_000}),
    )
    .await;
    let (empty, _) = embed(&llm, json!({"model": "m", "input": []})).await;

    assert_eq!(failed, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(limited, StatusCode::TOO_MANY_REQUESTS);
    for status in [no_input, too_wide, empty] {
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    assert_eq!(error["error"]["type"], "invalid_request_error");
}
