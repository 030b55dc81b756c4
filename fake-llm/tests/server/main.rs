//! End-to-end checks of the fake over real HTTP: response shapes, SSE framing and flushing, every
//! model-name failure mode, the cost header, the recorder and shutdown.

mod chat;
mod lifecycle;
mod streaming;

use saasllm_fake_llm::FakeLlm;
use serde_json::{Value, json};

pub fn chat_body(model: &str, stream: bool) -> Value {
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

pub async fn post(llm: &FakeLlm, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", llm.base_url()))
        .bearer_auth("sk-test-key")
        .json(body)
        .send()
        .await
        .expect("request reaches the fake")
}
