//! Streaming on the job path (`"stream": true` on llm-call). This is a direct path: the API
//! process claims the call itself (same lease and fencing as a worker) and streams from the
//! upstream, so deltas reach the client as they are produced. The stream is opened through the
//! same model chain as a worker's call (retries with backoff, model cooldowns, fallback), up to
//! its first byte; once that byte has been sent an upstream failure is reported in the stream.
//! The call is recorded in the job like any other; should this process die mid-stream, the lease
//! expires and a worker runs the call to the end.
//!
//! Events: `data: {"content": "<delta>"}` per delta, then `data: {"call_id", "response",
//! "metadata"}` (or `{"call_id", "error"}`), then `data: [DONE]`.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use saasllm_shared::db::calls::{CallResult, ClaimedCall};
use saasllm_shared::domain::outcomes::AttemptOutcome;
use saasllm_shared::domain::pricing;
use saasllm_shared::domain::status::CallStatus;
use saasllm_worker::{
    AttemptRecord, Served, StreamStart, keep_lease, record_metrics, record_result,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::limits::Admission;
use crate::sse::SseScan;
use crate::state::AppState;

/// Lease of a call streamed by the API process.
const STREAM_LEASE: Duration = Duration::from_secs(30);

/// Worker id recorded on calls streamed by an API process.
pub const STREAMING_WORKER_ID: &str = "api-stream";

/// Starts streaming a claimed call. Answers 502 when every model fails before the first byte.
pub async fn stream(
    state: AppState,
    call: ClaimedCall,
    model_group: String,
    admission: Option<Admission>,
) -> Result<Response, ApiError> {
    let (started_tx, started_rx) = oneshot::channel();
    let (events_tx, events_rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(run(
        state,
        call,
        model_group,
        started_tx,
        events_tx,
        admission,
    ));
    match started_rx.await {
        Ok(Ok(())) => {
            let body = futures::stream::unfold(events_rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|event| (Ok::<_, std::convert::Infallible>(event), rx))
            });
            let mut response = Response::new(Body::from_stream(body));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
            Ok(response)
        }
        Ok(Err(error)) => Err(ApiError::BadGateway(format!("LLM call failed: {error}"))),
        Err(_) => Err(ApiError::Internal(anyhow::anyhow!(
            "streaming task ended before answering"
        ))),
    }
}

fn event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// Runs the chain up to the first byte, forwards the deltas, then records the result (even if
/// the client has left).
async fn run(
    state: AppState,
    call: ClaimedCall,
    model_group: String,
    started_tx: oneshot::Sender<Result<(), String>>,
    events: mpsc::Sender<Bytes>,
    // The team's limit slot, held while the call runs and given back when this task ends.
    admission: Option<Admission>,
) {
    let keeper = keep_lease(state.db.clone(), &call, STREAM_LEASE);
    let started = Instant::now();
    let mut request = call.request.clone();
    if let Value::Object(fields) = &mut request {
        fields.insert("stream".into(), Value::Bool(true));
        fields.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let attempt = StreamStart {
        call_id: call.call_id,
    };
    let chain = state
        .engine
        .run(&model_group, &call.models.0, &request, &attempt)
        .await;
    let mut attempts = chain.attempts;
    let served = match chain.result {
        Ok(served) => served,
        Err(error) => {
            keeper.abort();
            let result = failed(&error, started.elapsed().as_millis() as i64);
            write(&state, &call, &attempts, &result).await;
            // Nothing was streamed: the request answers 502 instead of an event stream.
            let _ = started_tx.send(Err(error));
            return;
        }
    };
    let _ = started_tx.send(Ok(()));
    let streaming_started = Instant::now();

    let Served {
        output: mut stream,
        model,
        config,
    } = served;
    let mut scan = SseScan::default();
    let mut stream_error = None;
    loop {
        match stream.next_chunk().await {
            Ok(Some(bytes)) => {
                for delta in scan.feed(&bytes) {
                    // A client that left makes sends fail; the call is still recorded.
                    let _ = events.send(event(&json!({"content": delta}))).await;
                }
            }
            Ok(None) => break,
            Err(e) => {
                stream_error = Some(e.to_string());
                break;
            }
        }
    }
    keeper.abort();
    // The chain timed the attempt to its first byte; its record covers the whole stream. A
    // stream that broke after that byte ends the call: what was sent cannot be taken back.
    if let Some(last) = attempts.last_mut() {
        last.latency_ms += streaming_started.elapsed().as_millis() as i64;
        if stream_error.is_some() {
            last.outcome = AttemptOutcome::Fatal;
            last.error.clone_from(&stream_error);
        }
    }

    let latency_ms = started.elapsed().as_millis() as i64;
    let final_event = match stream_error {
        None => {
            let (prompt, completion) = (
                scan.tokens("prompt_tokens"),
                scan.tokens("completion_tokens"),
            );
            let total = scan
                .tokens("total_tokens")
                .or_else(|| Some(prompt? + completion?));
            // LiteLLM reports a stream's cost in the usage chunk, not in a header.
            let reported_cost = stream.reported_cost.map(|c| c.0).or_else(|| {
                scan.usage
                    .as_ref()
                    .and_then(pricing::usage_cost)
                    .map(|c| c.0)
            });
            let cost = reported_cost.or_else(|| {
                pricing::price_for(&model, &config)
                    .map(|p| pricing::cost(p, prompt.unwrap_or(0), completion.unwrap_or(0)).0)
            });
            if let Some(admission) = &admission {
                admission.count_tokens(total.unwrap_or(0));
            }
            let result = CallResult {
                status: CallStatus::Succeeded,
                model_used: Some(model.as_str()),
                response_content: Some(&scan.content),
                finish_reason: scan.finish_reason.as_deref(),
                response: None,
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: total,
                cost_micro_usd: cost,
                latency_ms,
                error: None,
            };
            write(&state, &call, &attempts, &result).await;
            json!({
                "call_id": call.call_id,
                "response": {"content": scan.content, "finish_reason": scan.finish_reason},
                "metadata": {"tokens_used": total.unwrap_or(0), "latency_ms": latency_ms, "model_group": model_group},
            })
        }
        Some(error) => {
            write(&state, &call, &attempts, &failed(&error, latency_ms)).await;
            json!({"call_id": call.call_id, "error": format!("LLM call failed: {error}")})
        }
    };
    let _ = events.send(event(&final_event)).await;
    let _ = events.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
}

/// The result of a call no model served.
fn failed(error: &str, latency_ms: i64) -> CallResult<'_> {
    CallResult {
        status: CallStatus::Failed,
        model_used: None,
        response_content: None,
        finish_reason: None,
        response: None,
        prompt_tokens: None,
        completion_tokens: None,
        total_tokens: None,
        cost_micro_usd: None,
        latency_ms,
        error: Some(error),
    }
}

/// Writes the attempts and the result under the call's lease (settling the job if it waits).
async fn write(
    state: &AppState,
    call: &ClaimedCall,
    attempts: &[AttemptRecord],
    result: &CallResult<'_>,
) {
    record_metrics(&call.model_group, attempts, result.status);
    match record_result(&state.db, call, attempts, result).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(call_id = %call.call_id, "streamed call's result was not recorded by this process");
        }
        Err(e) => {
            tracing::error!(call_id = %call.call_id, error = %e, "could not record streamed call; its lease will expire and a worker re-runs it");
        }
    }
}
