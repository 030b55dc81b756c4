//! Batch pipelines: many calls submitted to a job in one request, and their results paged by
//! `custom_id` (the shape users of OpenAI's Batch API expect). The calls are queued like any
//! other and dispatched fairly between teams.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json as JsonResponse, Response};
use saasllm_shared::db;
use saasllm_shared::db::calls::CallRow;
use saasllm_shared::domain::money::MicroUsd;
use saasllm_shared::domain::status::CallStatus;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::bulk_calls;
use crate::call_dispatch;
use crate::call_request::LlmCallRequest;
use crate::call_request::request_id;
use crate::error::ApiError;
use crate::extract::{Path, Query, parse_json};
use crate::job_access::{changeable_job, ensure_accepts_calls, parse_id, visible_job};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit_calls))
        .routes(routes!(list_calls))
}

/// Calls to add to a job.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SubmitCalls {
    /// 1 to 50,000 calls, each like the body of `POST /api/jobs/{job_id}/llm-call` plus an
    /// optional `custom_id` (unique within the job) to match results by.
    #[schema(min_items = 1, max_items = 50_000)]
    calls: Vec<LlmCallRequest>,
}

/// Submits many calls to a job in one request, accepted in one transaction (all or none) and
/// queued; answers 202 with the call ids in the order given. Results are paged with
/// `GET /api/jobs/{job_id}/calls`; `GET /api/jobs/{job_id}` shows progress counts.
#[utoipa::path(
    post,
    path = "/api/jobs/{job_id}/llm-calls",
    tag = "jobs",
    params(
        ("job_id" = Uuid, Path),
        crate::openapi::IdempotencyHeader,
    ),
    request_body = SubmitCalls,
    responses(
        (status = 202, description = "Accepted and queued", body = serde_json::Value,
         example = json!({"job_id": "0193...", "status": "queued", "count": 2, "calls": [{"call_id": "0193...a", "custom_id": "doc-1"}, {"call_id": "0193...b", "custom_id": "doc-2"}], "calls_url": "/api/jobs/0193.../calls"})),
        (status = 403, description = "The team has no access to a model group", body = crate::openapi::ErrorBody),
        (status = 409, description = "The job is settled, or a custom_id is already used in it", body = crate::openapi::ErrorBody),
        (status = 422, description = "Idempotency-Key reused with a different body", body = crate::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("admin_key" = []))
)]
#[tracing::instrument(skip_all, fields(job_id = %job_id, calls))]
async fn submit_calls(
    caller: Caller,
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let request_id = request_id(request.headers()).map(str::to_owned);
    let SubmitCalls { calls } = parse_json(&bulk_calls::read_body(request).await?)?;
    tracing::Span::current().record("calls", calls.len());
    bulk_calls::check(&calls)?;

    let job = changeable_job(&state, &caller, &job_id).await?;
    ensure_accepts_calls(&job)?;
    let rows = bulk_calls::rows(&state, &job.team_id, &calls).await?;
    let ids = bulk_calls::insert_all(&state, &job, &job_id, request_id.as_deref(), &rows).await?;

    let limits = crate::limits::of_team(&state, &caller, &job.team_id).await?;
    call_dispatch::enqueue_calls(&state, &job.team_id, &limits, &ids).await?;
    let listed: Vec<Value> = ids
        .iter()
        .zip(&calls)
        .map(|(id, call)| json!({"call_id": id, "custom_id": call.custom_id}))
        .collect();
    Ok((
        StatusCode::ACCEPTED,
        JsonResponse(json!({
            "job_id": job.job_id,
            "status": "queued",
            "count": ids.len(),
            "calls": listed,
            "calls_url": format!("/api/jobs/{}/calls", job.job_id),
        })),
    )
        .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListCallsQuery {
    /// queued, running, succeeded, failed or cancelled; empty for all.
    #[param(pattern = "^(|queued|running|succeeded|failed|cancelled)$")]
    status: Option<String>,
    /// 1..=1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The last `call_id` of the previous page (`next_after`), or empty.
    #[param(
        pattern = "^$|^[0-9a-fA-F]{32}$|^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    after: Option<String>,
}

/// A page of a job's calls with their results, in submission order; follow `next_after` while
/// `has_more`. Match results to inputs by `custom_id`.
#[utoipa::path(
    get,
    path = "/api/jobs/{job_id}/calls",
    tag = "jobs",
    params(("job_id" = Uuid, Path), ListCallsQuery),
    responses((status = 200, description = "A page of calls", body = serde_json::Value,
        example = json!({"job_id": "0193...", "calls": [{"call_id": "0193...a", "custom_id": "doc-1", "status": "succeeded", "response": {"content": "...", "finish_reason": "stop"}, "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}}], "has_more": true, "next_after": "0193...a"}))),
    security(("bearer" = []), ("admin_key" = []))
)]
async fn list_calls(
    caller: Caller,
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    Query(query): Query<ListCallsQuery>,
) -> Result<JsonResponse<Value>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 1000".into(),
        ));
    }
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            serde_json::from_value::<CallStatus>(Value::String(text.to_owned())).map_err(|_| {
                ApiError::BadRequest(format!(
                    "Invalid status '{text}': must be one of queued, running, succeeded, failed, cancelled"
                ))
            })?,
        ),
    };
    let after = match query.after.as_deref() {
        None | Some("") => None,
        Some(text) => Some(parse_id("call", text)?),
    };
    let job = visible_job(&state, &caller, &job_id).await?;
    let mut rows = db::calls::page_for_job(&state.db, job.job_id, status, after, limit + 1).await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok(JsonResponse(json!({
        "job_id": job.job_id,
        "calls": rows.iter().map(listed_call).collect::<Vec<_>>(),
        "has_more": has_more,
        "next_after": if has_more { rows.last().map(|r| r.call_id) } else { None },
    })))
}

fn listed_call(row: &CallRow) -> Value {
    let finished = row.status.is_terminal();
    json!({
        "call_id": row.call_id,
        "custom_id": row.custom_id,
        "status": row.status,
        "purpose": row.purpose,
        "model_group": row.model_group,
        "model_used": row.model_used,
        "response": (row.status == CallStatus::Succeeded).then(|| json!({
            "content": row.response_content,
            "finish_reason": row.finish_reason,
        })),
        "usage": finished.then(|| json!({
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "total_tokens": row.total_tokens,
        })),
        "cost_usd": row.cost_micro_usd.map(|c| MicroUsd(c).usd()),
        "latency_ms": row.latency_ms,
        "error": row.error,
        "created_at": row.created_at,
        "finished_at": row.finished_at,
    })
}
