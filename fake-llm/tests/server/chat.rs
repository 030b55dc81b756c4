//! Non-streaming answers: their shape, every model-name failure mode, delays, the cost header
//! and the model list.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use saasllm_fake_llm::{FakeLlm, FakeLlmConfig};
use serde_json::{Value, json};

use crate::{chat_body, post};

#[tokio::test]
async fn non_streaming_answers_a_chat_completion() {
    let llm = FakeLlm::start();
    let response = post(&llm, &chat_body("fake-gpt", false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("x-litellm-response-cost").is_none());
    let body: Value = response.json().await.expect("json body");

    assert!(body["id"].as_str().expect("id").starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().expect("created") > 0);
    assert_eq!(body["model"], "fake-gpt");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "echo: hello there"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // Prompt in cl100k_base tokens: "You are terse." (4) + "hello there" (2) = 6; completion:
    // "echo: hello there" (17 characters) / 4, rounded up = 5.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 6, "completion_tokens": 5, "total_tokens": 11})
    );
}

#[tokio::test]
async fn unversioned_path_and_long_input_are_handled() {
    let llm = FakeLlm::start();
    let long = "y".repeat(1000);
    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", llm.base_url()))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": long}]}))
        .send()
        .await
        .expect("request reaches the fake");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json body");
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    assert_eq!(content, format!("echo: {}", "y".repeat(200)));
    assert_eq!(body["usage"]["prompt_tokens"], 250);
    assert_eq!(body["usage"]["completion_tokens"], 52);
    assert_eq!(llm.requests()[0].path, "/chat/completions");
}

#[tokio::test]
async fn failure_modes_answer_with_their_status_and_error() {
    let llm = FakeLlm::start();
    let cases = [
        (
            "fail-500",
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            Value::Null,
        ),
        (
            "fail-429-x",
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            json!("rate_limit_exceeded"),
        ),
        (
            "fail-503",
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Value::Null,
        ),
        (
            "ctx-400",
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            json!("context_length_exceeded"),
        ),
        (
            "bad-400",
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            json!("invalid_value"),
        ),
    ];
    for stream in [false, true] {
        for (model, status, kind, code) in &cases {
            let response = post(&llm, &chat_body(model, stream)).await;
            assert_eq!(response.status(), *status, "{model} stream={stream}");
            let retry_after = response.headers().get("retry-after").cloned();
            let body: Value = response.json().await.expect("error json");
            assert_eq!(body["error"]["type"], *kind, "{model}");
            assert_eq!(body["error"]["code"], *code, "{model}");
            assert!(body["error"]["message"].is_string(), "{model}");
            if *status == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(retry_after.expect("Retry-After on 429"), "1");
                assert_eq!(body["error"]["message"], "Rate limit exceeded");
            } else {
                assert!(retry_after.is_none(), "{model}");
            }
        }
    }
    let body: Value = post(&llm, &chat_body("fail-500", false))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        body,
        json!({"error": {"message": "upstream exploded", "type": "server_error", "code": null}})
    );
    let body: Value = post(&llm, &chat_body("ctx-400", false))
        .await
        .json()
        .await
        .expect("json");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.starts_with("This model's maximum context length is 8192 tokens"));
    let body: Value = post(&llm, &chat_body("bad-400", false))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["error"]["message"], "Invalid value for temperature");
}

#[tokio::test]
async fn invalid_body_is_a_400_and_still_recorded() {
    let llm = FakeLlm::start();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", llm.base_url()))
        .body("not json")
        .send()
        .await
        .expect("request reaches the fake");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("error json");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let recorded = llm.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].body, Value::Null);
    assert_eq!(recorded[0].model, "");
}

#[tokio::test]
async fn slow_models_and_global_latency_delay_the_answer() {
    let llm = FakeLlm::start();
    let started = Instant::now();
    let response = post(&llm, &chat_body("slow-300", false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let llm = FakeLlm::start_with(FakeLlmConfig {
        latency_ms: 200,
        ..FakeLlmConfig::default()
    });
    let started = Instant::now();
    let response = post(&llm, &chat_body("fail-503", false)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn cost_models_set_the_litellm_cost_header() {
    let llm = FakeLlm::start();
    for stream in [false, true] {
        let response = post(&llm, &chat_body("cost-2500", stream)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-litellm-response-cost"], "0.0025");
    }
    let response = post(&llm, &chat_body("slow-10-cost-1500000-gpt", false)).await;
    assert_eq!(response.headers()["x-litellm-response-cost"], "1.5");
}

#[tokio::test]
async fn models_are_listed() {
    let llm = FakeLlm::start();
    let body: Value = reqwest::get(format!("{}/v1/models", llm.base_url()))
        .await
        .expect("request reaches the fake")
        .json()
        .await
        .expect("json");
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().expect("data array");
    assert!(!data.is_empty());
    assert!(
        data.iter()
            .all(|m| m["object"] == "model" && m["id"].is_string())
    );
}
