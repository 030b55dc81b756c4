//! HTTP surface: OpenAI-compatible chat completions (plain and SSE), embeddings, the model list
//! and a health probe, with the behaviour of each request chosen by its model name.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::completion::{self, ChatRequest, CompletionMeta};
use crate::recorder::{InFlight, RecordedRequest, Recorder};
use crate::scenario::{Failure, Scenario};

/// LiteLLM's header for the upstream cost of a call, which the API bills from.
const COST_HEADER: HeaderName = HeaderName::from_static("x-litellm-response-cost");

/// Call id the service's worker sends with each request; kept in the request interval log.
const CALL_ID_HEADER: &str = "x-saasllm-call-id";

/// Benchmarks send large prompts; axum's 2 MiB default would turn those into 413s.
const BODY_LIMIT_BYTES: usize = 32 * 1024 * 1024;

/// Names advertised by `GET /v1/models`; any other name works too.
const ADVERTISED_MODELS: [&str; 5] = [
    "fake-gpt",
    "fake-gpt-mini",
    "fail-500",
    "slow-1000",
    "cost-2500",
];

#[derive(Debug)]
pub(crate) struct AppState {
    pub latency: Duration,
    pub recorder: Arc<Recorder>,
    /// Requests seen per call (or model) of `flaky-<n>` models.
    pub flaky_counts: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(crate::embeddings::embeddings))
        .route("/embeddings", post(crate::embeddings::embeddings))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/health", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(state)
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    sleep_if_any(state.latency).await;
    let data: Vec<Value> = ADVERTISED_MODELS
        .iter()
        .map(
            |id| json!({"id": id, "object": "model", "created": 0, "owned_by": "saasllm-fake-llm"}),
        )
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// Takes raw bytes rather than `Json<_>` so that any body is recorded verbatim and malformed ones
/// get an OpenAI-shaped error instead of axum's plain-text rejection.
async fn chat_completions(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let in_flight = state.recorder.enter();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let parsed = ChatRequest::deserialize(&body);
    // Held until the handler returns (or is cancelled), timing the request for the interval log.
    let _interval = state.recorder.interval(
        headers.get(CALL_ID_HEADER).and_then(|v| v.to_str().ok()),
        body.get("model")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    record(&state, &uri, &headers, body);

    let request = match parsed {
        Ok(request) => request,
        Err(err) => {
            sleep_if_any(state.latency).await;
            let message = format!("invalid chat completion request: {err}");
            return error(
                StatusCode::BAD_REQUEST,
                &message,
                "invalid_request_error",
                None,
            );
        }
    };
    let scenario = Scenario::from_model(&request.model);
    tracing::debug!(model = %request.model, ?scenario, "chat completion");
    sleep_if_any(state.latency + scenario.delay).await;

    let reply = completion::reply_text(&request.messages, request.max_output_tokens());
    let usage = completion::usage_for(&request.model, &request.messages, &reply);
    if let Some(failure) = scenario.failure {
        return failure_response(failure, usage.prompt_tokens);
    }
    if let Some(failures) = scenario.flaky {
        let key = headers
            .get(CALL_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(&request.model)
            .to_owned();
        let seen = {
            let mut counts = state.flaky_counts.lock().unwrap_or_else(|p| p.into_inner());
            let count = counts.entry(key).or_default();
            *count += 1;
            *count
        };
        if seen <= failures {
            return failure_response(Failure::Unavailable, usage.prompt_tokens);
        }
    }

    let mut headers = HeaderMap::new();
    if let Some(micros) = scenario.cost_micros {
        let cost = HeaderValue::from_str(&completion::format_cost(micros))
            .expect("a formatted decimal is a valid header value");
        headers.insert(COST_HEADER, cost);
    }
    let meta = CompletionMeta::new(request.model);
    if request.stream.unwrap_or(false) {
        let include_usage = request
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let payloads = completion::stream_payloads(&meta, &reply, usage, include_usage);
        (headers, sse(payloads, scenario.chunk_delay, in_flight)).into_response()
    } else {
        let body = completion::completion_body(&meta, &reply, usage);
        (headers, Json(body)).into_response()
    }
}

/// Keeps the request as received (path, key, body) for tests to read back.
pub(crate) fn record(state: &AppState, uri: &Uri, headers: &HeaderMap, body: Value) {
    state.recorder.record(RecordedRequest {
        model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        body,
        authorization: headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        path: uri.path().to_owned(),
        received_at: Instant::now(),
        received_at_wall: SystemTime::now(),
    });
}

/// Emits one SSE event per payload. axum's `Sse` writes each event as its own body frame, so a
/// client sees chunks as they are produced; the delay sits between chunks, not before the first.
fn sse(
    payloads: Vec<String>,
    chunk_delay: Duration,
    in_flight: InFlight,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let state = (payloads.into_iter(), true, in_flight);
    let stream =
        futures::stream::unfold(state, move |(mut payloads, first, in_flight)| async move {
            let payload = payloads.next()?;
            if !first {
                sleep_if_any(chunk_delay).await;
            }
            let event = Event::default().data(payload);
            Some((Ok(event), (payloads, false, in_flight)))
        });
    Sse::new(stream)
}

pub(crate) fn failure_response(failure: Failure, prompt_tokens: u64) -> Response {
    match failure {
        Failure::Internal => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "upstream exploded",
            "server_error",
            None,
        ),
        Failure::RateLimited => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit exceeded",
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Failure::Unavailable => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service temporarily unavailable",
            "server_error",
            None,
        ),
        Failure::ContextLength => {
            let message = format!(
                "This model's maximum context length is 8192 tokens. However, your messages \
                 resulted in {} tokens. Please reduce the length of the messages.",
                prompt_tokens.max(8193)
            );
            error(
                StatusCode::BAD_REQUEST,
                &message,
                "invalid_request_error",
                Some("context_length_exceeded"),
            )
        }
        Failure::BadRequest => error(
            StatusCode::BAD_REQUEST,
            "Invalid value for temperature",
            "invalid_request_error",
            Some("invalid_value"),
        ),
    }
}

pub(crate) fn error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    (status, Json(completion::error_body(message, kind, code))).into_response()
}

/// Skips the timer entirely at zero so the default configuration adds no scheduling hop.
pub(crate) async fn sleep_if_any(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}
