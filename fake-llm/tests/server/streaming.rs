//! SSE answers: framing, the usage chunk, `[DONE]` and flushing as chunks are produced.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use saasllm_fake_llm::FakeLlm;
use serde_json::{Value, json};

use crate::{chat_body, post};

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
