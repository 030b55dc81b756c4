//! Jobs: create (holding one credit), read and list; completing and cancelling (settling the
//! credit exactly once) are in `completion`.

use axum::extract::State;
use axum::response::Json as JsonResponse;
use saasllm_shared::db;
use saasllm_shared::db::jobs::NewJob;
use saasllm_shared::domain::status::JobStatus;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, team_not_found};
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::job_access::visible_job;
use crate::job_report::{self, INLINE_CALLS};
use crate::state::AppState;
use crate::validate;

mod completion;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(show))
        .routes(routes!(completion::complete))
        .routes(routes!(completion::cancel))
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
    validate::job_type(&body.job_type)?;
    let callback = validate::job_callback(
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
        return Err(not_enough_credits(&state, &body.team_id).await?);
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

/// The 402 for a job its team has no credit to hold for.
async fn not_enough_credits(state: &AppState, team_id: &str) -> Result<ApiError, ApiError> {
    let balance = db::credits::find_balance(&state.db, team_id)
        .await?
        .ok_or_else(|| team_not_found(team_id))?;
    Ok(ApiError::InsufficientCredits {
        required: 1,
        available: balance.available().max(0),
    })
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
        job_report::inline_calls(&state, job.job_id),
        async {
            Ok(match settled {
                true => Some(job_report::costs(&state, &job).await?),
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
