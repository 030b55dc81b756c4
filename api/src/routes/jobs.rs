//! Jobs: create (holding one credit), read, list, complete (settling the credit exactly once).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json as JsonResponse, Response};
use chrono::{DateTime, Utc};
use saasllm_shared::db;
use saasllm_shared::db::batch_runs::BATCH_JOB_TYPE;
use saasllm_shared::db::calls::CallRow;
use saasllm_shared::db::jobs::{Cancellation, JobRow, NewJob, Settlement};
use saasllm_shared::domain::money::{MicroUsd, Usd};
use saasllm_shared::domain::net_policy::TargetPolicy;
use saasllm_shared::domain::status::{CallStatus, JobStatus};
use saasllm_shared::domain::webhook;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Caller, team_not_found};
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::job_access::{changeable_job, visible_job};
use crate::routes::validate;
use crate::state::AppState;

/// How often a waiting request re-reads the database even without a notification.
const RECHECK: Duration = Duration::from_secs(1);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(show))
        .routes(routes!(complete))
        .routes(routes!(cancel))
        .routes(routes!(list_for_team))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateJob {
    /// The caller's own team with a team key.
    #[schema(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9_.:-]+$")]
    team_id: String,
    user_id: Option<String>,
    /// Not blank, at most 200 characters.
    #[schema(max_length = 200, pattern = "\\S")]
    job_type: String,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    /// Absolute http or https URL (at most 2048 characters, no user name or password, a public
    /// host: no loopback, private or link-local address, no `localhost` or internal name) that
    /// receives the signed `job.settled` event when the job reaches its final status.
    #[schema(max_length = 2048, pattern = "^[hH][tT][tT][pP][sS]?://")]
    callback_url: Option<String>,
    /// Signing secret of the callback, `whsec_` + base64 of a 16 to 64 byte key (Standard
    /// Webhooks); only with `callback_url`. Generated when omitted; returned only in this response.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]{22,86}={0,2}$")]
    callback_secret: Option<String>,
}

/// The callback of a new job, both parts checked: the URL (its form, and its target against the
/// policy), and the client's secret or a new one.
fn callback<'a>(
    url: Option<&'a str>,
    secret: Option<&str>,
    targets: TargetPolicy,
) -> Result<Option<(&'a str, String)>, ApiError> {
    let Some(url) = url else {
        if secret.is_some() {
            return Err(ApiError::BadRequest(
                "callback_secret was given without a callback_url".into(),
            ));
        }
        return Ok(None);
    };
    let url = validate::callback_url(url)?;
    validate::callback_target(url, targets)?;
    let secret = match secret {
        Some(secret) => {
            webhook::parse_secret(secret).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            secret.to_owned()
        }
        None => webhook::generate_secret(),
    };
    Ok(Some((url, secret)))
}

