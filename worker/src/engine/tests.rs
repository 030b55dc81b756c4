//! The chain's decisions against scripted attempts (no upstream is contacted).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use saasllm_shared::config::LlmConfig;
use serde_json::{Value, json};

use super::*;

/// Answers from a script, one entry per attempt, and remembers which model each went to.
struct Scripted {
    answers: Mutex<VecDeque<Result<(), UpstreamError>>>,
    asked: Mutex<Vec<String>>,
}

impl Scripted {
    fn new(answers: Vec<Result<(), UpstreamError>>) -> Self {
        Self {
            answers: Mutex::new(answers.into()),
            asked: Mutex::default(),
        }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("lock").clone()
    }
}

impl Attempt for Scripted {
    type Output = ();

    fn send(
        &self,
        _upstream: &Upstream,
        body: &Value,
    ) -> impl Future<Output = Result<(), UpstreamError>> + Send {
        let model = body["model"].as_str().expect("model named").to_owned();
        self.asked.lock().expect("lock").push(model);
        let answer = self
            .answers
            .lock()
            .expect("lock")
            .pop_front()
            .expect("scripted answer");
        std::future::ready(answer)
    }
}

fn status(status: u16, body: &str) -> Result<(), UpstreamError> {
    Err(UpstreamError::Status {
        status,
        message: format!("HTTP {status}"),
        body: body.to_owned(),
        retry_after: None,
    })
}

fn engine(max_retries: u32, cooldown_failures: u32) -> Engine {
    let upstream = Upstream::new(&LlmConfig {
        base_url: "http://127.0.0.1:9".to_owned(),
        api_key: None,
        timeout_secs: 1,
    })
    .expect("client");
    let retry = RetryPolicy {
        max_retries,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(10),
    };
    let cooldowns = Cooldowns::new(cooldown_failures, Duration::from_secs(60));
    Engine::new(upstream, retry, Arc::new(cooldowns))
}

fn models(names: &[&str]) -> Vec<(String, Value)> {
    names.iter().map(|n| ((*n).to_owned(), json!({}))).collect()
}

fn outcomes(chain: &ChainOutcome<()>) -> Vec<(&str, &str)> {
    chain
        .attempts
        .iter()
        .map(|a| (a.model.as_str(), a.outcome.as_str()))
        .collect()
}

#[tokio::test]
async fn a_transient_failure_is_retried_on_the_same_model() {
    let script = Scripted::new(vec![status(503, ""), Ok(())]);
    let chain = engine(2, 0)
        .run("g", &models(&["a", "b"]), &json!({}), &script)
        .await;
    assert_eq!(outcomes(&chain), [("a", "retry"), ("a", "succeeded")]);
    assert_eq!(chain.result.expect("served").model, "a");
    assert_eq!(script.asked(), ["a", "a"]);
}

#[tokio::test]
async fn a_request_no_model_can_serve_stops_the_chain_with_its_error() {
    let script = Scripted::new(vec![status(401, "bad key")]);
    let chain = engine(2, 0)
        .run("g", &models(&["a", "b"]), &json!({}), &script)
        .await;
    assert_eq!(outcomes(&chain), [("a", "fatal")]);
    assert_eq!(chain.result.err().as_deref(), Some("HTTP 401"));
    assert_eq!(script.asked(), ["a"]);
}

#[tokio::test]
async fn a_failing_model_cools_down_and_is_skipped_unless_every_model_is() {
    let engine = engine(2, 1);
    // The failure that starts the cooldown is not retried.
    let first = Scripted::new(vec![status(500, ""), Ok(())]);
    let chain = engine
        .run("g", &models(&["a", "b"]), &json!({}), &first)
        .await;
    assert_eq!(outcomes(&chain), [("a", "fallback"), ("b", "succeeded")]);

    let second = Scripted::new(vec![Ok(())]);
    let chain = engine
        .run("g", &models(&["a", "b"]), &json!({}), &second)
        .await;
    assert_eq!(outcomes(&chain), [("a", "skipped"), ("b", "succeeded")]);
    assert_eq!(second.asked(), ["b"]);

    let only_cooling = Scripted::new(vec![Ok(())]);
    let chain = engine
        .run("g", &models(&["a"]), &json!({}), &only_cooling)
        .await;
    assert_eq!(outcomes(&chain), [("a", "succeeded")]);
}

#[tokio::test]
async fn a_group_without_models_fails_with_its_name() {
    let chain = engine(0, 0)
        .run("empty", &[], &json!({}), &Scripted::new(vec![]))
        .await;
    assert!(chain.attempts.is_empty());
    assert_eq!(
        chain.result.err().as_deref(),
        Some("model group 'empty' has no models")
    );
}
