//! What a request may do with a job and a model group: see the job (another team's is a plain
//! 404), change it through the job API (a batch's job only through `/v1/batches`), add calls to it
//! (only while open), and use a group (granted to the job's team). The call, bulk and job routes
//! share these answers.

use saasllm_shared::db;
use saasllm_shared::db::batch_runs::BATCH_JOB_TYPE;
use saasllm_shared::db::jobs::JobRow;
use saasllm_shared::db::model_groups::ModelGroupRow;
use saasllm_shared::domain::status::JobStatus;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Parses a job or call id from the path.
pub fn parse_id(kind: &str, text: &str) -> Result<Uuid, ApiError> {
    text.parse()
        .map_err(|_| ApiError::BadRequest(format!("Invalid {kind} id '{text}': expected a UUID")))
}

/// The job, if the caller may see it; another team's job is a plain 404.
pub async fn visible_job(
    state: &AppState,
    caller: &Caller,
    job_id: &str,
) -> Result<JobRow, ApiError> {
    let id = parse_id("job", job_id)?;
    db::jobs::find(&state.db, id, caller.team_id())
        .await?
        .ok_or_else(|| job_not_found(job_id))
}

/// The 404 for a job that does not exist (or that the caller may not see).
pub fn job_not_found(job_id: impl std::fmt::Display) -> ApiError {
    ApiError::NotFound(format!("Job '{job_id}' not found"))
}

/// The job, if the caller may see it and change it through the job API: a batch's job is
/// changed only through `/v1/batches` (409 here), which keeps the batch and its job in step.
pub async fn changeable_job(
    state: &AppState,
    caller: &Caller,
    job_id: &str,
) -> Result<JobRow, ApiError> {
    let job = visible_job(state, caller, job_id).await?;
    if job.job_type == BATCH_JOB_TYPE {
        let batch = job
            .metadata
            .get("batch_id")
            .and_then(|b| b.as_str())
            .unwrap_or("?");
        return Err(ApiError::Conflict(format!(
            "Job '{}' runs batch '{batch}'; it changes only through /v1/batches (cancel it with POST /v1/batches/{batch}/cancel)",
            job.job_id
        )));
    }
    Ok(job)
}

/// 409 unless the job still accepts calls (it is neither being completed nor settled).
pub fn ensure_accepts_calls(job: &JobRow) -> Result<(), ApiError> {
    if job.status.accepts_calls() {
        return Ok(());
    }
    Err(no_more_calls(job.job_id, job.status))
}

/// The 409 for a job that no longer accepts calls, being `status`.
pub fn no_more_calls(job_id: Uuid, status: JobStatus) -> ApiError {
    ApiError::Conflict(format!(
        "Job '{job_id}' is {}; no more calls can be made in it",
        status.as_str()
    ))
}

/// The model group named `name`, if granted to the team: 404 when no such group exists, 403 when
/// the team may not use it. The team's grants come from the directory's cache; only a group it
/// was not granted is looked up, to tell the two refusals apart.
pub async fn granted_group(
    state: &AppState,
    team_id: &str,
    name: &str,
) -> Result<ModelGroupRow, ApiError> {
    let grants = state.directory.grants(team_id).await?;
    if let Some(group) = grants.group(name) {
        return Ok(group.clone());
    }
    let (group, granted) = db::model_groups::find_with_access(&state.db, name, team_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Model group '{name}' not found")))?;
    if !granted {
        return Err(ApiError::Forbidden(format!(
            "Team '{team_id}' does not have access to model group '{}'",
            group.group_name
        )));
    }
    // Granted since the cache was filled: the grant in the database is what counts.
    Ok(group)
}
