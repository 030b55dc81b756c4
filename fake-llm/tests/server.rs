//! End-to-end checks of the fake over real HTTP: response shapes, SSE framing and flushing, every
//! model-name failure mode, the cost header, the recorder and shutdown.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use saasllm_fake_llm::{FakeLlm, FakeLlmConfig};
use serde_json::{Value, json};

fn chat_body(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hello there"},
        ],
        "stream": stream,
        "temperature": 0.2,
    })
}

async fn post(llm: &FakeLlm, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", llm.base_url()))
        .bearer_auth("sk-test-key")
        .json(body)
        .send()
        .await
        .expect("request reaches the fake")
}

/// The `data:` payloads of an SSE body, in order.
fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|line| {
                    line.strip_prefix("data: ")
                        .or_else(|| line.strip_prefix("data:"))
                })
                .map(str::to_owned)
        })
        .collect()
}

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
async fn streaming_sends_chunks_usage_and_done() {
    let llm = FakeLlm::start();
    let mut body = chat_body("fake-gpt", true);
    body["stream_options"] = json!({"include_usage": true});
    let response = post(&llm, &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().expect("ascii");
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let data = sse_data(&response.text().await.expect("body"));

    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("chunk is json"))
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "echo: hello there");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");

    let usage_chunk = &chunks[chunks.len() - 1];
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(
        usage_chunk["usage"],
        json!({"prompt_tokens": 6, "completion_tokens": 5, "total_tokens": 11})
    );
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn streaming_without_include_usage_has_no_usage_chunk() {
    let llm = FakeLlm::start();
    let response = post(&llm, &chat_body("fake-gpt", true)).await;
    let data = sse_data(&response.text().await.expect("body"));
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert!(data.iter().all(|d| !d.contains("\"usage\"")), "{data:?}");
    let last_chunk: Value = serde_json::from_str(&data[data.len() - 2]).expect("json");
    assert_eq!(last_chunk["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn streamed_chunks_are_flushed_as_produced() {
    let llm = FakeLlm::start();
    let mut body = chat_body("chunkdelay-300", true);
    body["messages"][1]["content"] = json!("one two three four five six seven");
    let started = Instant::now();
    let response = post(&llm, &body).await;
    let mut stream = response.bytes_stream();
    let first = stream.next().await.expect("a first frame").expect("bytes");
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("chat.completion.chunk"));
    let mut rest = Vec::new();
    while let Some(bytes) = stream.next().await {
        rest.extend_from_slice(&bytes.expect("bytes"));
    }
    let total = started.elapsed();
    // 4 content chunks + stop + [DONE] = 5 gaps of 300 ms after the first chunk.
    assert!(
        first_at < Duration::from_millis(250),
        "first chunk after {first_at:?}"
    );
    assert!(
        total >= Duration::from_millis(1500),
        "whole stream took {total:?}"
    );
    assert!(
        String::from_utf8_lossy(&rest)
            .trim_end()
            .ends_with("data: [DONE]")
    );
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
async fn recorder_keeps_what_was_received() {
    let llm = FakeLlm::start();
    post(&llm, &chat_body("model-a", false)).await;
    post(&llm, &chat_body("model-a", true)).await;
    post(&llm, &chat_body("fail-500", false)).await;

    assert_eq!(llm.total_requests(), 3);
    assert_eq!(llm.count_for_model("model-a"), 2);
    assert_eq!(llm.count_for_model("fail-500"), 1);
    assert_eq!(llm.count_for_model("nope"), 0);
    let recorded = llm.requests();
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[0].model, "model-a");
    assert_eq!(recorded[0].body, chat_body("model-a", false));
    assert_eq!(
        recorded[0].authorization.as_deref(),
        Some("Bearer sk-test-key")
    );
    assert_eq!(recorded[0].path, "/v1/chat/completions");
    assert!(recorded[0].received_at <= recorded[2].received_at);

    llm.set_recording(false);
    post(&llm, &chat_body("model-a", false)).await;
    assert_eq!(llm.total_requests(), 4);
    assert_eq!(llm.requests().len(), 3);

    llm.reset();
    assert_eq!(llm.total_requests(), 0);
    assert!(llm.requests().is_empty());
}

#[tokio::test]
async fn concurrency_high_water_mark_is_tracked() {
    let llm = FakeLlm::start();
    let body = chat_body("slow-300", false);
    let requests = (0..5).map(|_| post(&llm, &body));
    let responses = futures::future::join_all(requests).await;
    assert!(responses.iter().all(|r| r.status() == StatusCode::OK));
    assert_eq!(llm.max_concurrent(), 5);
    assert_eq!(llm.in_flight(), 0);
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

#[tokio::test]
async fn dropping_or_shutting_down_stops_the_server() {
    let llm = FakeLlm::start();
    let url = format!("{}/health", llm.base_url());
    assert!(llm.base_url().starts_with("http://127.0.0.1:"));
    assert_eq!(llm.addr().port(), url_port(&url));
    drop(llm);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        reqwest::get(&url).await.is_err(),
        "still serving after drop"
    );

    let llm = FakeLlm::start();
    let url = format!("{}/health", llm.base_url());
    llm.shutdown().await.expect("clean shutdown");
    assert!(
        reqwest::get(&url).await.is_err(),
        "still serving after shutdown"
    );
}

fn url_port(url: &str) -> u16 {
    let after_host = url.rsplit(':').next().expect("port part");
    let port = after_host.split('/').next().expect("port digits");
    port.parse().expect("numeric port")
}

#[tokio::test]
async fn wildcard_bind_reports_a_loopback_base_url() {
    let llm = FakeLlm::start_with(FakeLlmConfig {
        latency_ms: 0,
        addr: "0.0.0.0:0".parse().expect("socket address"),
    });
    assert!(llm.base_url().starts_with("http://127.0.0.1:"));
    let response = post(&llm, &chat_body("m", false)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn interval_log_has_one_line_per_request_with_its_call_id() {
    let llm = FakeLlm::start();
    let path =
        std::env::temp_dir().join(format!("fake-llm-intervals-{}.jsonl", uuid::Uuid::new_v4()));
    llm.log_intervals_to(&path).expect("log file opens");
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", llm.base_url()))
        .header("x-saasllm-call-id", "call-1")
        .json(&chat_body("slow-50", false))
        .send()
        .await
        .expect("request reaches the fake");
    assert_eq!(response.status(), StatusCode::OK);
    post(&llm, &chat_body("fake-gpt", false)).await;

    let text = std::fs::read_to_string(&path).expect("log written");
    std::fs::remove_file(&path).ok();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["call_id"], "call-1");
    assert_eq!(lines[0]["model"], "slow-50");
    let (start, end) = (lines[0]["start"].as_f64(), lines[0]["end"].as_f64());
    assert!(end.expect("end") - start.expect("start") >= 0.05, "{text}");
    assert_eq!(lines[1]["call_id"], Value::Null);
}
