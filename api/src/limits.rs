//! Per-team limits on the synchronous paths: a request over the team's concurrency, requests-per-
//! minute or tokens-per-minute limit is refused with 429 and `Retry-After`, while queued work
//! simply waits for the dispatcher. The accounting itself (Redis keys, scripts, slot members) is
//! shared with the dispatcher in `saasllm_shared::queue::team_slots`. Teams without limits cost
//! nothing here: Redis is not asked.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use saasllm_shared::domain::limits::TeamLimits;
use saasllm_shared::queue::CallQueue;
use saasllm_shared::queue::team_slots::request_member;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Longest a synchronous request may hold a concurrency slot if this process dies before giving
/// it back; beyond any upstream timeout.
const SLOT_HOLD: Duration = Duration::from_secs(15 * 60);

/// An admitted request holding one of its team's concurrency slots; dropping it gives the slot
/// back and counts the request's tokens towards the team's minute.
pub struct Admission {
    queue: CallQueue,
    team_id: String,
    member: String,
    tokens: AtomicI64,
}

impl Admission {
    /// Records the tokens the request used.
    pub fn count_tokens(&self, tokens: i64) {
        self.tokens.store(tokens.max(0), Ordering::Relaxed);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let (queue, team_id, member) = (
            self.queue.clone(),
            std::mem::take(&mut self.team_id),
            std::mem::take(&mut self.member),
        );
        let tokens = self.tokens.load(Ordering::Relaxed);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = queue.finish(&team_id, &member, tokens).await {
                    // The slot lapses by itself after its hold.
                    tracing::warn!(%team_id, error = %e, "could not give back a concurrency slot");
                }
            });
        }
    }
}

/// The limits of `team_id`: read with the caller's key when the caller is that team, else from
/// PostgreSQL (the admin acting for a team).
pub async fn of_team(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
) -> Result<TeamLimits, ApiError> {
    match caller.own_limits(team_id) {
        Some(limits) => Ok(limits),
        None => Ok(saasllm_shared::db::teams::limits(&state.db, team_id)
            .await?
            .unwrap_or_default()),
    }
}

/// Admits a request that goes upstream from this process: `Ok(None)` for a team without
/// limits, `Ok(Some(admission))` holding its slot, or 429.
pub async fn admit(
    state: &AppState,
    team_id: &str,
    limits: &TeamLimits,
    reserve: bool,
) -> Result<Option<Admission>, ApiError> {
    if !limits.any() {
        return Ok(None);
    }
    let member = request_member();
    let waited = state
        .queue
        .admit(team_id, limits, &member, reserve, SLOT_HOLD)
        .await
        .map_err(unavailable)?;
    if let Some(wait) = waited {
        return Err(too_many(team_id, limits, wait));
    }
    Ok(reserve.then(|| Admission {
        queue: state.queue.clone(),
        team_id: team_id.to_owned(),
        member,
        tokens: AtomicI64::new(0),
    }))
}

/// Checks, without taking anything, that the team is under its limits now; for calls that the
/// dispatcher will then run (and count) under the same limits.
pub async fn check(state: &AppState, team_id: &str, limits: &TeamLimits) -> Result<(), ApiError> {
    admit(state, team_id, limits, false).await.map(|_| ())
}

fn too_many(team_id: &str, limits: &TeamLimits, wait: Duration) -> ApiError {
    let describe = |name: &str, value: Option<i32>| value.map(|v| format!("{name} {v}"));
    let set: Vec<String> = [
        describe("max_concurrent_calls", limits.max_concurrent_calls),
        describe("requests_per_minute", limits.requests_per_minute),
        describe("tokens_per_minute", limits.tokens_per_minute),
    ]
    .into_iter()
    .flatten()
    .collect();
    let retry_after_secs = (wait.as_millis().div_ceil(1000) as u64).max(1);
    ApiError::TooManyRequests {
        detail: format!(
            "Team '{team_id}' is at its limits ({}); retry after {retry_after_secs} s",
            set.join(", "),
        ),
        retry_after_secs,
    }
}

fn unavailable(error: redis::RedisError) -> ApiError {
    tracing::error!(error = %error, "cannot check the team's limits in Redis");
    ApiError::Unavailable("Queue unavailable, the request was not accepted; retry later".into())
}
