//! Bulk submission of calls to a job: the larger body limit it is read under, the checks of its
//! calls as a whole, and the all-or-none insert.

use std::collections::{HashMap, HashSet};

use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use saasllm_shared::db;
use saasllm_shared::db::calls::BulkCall;
use saasllm_shared::db::jobs::JobRow;
use uuid::Uuid;

use crate::call_request::{LlmCallRequest, custom_id_taken};
use crate::error::ApiError;
use crate::extract::BodyLimit;
use crate::job_access::{ensure_accepts_calls, granted_group, job_not_found};
use crate::state::AppState;

/// Most calls accepted in one request.
pub const MAX_CALLS_PER_REQUEST: usize = 50_000;
/// Body limit of a bulk submission (the other routes keep the configured, smaller limit).
pub const BATCH_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Raises the body limit for bulk submissions only. Runs before the `Idempotency-Key` layer,
/// which reads the body under the limit it finds here.
pub async fn raise_body_limit(mut request: Request, next: Next) -> Response {
    if request.method() == Method::POST && request.uri().path().ends_with("/llm-calls") {
        request.extensions_mut().insert(BodyLimit(BATCH_BODY_LIMIT));
    }
    next.run(request).await
}

/// The body of a bulk submission, read under the limit set by `raise_body_limit`.
pub async fn read_body(request: Request) -> Result<axum::body::Bytes, ApiError> {
    let limit = request
        .extensions()
        .get::<BodyLimit>()
        .map_or(BATCH_BODY_LIMIT, |l| l.0);
    axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(limit))
}

/// Checks every call as the single-call route would, and the submission as a whole: its size, no
/// streaming, no `custom_id` twice. A failure names the call by its index.
pub(crate) fn check(calls: &[LlmCallRequest]) -> Result<(), ApiError> {
    if calls.is_empty() || calls.len() > MAX_CALLS_PER_REQUEST {
        return Err(ApiError::BadRequest(format!(
            "calls must hold 1 to {MAX_CALLS_PER_REQUEST} calls, not {}",
            calls.len()
        )));
    }
    let mut seen = HashSet::new();
    for (index, call) in calls.iter().enumerate() {
        let at = |e: ApiError| match e {
            ApiError::BadRequest(detail) => {
                ApiError::BadRequest(format!("calls[{index}]: {detail}"))
            }
            other => other,
        };
        call.check().map_err(at)?;
        if call.streaming() {
            return Err(at(ApiError::BadRequest(
                "stream is not available in a bulk submission".into(),
            )));
        }
        if let Some(custom_id) = &call.custom_id
            && !seen.insert(custom_id.as_str())
        {
            return Err(at(ApiError::BadRequest(format!(
                "custom_id '{custom_id}' appears more than once"
            ))));
        }
    }
    Ok(())
}

/// The rows to insert, each with its model group, every group checked to be granted to the
/// job's team (each group looked up once).
pub(crate) async fn rows<'a>(
    state: &AppState,
    team_id: &str,
    calls: &'a [LlmCallRequest],
) -> Result<Vec<BulkCall<'a>>, ApiError> {
    let mut groups: HashMap<&str, Uuid> = HashMap::new();
    for call in calls {
        if groups.contains_key(call.model_group.as_str()) {
            continue;
        }
        let group = granted_group(state, team_id, &call.model_group).await?;
        groups.insert(&call.model_group, group.model_group_id);
    }
    Ok(calls
        .iter()
        .map(|call| BulkCall {
            model_group_id: groups[call.model_group.as_str()],
            model_group: &call.model_group,
            purpose: call.purpose.as_deref(),
            custom_id: call.custom_id.as_deref(),
            request: call.upstream_body(),
        })
        .collect())
}

/// Inserts the calls in one transaction (all or none) and marks the job in progress; returns
/// their ids in the order given. `job_ref` is the job id as the client wrote it, for the 404.
pub async fn insert_all(
    state: &AppState,
    job: &JobRow,
    job_ref: &str,
    request_id: Option<&str>,
    rows: &[BulkCall<'_>],
) -> Result<Vec<Uuid>, ApiError> {
    let mut tx = state.db.begin().await?;
    // Re-checked under the job's row lock: a concurrent complete or cancel cannot slip in.
    let locked = db::jobs::lock(&mut tx, job.job_id)
        .await?
        .ok_or_else(|| job_not_found(job_ref))?;
    ensure_accepts_calls(&locked)?;
    let ids = db::calls::insert_bulk(&mut tx, job.job_id, &job.team_id, request_id, rows)
        .await
        .map_err(|e| {
            ApiError::from_db(e, |c| {
                custom_id_taken(c).then(|| {
                    ApiError::Conflict(
                        "A custom_id in this request is already used by another call of this job"
                            .into(),
                    )
                })
            })
        })?;
    db::jobs::mark_in_progress(&mut *tx, job.job_id).await?;
    tx.commit().await?;
    Ok(ids)
}
