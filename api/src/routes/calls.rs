//! LLM calls in a job: written to PostgreSQL as `queued`, pushed to the queue, run by a worker.
//! By default the request waits for the result (the guide's synchronous shape); with
//! `"async": true` or `Prefer: respond-async` it answers 202 at once and the call is polled.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json as JsonResponse, Response};
use saasllm_shared::db;
use saasllm_shared::db::calls::CallRow;
use saasllm_shared::domain::status::CallStatus;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::call_dispatch::{self, Delivery};
use crate::call_request::{LlmCallRequest, request_id};
use crate::call_stream;
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::job_access::{
    changeable_job, ensure_accepts_calls, granted_group, parse_id, visible_job,
};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(llm_call))
        .routes(routes!(show_call))
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
    request.check()?;
    let delivery = Delivery::asked_by(&request, &headers);
    let job = changeable_job(&state, &caller, &job_id).await?;
    ensure_accepts_calls(&job)?;
    let group = granted_group(&state, &job.team_id, &request.model_group).await?;
    let (limits, admission) = call_dispatch::admit(&state, &caller, &job.team_id, delivery).await?;
    let call_id = call_dispatch::insert(
        &state,
        &job,
        &job_id,
        &group,
        &request,
        request_id(&headers),
        delivery,
    )
    .await?;
    tracing::Span::current().record("call_id", tracing::field::display(call_id));

    if delivery == Delivery::Stream {
        return call_stream::claim_and_stream(state, call_id, group.group_name, admission).await;
    }
    // Registered before the push so the worker's notification cannot be missed.
    let waiter = (delivery == Delivery::Sync).then(|| state.notifier.call(call_id));
    call_dispatch::enqueue_call(&state, &job.team_id, &limits, call_id).await?;
    let Some(waiter) = waiter else {
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
    };
    let row = call_dispatch::wait_for_result(&state, job.job_id, call_id, waiter).await?;
    sync_result(&row)
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
