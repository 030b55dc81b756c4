//! LLM calls in a job: written to PostgreSQL as `queued`, pushed to the queue, run by a worker.
//! By default the request waits for the result (the guide's synchronous shape); with
//! `"async": true` or `Prefer: respond-async` it answers 202 at once and the call is polled.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json as JsonResponse, Response};
use saasllm_shared::db;
use saasllm_shared::db::calls::{CallRow, Insertion, NewCall};
use saasllm_shared::domain::status::CallStatus;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::job_access::{
    changeable_job, ensure_accepts_calls, granted_group, parse_id, visible_job,
};
use crate::routes::call_stream;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(llm_call))
        .routes(routes!(show_call))
}

/// An LLM call: the model group, the messages and any other OpenAI chat parameter
/// (temperature, max_tokens, response_format, stream...), passed through. The model is chosen
/// by the group, never by the client.
#[derive(Deserialize, ToSchema)]
pub(crate) struct LlmCallRequest {
    pub model_group: String,
    /// At least one message; each an object with a string `role`.
    #[schema(value_type = Vec<ChatMessage>, min_items = 1)]
    pub messages: Value,
    pub purpose: Option<String>,
    /// The client's id for the call, unique within the job (1 to 256 characters).
    #[schema(min_length = 1, max_length = 256)]
    pub custom_id: Option<String>,
    #[serde(rename = "async", default)]
    pub respond_async: bool,
    /// Every other OpenAI chat parameter, passed through to the upstream.
    #[serde(flatten)]
    pub params: Map<String, Value>,
}

/// One chat message as the document describes it; `messages` is passed through as given.
#[derive(ToSchema)]
#[allow(dead_code)] // only its schema is used
pub(crate) struct ChatMessage {
    role: String,
    #[schema(value_type = Option<Object>)]
    content: Option<Value>,
}

/// Checks the messages and the common parameters, so a typo is a 400 here rather than an
/// upstream error after queueing.
pub(crate) fn validate_request(request: &LlmCallRequest) -> Result<(), ApiError> {
    if let Some(custom_id) = &request.custom_id
        && (custom_id.is_empty() || custom_id.chars().count() > 256)
    {
        return Err(ApiError::BadRequest(
            "custom_id must be 1 to 256 characters".into(),
        ));
    }
    let Some(messages) = request.messages.as_array() else {
        return Err(ApiError::BadRequest(
            "messages must be an array of {role, content} objects".into(),
        ));
    };
    if messages.is_empty() {
        return Err(ApiError::BadRequest("messages must not be empty".into()));
    }
    for (index, message) in messages.iter().enumerate() {
        if message.get("role").and_then(Value::as_str).is_none() {
            return Err(ApiError::BadRequest(format!(
                "messages[{index}] needs a string 'role'"
            )));
        }
    }
    let number = |field: &str, range: std::ops::RangeInclusive<f64>| -> Result<(), ApiError> {
        match request.params.get(field) {
            None | Some(Value::Null) => Ok(()),
            Some(value) => match value.as_f64() {
                Some(n) if range.contains(&n) => Ok(()),
                _ => Err(ApiError::BadRequest(format!(
                    "{field} must be a number between {} and {}",
                    range.start(),
                    range.end()
                ))),
            },
        }
    };
    number("temperature", 0.0..=2.0)?;
    number("top_p", 0.0..=1.0)?;
    number("presence_penalty", -2.0..=2.0)?;
    number("frequency_penalty", -2.0..=2.0)?;
    for field in ["max_tokens", "max_completion_tokens"] {
        match request.params.get(field) {
            None | Some(Value::Null) => {}
            Some(value) if value.as_u64().is_some_and(|n| n >= 1) => {}
            Some(_) => {
                return Err(ApiError::BadRequest(format!(
                    "{field} must be a positive integer"
                )));
            }
        }
    }
    if request.respond_async && streaming(request) {
        return Err(ApiError::BadRequest(
            "stream and async cannot be combined".into(),
        ));
    }
    Ok(())
}

pub(crate) fn streaming(request: &LlmCallRequest) -> bool {
    request.params.get("stream").and_then(Value::as_bool) == Some(true)
}

