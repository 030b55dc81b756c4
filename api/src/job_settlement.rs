//! Settling a job on request: `complete` moves it to `completing` and settles it once its calls
//! have finished (waiting, bounded, for the worker that ends the last one); `cancel` releases
//! its hold at once. Each refusal is the 409 that says what the job became instead.

use std::time::Duration;

use saasllm_shared::db;
use saasllm_shared::db::jobs::{Cancellation, JobRow, Settlement};
use saasllm_shared::domain::status::JobStatus;
use uuid::Uuid;

use crate::error::ApiError;
use crate::job_access::job_not_found;
use crate::state::AppState;

/// How often a waiting request re-reads the database even without a notification.
const RECHECK: Duration = Duration::from_secs(1);

/// Where a completion request left the job.
pub enum Completion {
    /// Settled as requested.
    Settled,
    /// Still `completing`: calls are running and the job settles when the last one ends.
    Running { calls_unfinished: i64 },
}

/// The final status a completion asks for: `completed` or `failed`.
pub fn requested_status(text: &str) -> Result<JobStatus, ApiError> {
    match text {
        "completed" => Ok(JobStatus::Completed),
        "failed" => Ok(JobStatus::Failed),
        other => Err(ApiError::BadRequest(format!(
            "status must be 'completed' or 'failed', not '{other}'"
        ))),
    }
}

/// Completes `job` as `requested`: repeating the same completion is `Settled` again, a
/// different one is 409.
pub async fn complete(
    state: &AppState,
    job: JobRow,
    requested: JobStatus,
    metadata: &serde_json::Value,
    error_message: Option<&str>,
) -> Result<Completion, ApiError> {
    let job_id = job.job_id;
    let Some(current) = mark_completing(state, job, requested, metadata, error_message).await?
    else {
        return Ok(Completion::Settled);
    };
    if current.status != JobStatus::Completing {
        ensure_settled_as(state, job_id, requested).await?;
        return Ok(Completion::Settled);
    }
    wait_for_settlement(state, &current.team_id, job_id, requested).await
}

/// Moves the job to `completing` as `requested` and returns it as it then is; `None` when it
/// had already settled as requested.
async fn mark_completing(
    state: &AppState,
    job: JobRow,
    requested: JobStatus,
    metadata: &serde_json::Value,
    error_message: Option<&str>,
) -> Result<Option<JobRow>, ApiError> {
    let job_id = job.job_id;
    let mut current = job;
    // At most two rounds: a concurrent complete may move the job between our read and our write.
    for _ in 0..2 {
        match current.status {
            JobStatus::Completed | JobStatus::Failed if current.status == requested => {
                return Ok(None);
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
                    metadata,
                    error_message,
                )
                .await?;
                current = match marked {
                    Some(job) => job,
                    None => find(state, job_id).await?,
                };
            }
        }
    }
    Ok(Some(current))
}

/// The job, whichever team it belongs to.
async fn find(state: &AppState, job_id: Uuid) -> Result<JobRow, ApiError> {
    db::jobs::find(&state.db, job_id, None)
        .await?
        .ok_or_else(|| job_not_found(job_id))
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

/// Once the job left `completing`: Ok when it became what was requested, else 409. A `cancel`
/// can win the race against the settlement (it takes a `completing` job too), and the caller
/// must not read a 200 for a job that was cancelled.
async fn ensure_settled_as(
    state: &AppState,
    job_id: Uuid,
    requested: JobStatus,
) -> Result<(), ApiError> {
    let job = find(state, job_id).await?;
    if job.status == requested {
        Ok(())
    } else {
        Err(settled_otherwise(job_id, job.status, requested))
    }
}

/// Settles now if every call has finished; otherwise waits (bounded) for the worker that ends
/// the last call to settle, and reports it still `Running` if it has not.
async fn wait_for_settlement(
    state: &AppState,
    team_id: &str,
    job_id: Uuid,
    requested: JobStatus,
) -> Result<Completion, ApiError> {
    let deadline = tokio::time::Instant::now() + state.settings.complete_wait;
    loop {
        let waiter = state.notifier.job(job_id);
        match state.job_credits.settle(team_id, job_id).await? {
            Settlement::Settled | Settlement::NotCompleting => {
                ensure_settled_as(state, job_id, requested).await?;
                return Ok(Completion::Settled);
            }
            Settlement::Waiting => {}
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            let counts = db::jobs::call_counts(&state.db, job_id).await?;
            return Ok(Completion::Running {
                calls_unfinished: counts.unfinished(),
            });
        }
        waiter.wait((deadline - now).min(RECHECK)).await;
    }
}

/// Cancels `job`: its queued calls never run and its hold is released. Repeating it is Ok; a job
/// already settled otherwise is 409. `job_ref` is the job id as the client wrote it, for the 404.
pub async fn cancel(state: &AppState, job: &JobRow, job_ref: &str) -> Result<(), ApiError> {
    match state.job_credits.cancel(&job.team_id, job.job_id).await? {
        Cancellation::Cancelled { .. } | Cancellation::AlreadyCancelled => Ok(()),
        Cancellation::Settled(status) => Err(ApiError::Conflict(format!(
            "Job '{}' is already {}; it cannot be cancelled",
            job.job_id,
            status.as_str()
        ))),
        Cancellation::NotFound => Err(job_not_found(job_ref)),
    }
}
