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

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use saasllm_shared::config::CALL_LEASE;
use saasllm_shared::db;
use saasllm_shared::db::calls::{CallResult, ClaimedCall};
use saasllm_shared::domain::money::MicroUsd;
use saasllm_shared::domain::outcomes::AttemptOutcome;
use saasllm_shared::domain::pricing;
use saasllm_shared::domain::status::CallStatus;
use saasllm_worker::{
    AttemptRecord, OpenedStream, Served, StreamStart, keep_lease, record_metrics, record_result,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::ApiError;
use crate::limits::Admission;
use crate::sse::SseScan;
use crate::state::AppState;

/// Worker id recorded on calls streamed by an API process.
const STREAMING_WORKER_ID: &str = "api-stream";

/// Claims a just-inserted call for this process (it has no queue message) and streams it.
pub async fn claim_and_stream(
    state: AppState,
    call_id: Uuid,
    model_group: String,
    admission: Option<Admission>,
) -> Result<Response, ApiError> {
    let claimed = db::calls::claim(
        &state.db,
        call_id,
        STREAMING_WORKER_ID,
        CALL_LEASE.as_secs_f64(),
    )
    .await?
    .ok_or_else(|| anyhow::anyhow!("a just-created call could not be claimed"))?;
    stream(state, claimed, model_group, admission).await
}

/// Starts streaming a claimed call. Answers 502 when every model fails before the first byte.
async fn stream(
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
    let keeper = keep_lease(state.db.clone(), &call, CALL_LEASE);
    let started = Instant::now();
    let request = streaming_request(&call.request);
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
            let result = CallResult::failed(&error, started.elapsed().as_millis() as i64);
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
    let stream_error = forward(&mut stream, &mut scan, &events).await;
    keeper.abort();
    cover_the_stream(&mut attempts, streaming_started, &stream_error);
    let latency_ms = started.elapsed().as_millis() as i64;
    let final_event = match stream_error {
        None => {
            let streamed = Streamed {
                scan: &scan,
                reported_cost: stream.reported_cost,
                model: &model,
                config: &config,
            };
            let result = streamed.result(latency_ms, admission.as_ref());
            write(&state, &call, &attempts, &result).await;
            json!({
                "call_id": call.call_id,
                "response": {"content": scan.content, "finish_reason": scan.finish_reason},
                "metadata": {"tokens_used": result.total_tokens.unwrap_or(0), "latency_ms": latency_ms, "model_group": model_group},
            })
        }
        Some(error) => {
            write(
                &state,
                &call,
                &attempts,
                &CallResult::failed(&error, latency_ms),
            )
            .await;
            json!({"call_id": call.call_id, "error": format!("LLM call failed: {error}")})
        }
    };
    let _ = events.send(event(&final_event)).await;
    let _ = events.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
}

/// The call's request as sent upstream: streamed, with the usage in its last chunk.
fn streaming_request(request: &Value) -> Value {
    let mut request = request.clone();
    if let Value::Object(fields) = &mut request {
        fields.insert("stream".into(), Value::Bool(true));
        fields.insert("stream_options".into(), json!({"include_usage": true}));
    }
    request
}

/// The chain timed the last attempt to its first byte; its record covers the whole stream. A
/// stream that broke after that byte ends the call: what was sent cannot be taken back.
fn cover_the_stream(
    attempts: &mut [AttemptRecord],
    streaming_started: Instant,
    stream_error: &Option<String>,
) {
    if let Some(last) = attempts.last_mut() {
        last.latency_ms += streaming_started.elapsed().as_millis() as i64;
        if stream_error.is_some() {
            last.outcome = AttemptOutcome::Fatal;
            last.error.clone_from(stream_error);
        }
    }
}

/// Forwards the stream's deltas as events until it ends; the error that broke it, if any.
async fn forward(
    stream: &mut OpenedStream,
    scan: &mut SseScan,
    events: &mpsc::Sender<Bytes>,
) -> Option<String> {
    loop {
        match stream.next_chunk().await {
            Ok(Some(bytes)) => {
                for delta in scan.feed(&bytes) {
                    // A client that left makes sends fail; the call is still recorded.
                    let _ = events.send(event(&json!({"content": delta}))).await;
                }
            }
            Ok(None) => return None,
            Err(e) => return Some(e.to_string()),
        }
    }
}

/// A stream that ran to its end: what was scanned from it, and the model that served it.
struct Streamed<'a> {
    scan: &'a SseScan,
    reported_cost: Option<MicroUsd>,
    model: &'a str,
    config: &'a Value,
}

impl<'a> Streamed<'a> {
    /// The call's result: tokens from the usage chunk, and the cost the upstream reported (in a
    /// header or, as LiteLLM does for a stream, in the usage chunk) or else the model's price.
    /// The tokens count towards the team's minute.
    fn result(&self, latency_ms: i64, admission: Option<&Admission>) -> CallResult<'a> {
        let scan = self.scan;
        let (prompt, completion) = (
            scan.tokens("prompt_tokens"),
            scan.tokens("completion_tokens"),
        );
        let total = scan
            .tokens("total_tokens")
            .or_else(|| Some(prompt? + completion?));
        let reported_cost = self.reported_cost.map(|c| c.0).or_else(|| {
            scan.usage
                .as_ref()
                .and_then(pricing::usage_cost)
                .map(|c| c.0)
        });
        let cost = reported_cost.or_else(|| {
            pricing::price_for(self.model, self.config)
                .map(|p| pricing::cost(p, prompt.unwrap_or(0), completion.unwrap_or(0)).0)
        });
        if let Some(admission) = admission {
            admission.count_tokens(total.unwrap_or(0));
        }
        CallResult {
            status: CallStatus::Succeeded,
            model_used: Some(self.model),
            response_content: Some(&scan.content),
            finish_reason: scan.finish_reason.as_deref(),
            response: None,
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: total,
            cost_micro_usd: cost,
            latency_ms,
            error: None,
        }
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