/// Makes an LLM call in a job, with the group's models tried in priority order. Waits for the
/// result by default; `"async": true` or `Prefer: respond-async` answers 202 with the call id
/// at once; `"stream": true` answers with server-sent events.
#[utoipa::path(
    post,
    path = "/api/jobs/{job_id}/llm-call",
    tag = "jobs",
    params(
        ("job_id" = Uuid, Path),
        ("Prefer" = Option<String>, Header, description = "`respond-async` to get 202 at once"),
        crate::openapi::IdempotencyHeader,
    ),
    request_body = LlmCallRequest,
    responses(
        (status = 200, description = "The call's result (or an SSE stream with `stream: true`)", body = serde_json::Value,
         example = json!({"call_id": "0193...", "response": {"content": "...", "finish_reason": "stop"}, "metadata": {"tokens_used": 42, "latency_ms": 850, "model_group": "ResumeAgent"}})),
        (status = 202, description = "Accepted; poll `GET /api/jobs/{job_id}/calls/{call_id}`", body = serde_json::Value),
        (status = 403, description = "The team has no access to the model group, or is suspended", body = crate::openapi::ErrorBody),
        (status = 409, description = "The job is already completing, settled or expired", body = crate::openapi::ErrorBody),
        (status = 422, description = "Idempotency-Key reused with a different body", body = crate::openapi::ErrorBody),
        (status = 429, description = "The team is at one of its limits (`Retry-After` says when to retry)", body = crate::openapi::ErrorBody),
        (status = 502, description = "Every model of the group failed", body = crate::openapi::ErrorBody),
        (status = 504, description = "No result within the wait; the call goes on and can be polled", body = crate::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("admin_key" = []))
)]
#[tracing::instrument(skip_all, fields(job_id = %job_id, call_id))]
async fn llm_call(
    caller: Caller,
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    Json(request): Json<LlmCallRequest>,
) -> Result<Response, ApiError> {
    validate_request(&request)?;
    let respond_async = request.respond_async
        || headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
            });
    let stream = streaming(&request);
    let job = changeable_job(&state, &caller, &job_id).await?;
    ensure_accepts_calls(&job)?;
    let group = granted_group(&state, &job.team_id, &request.model_group).await?;

    let limits = crate::limits::of_team(&state, &caller, &job.team_id).await?;
    // A synchronous caller over the team's limits is told to come back (429) rather than left
    // waiting; an asynchronous call is queued and waits for the dispatcher. A streamed call runs
    // in this process, so it takes its slot here.
    let admission = if stream {
        crate::limits::admit(&state, &job.team_id, &limits, true).await?
    } else {
        if !respond_async {
            crate::limits::check(&state, &job.team_id, &limits).await?;
        }
        None
    };

    let custom_id = request.custom_id.clone();
    let upstream_body = upstream_body(request.params, request.messages);

    // The job is re-checked under its row lock in the insert itself: a concurrent complete or
    // cancel cannot slip in between.
    let inserted = db::calls::insert_into_open_job(
        &state.db,
        &NewCall {
            job_id: job.job_id,
            team_id: &job.team_id,
            model_group_id: group.model_group_id,
            model_group: &group.group_name,
            purpose: request.purpose.as_deref(),
            request: &upstream_body,
            request_id: headers.get("x-request-id").and_then(|v| v.to_str().ok()),
            custom_id: custom_id.as_deref(),
            notify_on_finish: !respond_async && !stream,
        },
    )
    .await
    .map_err(|e| ApiError::from_db(e, |c| custom_id_taken(c, custom_id.as_deref())))?;
    let call_id = match inserted {
        Insertion::Inserted(call_id) => call_id,
        Insertion::JobFinished(status) => {
            return Err(ApiError::Conflict(format!(
                "Job '{}' is {}; no more calls can be made in it",
                job.job_id,
                status.as_str()
            )));
        }
        Insertion::JobNotFound => {
            return Err(ApiError::NotFound(format!("Job '{job_id}' not found")));
        }
    };
    tracing::Span::current().record("call_id", tracing::field::display(call_id));

    if stream {
        // Claimed by this process (no queue message): see `call_stream`.
        let claimed = db::calls::claim(&state.db, call_id, call_stream::STREAMING_WORKER_ID, 30.0)
            .await?
            .ok_or_else(|| anyhow::anyhow!("a just-created call could not be claimed"))?;
        return call_stream::stream(state, claimed, group.group_name, admission).await;
    }

    // Registered before the push so the worker's notification cannot be missed.
    let waiter = (!respond_async).then(|| state.notifier.call(call_id));
    if let Err(e) = state.queue.push(&job.team_id, &limits, &[call_id]).await {
        tracing::error!(error = %e, "cannot enqueue call; withdrawing it");
        if db::calls::withdraw_unclaimed(&state.db, call_id).await? {
            return Err(ApiError::Unavailable(
                "Queue unavailable, the call was not accepted; retry later".into(),
            ));
        }
        // Already claimed through another path: it was accepted after all.
    }
    if respond_async {
        return Ok((
            StatusCode::ACCEPTED,
            JsonResponse(json!({
                "call_id": call_id,
                "job_id": job.job_id,
                "status": "queued",
                "poll_url": format!("/api/jobs/{}/calls/{call_id}", job.job_id),
            })),
        )
            .into_response());
    }

    let deadline = tokio::time::Instant::now() + state.settings.sync_call_timeout;
    let mut waiter = waiter;
    // The waiter was registered before the push, so the first read can wait for the worker's
    // notification (or the periodic re-read) instead of finding the call still queued.
    let mut first_round = true;
    loop {
        if !std::mem::take(&mut first_round)
            && let Some(row) = db::calls::find(&state.db, job.job_id, call_id).await?
            && row.status.is_terminal()
        {
            return sync_result(&row);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(ApiError::GatewayTimeout(format!(
                "LLM call {call_id} did not finish within {} s; it goes on: poll GET /api/jobs/{}/calls/{call_id}",
                state.settings.sync_call_timeout.as_secs(),
                job.job_id
            )));
        }
        let wait = (deadline - now).min(std::time::Duration::from_secs(1));
        match waiter.take() {
            Some(w) => {
                w.wait(wait).await;
            }
            None => tokio::time::sleep(wait).await,
        }
        waiter = Some(state.notifier.call(call_id));
    }
}

