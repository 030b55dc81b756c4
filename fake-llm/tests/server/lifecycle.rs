//! The server around the answers: the recorder, the concurrency high-water mark, shutdown,
//! the base URL of a wildcard bind and the interval log.

use std::time::Duration;

use reqwest::StatusCode;
use saasllm_fake_llm::{FakeLlm, FakeLlmConfig};
use serde_json::Value;

use crate::{chat_body, post};

fn url_port(url: &str) -> u16 {
    let after_host = url.rsplit(':').next().expect("port part");
    let port = after_host.split('/').next().expect("port digits");
    port.parse().expect("numeric port")
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