/// Opens a job, holding one credit until it is completed, failed or expires. With a
/// `callback_url`, the job's final status is POSTed there, signed with `callback_secret`.
#[utoipa::path(
    post,
    path = "/api/jobs/create",
    tag = "jobs",
    params(crate::openapi::IdempotencyHeader),
    request_body = CreateJob,
    responses(
        (status = 200, description = "The job", body = serde_json::Value,
         example = json!({"job_id": "0193...", "team_id": "team_engineering", "job_type": "resume_analysis", "status": "pending", "created_at": "2026-11-28T10:00:00Z", "expires_at": "2026-11-29T10:00:00Z", "callback_url": "https://hooks.example.com/saasllm", "callback_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})),
        (status = 402, description = "Not enough credits", body = crate::openapi::ErrorBody),
        (status = 404, description = "The team does not exist (admin key)", body = crate::openapi::ErrorBody),
        (status = 422, description = "Idempotency-Key reused with a different body", body = crate::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("admin_key" = []))
)]
#[tracing::instrument(skip_all, fields(team_id = %body.team_id, job_id))]
async fn create(
    caller: Caller,
    State(state): State<AppState>,
    Json(body): Json<CreateJob>,
) -> Result<JsonResponse<serde_json::Value>, ApiError> {
    caller.ensure_acts_for_team(&body.team_id)?;
    validate::non_blank("job_type", &body.job_type)?;
    if body.job_type.trim() == BATCH_JOB_TYPE {
        return Err(ApiError::BadRequest(format!(
            "job_type '{BATCH_JOB_TYPE}' is reserved for the jobs of /v1/batches"
        )));
    }
    if body.job_type.chars().count() > 200 {
        return Err(ApiError::BadRequest(
            "job_type must be at most 200 characters".into(),
        ));
    }
    let callback = callback(
        body.callback_url.as_deref(),
        body.callback_secret.as_deref(),
        state.settings.webhook_targets,
    )?;
    let metadata = validate::metadata(body.metadata)?;
    let inserted = state
        .job_credits
        .create(&NewJob {
            team_id: &body.team_id,
            user_id: body.user_id.as_deref(),
            job_type: body.job_type.trim(),
            metadata: &metadata,
            ttl_secs: state.settings.job_ttl.as_secs() as i64,
            callback: callback
                .as_ref()
                .map(|(url, secret)| (*url, secret.as_str())),
        })
        .await?;
    let Some(job) = inserted else {
        let balance = db::credits::find_balance(&state.db, &body.team_id)
            .await?
            .ok_or_else(|| team_not_found(&body.team_id))?;
        return Err(ApiError::InsufficientCredits {
            required: 1,
            available: balance.available().max(0),
        });
    };
    tracing::Span::current().record("job_id", tracing::field::display(job.job_id));
    let mut response = json!({
        "job_id": job.job_id,
        "team_id": job.team_id,
        "job_type": job.job_type,
        "status": job.status,
        "created_at": job.created_at,
        "expires_at": job.expires_at,
    });
    // The secret is shown this once: a replay of this answer is stored without it.
    if let Some((url, secret)) = callback {
        response["callback_url"] = json!(url);
        response["callback_secret"] = json!(secret);
    }
    Ok(JsonResponse(response))
}

/// One call as listed in a job.
#[derive(Serialize)]
struct CallSummary {
    call_id: Uuid,
    purpose: Option<String>,
    model_group: String,
    status: CallStatus,
    tokens: Option<i64>,
    latency_ms: Option<i64>,
    error: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<&CallRow> for CallSummary {
    fn from(c: &CallRow) -> Self {
        Self {
            call_id: c.call_id,
            purpose: c.purpose.clone(),
            model_group: c.model_group.clone(),
            status: c.status,
            tokens: c.total_tokens,
            latency_ms: c.latency_ms,
            error: c.error.as_ref().map(|e| format!("LLM call failed: {e}")),
            created_at: c.created_at,
        }
    }
}

/// The guide's `costs` block.
#[derive(Serialize)]
struct Costs {
    total_calls: usize,
    successful_calls: usize,
    failed_calls: usize,
    total_tokens: i64,
    total_cost_usd: Usd,
    avg_latency_ms: i64,
    credit_applied: bool,
    credits_remaining: i64,
}

async fn costs(state: &AppState, job: &JobRow) -> Result<Costs, ApiError> {
    let (totals, balance) = tokio::try_join!(
        db::calls::totals_for_job(&state.db, job.job_id),
        db::credits::find_balance(&state.db, &job.team_id)
    )?;
    let balance = balance.ok_or_else(|| team_not_found(&job.team_id))?;
    Ok(Costs {
        total_calls: totals.total as usize,
        successful_calls: totals.succeeded as usize,
        failed_calls: totals.failed as usize,
        total_tokens: totals.tokens,
        total_cost_usd: MicroUsd(totals.cost_micro_usd).usd(),
        avg_latency_ms: totals.avg_latency_ms,
        credit_applied: job.credit_applied(),
        credits_remaining: balance.remaining(),
    })
}

/// Calls listed inline in a job; a larger job is paged with `GET /api/jobs/{job_id}/calls`.
const INLINE_CALLS: i64 = 1_000;

/// The job's first calls for inline listing (`INLINE_CALLS` at most).
async fn inline_calls(state: &AppState, job_id: Uuid) -> Result<Vec<CallSummary>, ApiError> {
    let calls = db::calls::summaries_for_job(&state.db, job_id, INLINE_CALLS).await?;
    Ok(calls.iter().map(CallSummary::from).collect())
}

/// A job: status, progress counts, its calls, and once settled its costs.
#[utoipa::path(
    get,
    path = "/api/jobs/{job_id}",
    tag = "jobs",
    params(("job_id" = Uuid, Path)),
    responses((status = 200, description = "The job", body = serde_json::Value)),
    security(("bearer" = []), ("admin_key" = []))
)]
async fn show(
    caller: Caller,
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<JsonResponse<serde_json::Value>, ApiError> {
    let job = visible_job(&state, &caller, &job_id).await?;
    let settled = matches!(
        job.status,
        JobStatus::Completed | JobStatus::Failed | JobStatus::Expired | JobStatus::Cancelled
    );
    let (counts, calls, costs) = tokio::try_join!(
        async { Ok::<_, ApiError>(db::jobs::call_counts(&state.db, job.job_id).await?) },
        inline_calls(&state, job.job_id),
        async {
            Ok(match settled {
                true => Some(costs(&state, &job).await?),
                false => None,
            })
        },
    )?;
    let total = counts.unfinished() + counts.succeeded + counts.failed + counts.cancelled;
    let calls_truncated = total > INLINE_CALLS;
    Ok(JsonResponse(json!({
        "job_id": job.job_id,
        "team_id": job.team_id,
        "user_id": job.user_id,
        "job_type": job.job_type,
        "status": job.status,
        "metadata": job.metadata,
        "completion_metadata": job.completion_metadata,
        "error_message": job.error_message,
        "credit_applied": job.credit_applied(),
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "completed_at": job.completed_at,
        "expires_at": job.expires_at,
        "callback_url": job.callback_url,
        "progress": {
            "total": total,
            "queued": counts.queued,
            "running": counts.running,
            "succeeded": counts.succeeded,
            "failed": counts.failed,
            "cancelled": counts.cancelled,
        },
        "calls": calls,
        "calls_truncated": calls_truncated,
        "calls_url": format!("/api/jobs/{}/calls", job.job_id),
        "costs": costs,
    })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CompleteJob {
    /// `completed` (charges 1 credit) or `failed` (releases the hold).
    #[schema(pattern = "^(completed|failed)$")]
    status: String,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    error_message: Option<String>,
}

/// The settled job in the guide's shape.
async fn summary(state: &AppState, job_id: Uuid) -> Result<Response, ApiError> {
    let job = db::jobs::find(&state.db, job_id, None)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Job '{job_id}' not found")))?;
    let (costs, calls) = tokio::try_join!(costs(state, &job), inline_calls(state, job_id))?;
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
async fn complete(
    caller: Caller,
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    Json(body): Json<CompleteJob>,
) -> Result<Response, ApiError> {
    let requested = match body.status.as_str() {
        "completed" => JobStatus::Completed,
        "failed" => JobStatus::Failed,
        other => {
            return Err(ApiError::BadRequest(format!(
                "status must be 'completed' or 'failed', not '{other}'"
            )));
        }
    };
    let metadata = validate::metadata(body.metadata)?;
    let job = changeable_job(&state, &caller, &job_id).await?;
    let job_id = job.job_id;
    let mut current = job;
    // At most two rounds: a concurrent complete may move the job between our read and our write.
    for _ in 0..2 {
        match current.status {
            JobStatus::Completed | JobStatus::Failed if current.status == requested => {
                return summary(&state, job_id).await;
            }
            JobStatus::Completed
            | JobStatus::Failed
            | JobStatus::Expired
            | JobStatus::Cancelled => {
                return Err(settled_otherwise(job_id, current.status, requested));
            }
            JobStatus::Completing if current.requested_status != Some(requested) => {
                return Err(ApiError::Conflict(format!(
                    "Job '{job_id}' is already being completed as {}",
                    current.requested_status.map_or("failed", JobStatus::as_str)
                )));
            }
            JobStatus::Completing => break,
            JobStatus::Pending | JobStatus::InProgress => {
                let marked = db::jobs::mark_completing(
                    &state.db,
                    job_id,
                    requested,
                    &metadata,
                    body.error_message.as_deref(),
                )
                .await?;
                current = match marked {
                    Some(job) => job,
                    None => db::jobs::find(&state.db, job_id, None)
                        .await?
                        .ok_or_else(|| ApiError::NotFound(format!("Job '{job_id}' not found")))?,
                };
            }
        }
    }
    if current.status != JobStatus::Completing {
        return answer_settled(&state, job_id, requested).await;
    }
    wait_for_settlement(&state, &current.team_id, job_id, requested).await
}

/// The 409 for a job that reached a final status other than the one requested.
fn settled_otherwise(job_id: Uuid, status: JobStatus, requested: JobStatus) -> ApiError {
    ApiError::Conflict(match status {
        JobStatus::Expired => {
            format!("Job '{job_id}' expired before it was completed; its credit hold was released")
        }
        JobStatus::Cancelled => {
            format!("Job '{job_id}' was cancelled; its credit hold was released")
        }
        other => format!(
            "Job '{job_id}' is already {}; it cannot become {}",
            other.as_str(),
            requested.as_str()
        ),
    })
}

/// Answers from the job's final state once it left `completing`: the summary when it became
/// what was requested, else 409. A `cancel` can win the race against the settlement (it takes
/// a `completing` job too), and the caller must not read a 200 for a job that was cancelled.
async fn answer_settled(
    state: &AppState,
    job_id: Uuid,
    requested: JobStatus,
) -> Result<Response, ApiError> {
    let job = db::jobs::find(&state.db, job_id, None)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Job '{job_id}' not found")))?;
    if job.status == requested {
        summary(state, job_id).await
    } else {
        Err(settled_otherwise(job_id, job.status, requested))
    }
}

/// Settles now if every call has finished; otherwise waits (bounded) for the worker that ends
/// the last call to settle, then answers 202 `completing` if it still has not.
async fn wait_for_settlement(
    state: &AppState,
    team_id: &str,
    job_id: Uuid,
    requested: JobStatus,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + state.settings.complete_wait;
    loop {
        let waiter = state.notifier.job(job_id);
        match state.job_credits.settle(team_id, job_id).await? {
            Settlement::Settled | Settlement::NotCompleting => {
                return answer_settled(state, job_id, requested).await;
            }
            Settlement::Waiting => {}
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            let counts = db::jobs::call_counts(&state.db, job_id).await?;
            return Ok((
                StatusCode::ACCEPTED,
                JsonResponse(json!({
                    "job_id": job_id,
                    "status": "completing",
                    "calls_unfinished": counts.unfinished(),
                    "message": "Calls are still running; the job settles when the last one ends. Poll GET /api/jobs/{job_id}.",
                })),
            )
                .into_response());
        }
        waiter.wait((deadline - now).min(RECHECK)).await;
    }
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
async fn cancel(
    caller: Caller,
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<JsonResponse<serde_json::Value>, ApiError> {
    let job = changeable_job(&state, &caller, &job_id).await?;
    match state.job_credits.cancel(&job.team_id, job.job_id).await? {
        Cancellation::Cancelled { .. } | Cancellation::AlreadyCancelled => {}
        Cancellation::Settled(status) => {
            return Err(ApiError::Conflict(format!(
                "Job '{}' is already {}; it cannot be cancelled",
                job.job_id,
                status.as_str()
            )));
        }
        Cancellation::NotFound => {
            return Err(ApiError::NotFound(format!("Job '{job_id}' not found")));
        }
    };
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// 1..=1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    #[param(minimum = 0)]
    offset: Option<i64>,
    /// Only jobs in this status; empty for all.
    #[param(pattern = "^(|pending|in_progress|completing|completed|failed|expired|cancelled)$")]
    status: Option<String>,
}

/// A team's jobs, newest first.
#[utoipa::path(
    get,
    path = "/api/teams/{team_id}/jobs",
    tag = "jobs",
    params(("team_id" = String, Path), ListQuery),
    responses((status = 200, description = "A page of jobs", body = serde_json::Value)),
    security(("bearer" = []), ("admin_key" = []))
)]
async fn list_for_team(
    caller: Caller,
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<JsonResponse<serde_json::Value>, ApiError> {
    caller.ensure_can_see_team(&team_id)?;
    let (limit, offset) = validate::page(query.limit, query.offset, 100)?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(JobStatus::parse(text).ok_or_else(|| {
            let names: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::BadRequest(format!(
                "Invalid status '{text}': must be one of {}",
                names.join(", ")
            ))
        })?),
    };
    if db::teams::find(&state.db, &team_id).await?.is_none() {
        return Err(team_not_found(&team_id));
    }
    let (jobs, total) = db::jobs::list_for_team(&state.db, &team_id, status, limit, offset).await?;
    let jobs: Vec<_> = jobs
        .into_iter()
        .map(|j| {
            json!({
                "job_id": j.job_id,
                "team_id": j.team_id,
                "user_id": j.user_id,
                "job_type": j.job_type,
                "status": j.status,
                "metadata": j.metadata,
                "credit_applied": j.credit_applied(),
                "created_at": j.created_at,
                "completed_at": j.completed_at,
            })
        })
        .collect();
    Ok(JsonResponse(json!({
        "team_id": team_id,
        "total": total,
        "limit": limit,
        "offset": offset,
        "jobs": jobs,
    })))
}
