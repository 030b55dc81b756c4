//! Streaming on the job path (`"stream": true` on llm-call). This is a direct path: the API
//! process claims the call itself (same lease and fencing as a worker) and streams from the
//! upstream, so deltas reach the client as they are produced. Fallback to the next model applies
//! until the first byte has been sent; after that an upstream failure is reported in the stream.
//! The call is recorded in the job like any other; should this process die mid-stream, the lease
//! expires and a worker runs the call to the end.
//!
//! Events: `data: {"content": "<delta>"}` per delta, then `data: {"call_id", "response",
//! "metadata"}` (or `{"call_id", "error"}`), then `data: [DONE]`.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures::StreamExt;
use saasllm_shared::db::calls::{CallResult, ClaimedCall};
use saasllm_shared::domain::pricing;
use saasllm_shared::domain::status::CallStatus;
use saasllm_worker::executor::{AttemptRecord, keep_lease, record_metrics, record_result};
use saasllm_worker::fallback::{self, Next};
use saasllm_worker::upstream::{error_message, reported_cost, root_cause};
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

/// The model that answered with a stream, and what came through.
struct Streamed {
    model: String,
    config: Value,
    scan: SseScan,
    reported_cost: Option<i64>,
    /// Set when the upstream failed after the first byte.
    error: Option<String>,
}

/// Runs the chain, forwarding deltas, then records the result (even if the client has left).
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
    let models = call.models.0.clone();
    let mut attempts: Vec<AttemptRecord> = Vec::new();
    let mut last_error = format!("model group '{model_group}' has no models");
    let mut started_tx = Some(started_tx);
    let mut streamed: Option<Streamed> = None;

    for (model, config) in models {
        let mut body = call.request.clone();
        if let Value::Object(fields) = &mut body {
            fields.insert("model".into(), Value::String(model.clone()));
            fields.insert("stream".into(), Value::Bool(true));
            fields.insert("stream_options".into(), json!({"include_usage": true}));
        }
        let attempt_started = Instant::now();
        let response = match state.upstream.post(&body).await {
            Ok(response) => response,
            Err(e) => {
                last_error = if e.is_timeout() {
                    "upstream request timed out".to_owned()
                } else {
                    format!("upstream request failed: {}", root_cause(&e))
                };
                attempts.push(AttemptRecord {
                    model,
                    http_status: None,
                    outcome: "fallback",
                    latency_ms: attempt_started.elapsed().as_millis() as i64,
                    error: Some(last_error.clone()),
                });
                continue;
            }
        };
        let status = response.status().as_u16();
        if !response.status().is_success() {
            let text = response.text().await.unwrap_or_default();
            let text: String = text.chars().take(2_048).collect();
            last_error = error_message(status, &text);
            let next = fallback::classify_status(status, &text);
            attempts.push(AttemptRecord {
                model,
                http_status: Some(i32::from(status)),
                outcome: if next == Next::Fallback {
                    "fallback"
                } else {
                    "fatal"
                },
                latency_ms: attempt_started.elapsed().as_millis() as i64,
                error: Some(last_error.clone()),
            });
            if next == Next::Stop {
                break;
            }
            continue;
        }
        let reported_cost = reported_cost(&response).map(|c| c.0);
        if let Some(tx) = started_tx.take() {
            let _ = tx.send(Ok(()));
        }
        let mut scan = SseScan::default();
        let mut stream_error = None;
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(bytes) => {
                    for delta in scan.feed(&bytes) {
                        // A client that left makes sends fail; the call is still recorded.
                        let _ = events.send(event(&json!({"content": delta}))).await;
                    }
                }
                Err(e) => {
                    stream_error = Some(format!("upstream stream broke: {}", root_cause(&e)));
                    break;
                }
            }
        }
        attempts.push(AttemptRecord {
            model: model.clone(),
            http_status: Some(i32::from(status)),
            outcome: if stream_error.is_none() {
                "succeeded"
            } else {
                "fatal"
            },
            latency_ms: attempt_started.elapsed().as_millis() as i64,
            error: stream_error.clone(),
        });
        streamed = Some(Streamed {
            model,
            config,
            scan,
            reported_cost,
            error: stream_error,
        });
        break;
    }
    keeper.abort();

    let latency_ms = started.elapsed().as_millis() as i64;
    let (final_event, result_written) = match &streamed {
        Some(Streamed {
            model,
            config,
            scan,
            reported_cost,
            error: None,
        }) => {
            let (prompt, completion) = (
                scan.tokens("prompt_tokens"),
                scan.tokens("completion_tokens"),
            );
            let total = scan
                .tokens("total_tokens")
                .or_else(|| Some(prompt? + completion?));
            // LiteLLM reports a stream's cost in the usage chunk, not in a header.
            let reported_cost = reported_cost.or_else(|| {
                scan.usage
                    .as_ref()
                    .and_then(pricing::usage_cost)
                    .map(|c| c.0)
            });
            let cost = reported_cost.or_else(|| {
                pricing::price_for(model, config)
                    .map(|p| pricing::cost(p, prompt.unwrap_or(0), completion.unwrap_or(0)).0)
            });
            if let Some(admission) = &admission {
                admission.count_tokens(total.unwrap_or(0));
            }
            let result = CallResult {
                status: CallStatus::Succeeded,
                model_used: Some(model),
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
            let written = write(&state, &call, &attempts, &result).await;
            let final_event = json!({
                "call_id": call.call_id,
                "response": {"content": scan.content, "finish_reason": scan.finish_reason},
                "metadata": {"tokens_used": total.unwrap_or(0), "latency_ms": latency_ms, "model_group": model_group},
            });
            (final_event, written)
        }
        other => {
            let error = match other {
                Some(Streamed {
                    error: Some(error), ..
                }) => error.clone(),
                _ => last_error.clone(),
            };
            let result = CallResult {
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
                error: Some(&error),
            };
            let written = write(&state, &call, &attempts, &result).await;
            (
                json!({"call_id": call.call_id, "error": format!("LLM call failed: {error}")}),
                written,
            )
        }
    };
    if let Some(tx) = started_tx.take() {
        // Nothing was streamed: the request answers 502 instead of an event stream.
        let _ = tx.send(Err(last_error));
        return;
    }
    if !result_written {
        tracing::warn!(call_id = %call.call_id, "streamed call's result was not recorded by this process");
    }
    let _ = events.send(event(&final_event)).await;
    let _ = events.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
}

/// Writes the attempts and the result under the call's lease (settling the job if it waits).
async fn write(
    state: &AppState,
    call: &ClaimedCall,
    attempts: &[AttemptRecord],
    result: &CallResult<'_>,
) -> bool {
    record_metrics(&call.model_group, attempts, result.status);
    record_result(&state.db, call, attempts, result).await.unwrap_or_else(|e| {
        tracing::error!(call_id = %call.call_id, error = %e, "could not record streamed call; its lease will expire and a worker re-runs it");
        false
    })
}
