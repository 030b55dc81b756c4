//! Accepting LLM calls into a job and handing them to the workers: admission against the team's
//! limits, the insert under the job's row lock, the queue push (withdrawing what the queue
//! refused), and the synchronous wait for a result.

use std::time::Duration;

use axum::http::HeaderMap;
use saasllm_shared::db;
use saasllm_shared::db::calls::{CallRow, Insertion, NewCall};
use saasllm_shared::db::jobs::JobRow;
use saasllm_shared::db::model_groups::ModelGroupRow;
use saasllm_shared::domain::limits::TeamLimits;
use uuid::Uuid;

use crate::auth::Caller;
use crate::call_request::{LlmCallRequest, custom_id_taken, prefers_async};
use crate::error::ApiError;
use crate::job_access::{job_not_found, no_more_calls};
use crate::limits::Admission;
use crate::notify::Waiter;
use crate::state::AppState;

/// How often a waiting request re-reads the call even without a notification.
const RECHECK: Duration = Duration::from_secs(1);

/// How the client gets a call's result.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Server-sent events from this process (`"stream": true`).
    Stream,
    /// 202 at once; the call is polled (`"async": true` or `Prefer: respond-async`).
    Async,
    /// The request waits for the result.
    Sync,
}

impl Delivery {
    /// What the client asked for; a stream wins over a `Prefer: respond-async` header (the body
    /// cannot ask for both).
    pub(crate) fn asked_by(request: &LlmCallRequest, headers: &HeaderMap) -> Self {
        if request.streaming() {
            Delivery::Stream
        } else if request.respond_async || prefers_async(headers) {
            Delivery::Async
        } else {
            Delivery::Sync
        }
    }
}

/// The team's limits, and the slot a streamed call holds while it runs. A synchronous caller
/// over the team's limits is told to come back (429) rather than left waiting; an asynchronous
/// call is queued and waits for the dispatcher. A streamed call runs in this process, so it
/// takes its slot here.
pub async fn admit(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
    delivery: Delivery,
) -> Result<(TeamLimits, Option<Admission>), ApiError> {
    let limits = crate::limits::of_team(state, caller, team_id).await?;
    let admission = match delivery {
        Delivery::Stream => crate::limits::admit(state, team_id, &limits, true).await?,
        Delivery::Sync => {
            crate::limits::check(state, team_id, &limits).await?;
            None
        }
        Delivery::Async => None,
    };
    Ok((limits, admission))
}

/// Writes the call as `queued`. The job is re-checked under its row lock in the insert itself: a
/// concurrent complete or cancel cannot slip in between. `job_ref` is the job id as the client
/// wrote it, for the 404.
pub(crate) async fn insert(
    state: &AppState,
    job: &JobRow,
    job_ref: &str,
    group: &ModelGroupRow,
    request: &LlmCallRequest,
    request_id: Option<&str>,
    delivery: Delivery,
) -> Result<Uuid, ApiError> {
    let custom_id = request.custom_id.as_deref();
    let inserted = db::calls::insert_into_open_job(
        &state.db,
        &NewCall {
            job_id: job.job_id,
            team_id: &job.team_id,
            model_group_id: group.model_group_id,
            model_group: &group.group_name,
            purpose: request.purpose.as_deref(),
            request: &request.upstream_body(),
            request_id,
            custom_id,
            notify_on_finish: delivery == Delivery::Sync,
        },
    )
    .await
    .map_err(|e| {
        ApiError::from_db(e, |c| {
            custom_id_taken(c).then(|| {
                ApiError::Conflict(format!(
                    "custom_id '{}' is already used by another call of this job",
                    custom_id.unwrap_or_default()
                ))
            })
        })
    })?;
    match inserted {
        Insertion::Inserted(call_id) => Ok(call_id),
        Insertion::JobFinished(status) => Err(no_more_calls(job.job_id, status)),
        Insertion::JobNotFound => Err(job_not_found(job_ref)),
    }
}

/// Pushes one accepted call to the queue; when the queue refuses and no worker has claimed the
/// call yet, it is withdrawn and the request answers 503.
pub async fn enqueue_call(
    state: &AppState,
    team_id: &str,
    limits: &TeamLimits,
    call_id: Uuid,
) -> Result<(), ApiError> {
    if let Err(e) = state.queue.push(team_id, limits, &[call_id]).await {
        tracing::error!(error = %e, "cannot enqueue call; withdrawing it");
        if db::calls::withdraw_unclaimed(&state.db, call_id).await? {
            return Err(ApiError::Unavailable(
                "Queue unavailable, the call was not accepted; retry later".into(),
            ));
        }
        // Already claimed through another path: it was accepted after all.
    }
    Ok(())
}

/// Pushes the calls of a bulk submission to the queue; when the queue refuses, the calls no
/// worker has claimed are withdrawn, and the request answers 503 if that was all of them.
pub async fn enqueue_calls(
    state: &AppState,
    team_id: &str,
    limits: &TeamLimits,
    ids: &[Uuid],
) -> Result<(), ApiError> {
    if let Err(e) = state.queue.push(team_id, limits, ids).await {
        tracing::error!(error = %e, "cannot enqueue calls; withdrawing them");
        let withdrawn = db::calls::withdraw_unclaimed_many(&state.db, ids).await?;
        if withdrawn as usize == ids.len() {
            return Err(ApiError::Unavailable(
                "Queue unavailable, the calls were not accepted; retry later".into(),
            ));
        }
        // Some were claimed already: the rest stay queued and the reconciler pushes them.
    }
    Ok(())
}

/// The call once it has finished, waiting (bounded by the synchronous timeout) for the worker's
/// notification; 504 when it has not finished in time (it goes on and can be polled). `waiter`
/// was registered before the push, so the notification cannot be missed.
pub async fn wait_for_result(
    state: &AppState,
    job_id: Uuid,
    call_id: Uuid,
    waiter: Waiter<'_>,
) -> Result<CallRow, ApiError> {
    let deadline = tokio::time::Instant::now() + state.settings.sync_call_timeout;
    let mut waiter = waiter;
    // The first read can wait for the worker's notification (or the periodic re-read) instead
    // of finding the call still queued.
    let mut first_round = true;
    loop {
        if !std::mem::take(&mut first_round)
            && let Some(row) = db::calls::find(&state.db, job_id, call_id).await?
            && row.status.is_terminal()
        {
            return Ok(row);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(ApiError::GatewayTimeout(format!(
                "LLM call {call_id} did not finish within {} s; it goes on: poll GET /api/jobs/{job_id}/calls/{call_id}",
                state.settings.sync_call_timeout.as_secs(),
            )));
        }
        let wait = (deadline - now).min(RECHECK);
        waiter.wait(wait).await;
        waiter = state.notifier.call(call_id);
    }
}