/// The body sent upstream: the client's parameters and messages, without what the service
/// decides (the model, streaming).
pub fn upstream_body(mut params: Map<String, Value>, messages: Value) -> Value {
    params.remove("model");
    params.remove("stream");
    params.remove("stream_options");
    params.remove("async");
    params.insert("messages".into(), messages);
    Value::Object(params)
}

/// The 409 for a `custom_id` already used in the job.
pub fn custom_id_taken(constraint: &str, custom_id: Option<&str>) -> Option<ApiError> {
    (constraint == "llm_calls_job_custom_id_key").then(|| {
        ApiError::Conflict(format!(
            "custom_id '{}' is already used by another call of this job",
            custom_id.unwrap_or_default()
        ))
    })
}

/// The guide's synchronous answer, or 502 when every model failed.
fn sync_result(row: &CallRow) -> Result<Response, ApiError> {
    match row.status {
        CallStatus::Succeeded => Ok(JsonResponse(result_body(row)).into_response()),
        CallStatus::Cancelled => Err(ApiError::Conflict(format!(
            "LLM call {} was cancelled with its job before it ran",
            row.call_id
        ))),
        _ => Err(ApiError::BadGateway(format!(
            "LLM call failed: {}",
            row.error.as_deref().unwrap_or("unknown error")
        ))),
    }
}

fn result_body(row: &CallRow) -> Value {
    json!({
        "call_id": row.call_id,
        "response": {
            "content": row.response_content,
            "finish_reason": row.finish_reason,
        },
        "metadata": {
            "tokens_used": row.total_tokens.unwrap_or(0),
            "latency_ms": row.latency_ms.unwrap_or(0),
            "model_group": row.model_group,
        },
    })
}

/// One call of a job: its status and, once finished, its result or error.
#[utoipa::path(
    get,
    path = "/api/jobs/{job_id}/calls/{call_id}",
    tag = "jobs",
    params(("job_id" = Uuid, Path), ("call_id" = Uuid, Path)),
    responses((status = 200, description = "The call", body = serde_json::Value)),
    security(("bearer" = []), ("admin_key" = []))
)]
async fn show_call(
    caller: Caller,
    State(state): State<AppState>,
    Path((job_id, call_id)): Path<(String, String)>,
) -> Result<JsonResponse<Value>, ApiError> {
    let job = visible_job(&state, &caller, &job_id).await?;
    let call_uuid: Uuid = parse_id("call", &call_id)?;
    let row = db::calls::find(&state.db, job.job_id, call_uuid)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Call '{call_id}' not found")))?;
    let mut body = json!({
        "call_id": row.call_id,
        "job_id": row.job_id,
        "custom_id": row.custom_id,
        "status": row.status,
        "purpose": row.purpose,
        "model_group": row.model_group,
        "created_at": row.created_at,
        "finished_at": row.finished_at,
    });
    if let Value::Object(fields) = &mut body {
        match row.status {
            CallStatus::Succeeded => {
                if let Value::Object(result) = result_body(&row) {
                    fields.extend(result.into_iter().filter(|(k, _)| k != "call_id"));
                }
            }
            CallStatus::Failed => {
                fields.insert(
                    "error".into(),
                    Value::String(format!(
                        "LLM call failed: {}",
                        row.error.as_deref().unwrap_or("unknown error")
                    )),
                );
            }
            CallStatus::Cancelled => {
                fields.insert(
                    "error".into(),
                    Value::String("Cancelled with its job before it ran".into()),
                );
            }
            CallStatus::Queued | CallStatus::Running => {}
        }
    }
    Ok(JsonResponse(body))
}
