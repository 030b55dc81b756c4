//! Completing and cancelling a job, each settling its credit hold exactly once.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json as JsonResponse, Response};
use saasllm_shared::db;
use saasllm_shared::domain::status::JobStatus;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::job_access::{changeable_job, job_not_found};
use crate::job_report::{self, INLINE_CALLS};
use crate::job_settlement::{self, Completion};
use crate::state::AppState;
use crate::validate;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CompleteJob {
    /// `completed` (charges 1 credit) or `failed` (releases the hold).
    #[schema(pattern = "^(completed|failed)$")]
    status: String,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    error_message: Option<String>,
}

/// Completes a job. Waits for its calls to finish, then settles: `completed` charges one
/// credit exactly once, `failed` (or a failed call) releases the hold. Repeating the same
/// completion returns the same summary; a different one is 409.
#[utoipa::path(
    post,
    path = "/api/jobs/{job_id}/complete",
    tag = "jobs",
    params(("job_id" = Uuid, Path), crate::openapi::IdempotencyHeader),
    request_body = CompleteJob,
    responses(
        (status = 200, description = "Settled: the job's costs and calls", body = serde_json::Value),
        (status = 202, description = "Calls still running; the job settles when the last one ends", body = serde_json::Value),
        (status = 409, description = "Already settled differently, or expired", body = crate::openapi::ErrorBody),
        (status = 422, description = "Idempotency-Key reused with a different body", body = crate::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("admin_key" = []))
)]
#[tracing::instrument(skip_all, fields(job_id = %job_id))]
pub(super) async fn complete(
    caller: Caller,
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    Json(body): Json<CompleteJob>,
) -> Result<Response, ApiError> {
    let requested = job_settlement::requested_status(&body.status)?;
    let metadata = validate::metadata(body.metadata)?;
    let job = changeable_job(&state, &caller, &job_id).await?;
    let job_id = job.job_id;
    let completion = job_settlement::complete(
        &state,
        job,
        requested,
        &metadata,
        body.error_message.as_deref(),
    )
    .await?;
    match completion {
        Completion::Settled => summary(&state, job_id).await,
        Completion::Running { calls_unfinished } => Ok((
            StatusCode::ACCEPTED,
            JsonResponse(json!({
                "job_id": job_id,
                "status": "completing",
                "calls_unfinished": calls_unfinished,
                "message": "Calls are still running; the job settles when the last one ends. Poll GET /api/jobs/{job_id}.",
            })),
        )
            .into_response()),
    }
}

/// The settled job in the guide's shape.
async fn summary(state: &AppState, job_id: Uuid) -> Result<Response, ApiError> {
    let job = db::jobs::find(&state.db, job_id, None)
        .await?
        .ok_or_else(|| job_not_found(job_id))?;
    let (costs, calls) = tokio::try_join!(
        job_report::costs(state, &job),
        job_report::inline_calls(state, job_id)
    )?;
    let calls_truncated = costs.total_calls as i64 > INLINE_CALLS;
    Ok(JsonResponse(json!({
        "job_id": job.job_id,
        "status": job.status,
        "completed_at": job.completed_at,
        "costs": costs,
        "calls": calls,
        "calls_truncated": calls_truncated,
    }))
    .into_response())
}

/// Cancels a job: its queued calls never run, running ones finish, the credit hold is released
/// and nothing is charged. Repeating it answers the same; a job already settled otherwise is 409.
#[utoipa::path(
    post,
    path = "/api/jobs/{job_id}/cancel",
    tag = "jobs",
    params(("job_id" = Uuid, Path)),
    responses(
        (status = 200, description = "Cancelled", body = serde_json::Value,
         example = json!({"job_id": "0193...", "status": "cancelled", "calls_cancelled": 120, "calls_running": 4, "credit_applied": false, "credits_remaining": 99})),
        (status = 409, description = "Already completed, failed or expired", body = crate::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("admin_key" = []))
)]
#[tracing::instrument(skip_all, fields(job_id = %job_id))]
pub(super) async fn cancel(
    caller: Caller,
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<JsonResponse<serde_json::Value>, ApiError> {
    let job = changeable_job(&state, &caller, &job_id).await?;
    job_settlement::cancel(&state, &job, &job_id).await?;
    let (counts, balance) = tokio::try_join!(
        db::jobs::call_counts(&state.db, job.job_id),
        db::credits::find_balance(&state.db, &job.team_id)
    )?;
    Ok(JsonResponse(json!({
        "job_id": job.job_id,
        "status": JobStatus::Cancelled,
        "calls_cancelled": counts.cancelled,
        "calls_running": counts.running,
        "credit_applied": false,
        "credits_remaining": balance.map(|b| b.remaining()),
    })))
}
