//! Runs one call: claim it under a lease, try the group's models in priority order, record every
//! attempt and the result (fenced by the lease), then settle the job if it is waiting on this call.

use std::time::{Duration, Instant};

use saasllm_shared::db;
use saasllm_shared::db::calls::{Attempt, CallResult, ClaimedCall};
use saasllm_shared::db::jobs::Settlement;
use saasllm_shared::domain::status::JobStatus;
use sqlx::PgPool;
use uuid::Uuid;

use saasllm_shared::queue::{CallQueue, Dispatched};

use crate::engine::{Engine, OwnedResult, WholeCompletion};
// The chain's attempt records and metrics live with the chain; callers still find them here.
pub use crate::engine::{AttemptRecord, record_metrics};

/// Executes claimed calls.
#[derive(Clone)]
pub struct Executor {
    pub db: PgPool,
    pub worker_id: String,
    pub lease: Duration,
    /// Runs the model chain (upstream, retries, cooldowns shared by the process).
    pub engine: Engine,
}

/// Writes a call's attempts and result under its lease, then settles the job if it waits on
/// this call. Returns false when the lease was lost (nothing written).
pub async fn record_result(
    db: &PgPool,
    call: &ClaimedCall,
    attempts: &[AttemptRecord],
    result: &CallResult<'_>,
) -> sqlx::Result<bool> {
    let rows: Vec<Attempt<'_>> = attempts
        .iter()
        .map(|a| Attempt {
            model_name: &a.model,
            http_status: a.http_status,
            outcome: a.outcome,
            latency_ms: a.latency_ms,
            error: a.error.as_deref(),
        })
        .collect();
    // The result and the job check after its commit share one connection: sqlx pings a
    // connection each time it goes back to the pool, so this saves a round trip per call.
    let mut conn = db.acquire().await?;
    let written = db::calls::finish(&mut *conn, call, &rows, result).await?;
    if written {
        // Test-only crash point, inert unless SAASLLM_FAULT_CRASH lists it (see `fault`).
        crate::fault::crash_point(crate::fault::AFTER_COMMIT);
        let status = db::jobs::status(&mut *conn, call.job_id).await?;
        drop(conn);
        if status == Some(JobStatus::Completing) {
            settle_completing(db, call.job_id).await?;
        }
    }
    Ok(written)
}

impl Executor {
    /// Handles one dispatched call. A message for a call that is not queued (a duplicate, or a
    /// call of a cancelled job) is dropped by the claim. The team's concurrency slot is given
    /// back, and the call's tokens counted towards its minute, as soon as the upstream has
    /// answered: before the result is committed, so a client that sees the result and sends its
    /// next request finds the limits already up to date.
    #[tracing::instrument(skip_all, fields(call_id = %next.call_id, job_id, team_id, request_id))]
    pub async fn handle(&self, queue: &CallQueue, next: &Dispatched) -> anyhow::Result<()> {
        let mut slot = TeamSlot {
            queue,
            next,
            open: next.holds_slot || next.counts_tokens,
        };
        let outcome = self.run(next.call_id, &mut slot).await;
        // Errors and dropped duplicates end here too.
        slot.end(0).await;
        outcome
    }

    async fn run(&self, call_id: Uuid, slot: &mut TeamSlot<'_>) -> anyhow::Result<()> {
        let Some(call) =
            db::calls::claim(&self.db, call_id, &self.worker_id, self.lease.as_secs_f64()).await?
        else {
            tracing::debug!("call is not queued; duplicate message dropped");
            return Ok(());
        };
        let span = tracing::Span::current();
        span.record("job_id", tracing::field::display(call.job_id));
        span.record("team_id", tracing::field::display(&call.team_id));
        if let Some(request_id) = &call.request_id {
            span.record("request_id", request_id.as_str());
        }

        let keeper = keep_lease(self.db.clone(), &call, self.lease);
        let in_flight = metrics::gauge!("worker_calls_in_flight");
        in_flight.increment(1.0);
        let outcome = self.run_chain(&call).await;
        // Test-only crash point, inert unless SAASLLM_FAULT_CRASH lists it (see `fault`).
        crate::fault::crash_point(crate::fault::AFTER_UPSTREAM);
        in_flight.decrement(1.0);
        keeper.abort();
        if let Ok((attempts, result)) = &outcome {
            record_metrics(&call.model_group, attempts, result.status);
        }

        let (attempts, result) = outcome?;
        slot.end(result.total_tokens.unwrap_or(0)).await;
        if !record_result(&self.db, &call, &attempts, &result.as_row()).await? {
            tracing::warn!(
                "lease lost before the result was written; another worker owns the call"
            );
        }
        Ok(())
    }

    async fn run_chain(
        &self,
        call: &ClaimedCall,
    ) -> anyhow::Result<(Vec<AttemptRecord>, OwnedResult)> {
        let started = Instant::now();
        let attempt = WholeCompletion {
            call_id: call.call_id,
        };
        let chain = self
            .engine
            .run(&call.model_group, &call.models.0, &call.request, &attempt)
            .await;
        Ok((
            chain.attempts,
            OwnedResult::from_chain(chain.result, started.elapsed()),
        ))
    }
}

/// A dispatched call's hold on its team's limits, ended once.
struct TeamSlot<'a> {
    queue: &'a CallQueue,
    next: &'a Dispatched,
    open: bool,
}

impl TeamSlot<'_> {
    async fn end(&mut self, tokens: i64) {
        if !std::mem::take(&mut self.open) {
            return;
        }
        let tokens = if self.next.counts_tokens { tokens } else { 0 };
        let member = self.next.call_id.to_string();
        if let Err(e) = self.queue.finish(&self.next.team_id, &member, tokens).await {
            // The slot lapses by itself when its hold expires.
            tracing::warn!(error = %e, "could not give back the team's concurrency slot");
        }
    }
}

/// Extends the lease while a call runs, so a long call is not taken for a dead one. Abort the
/// handle when the call is finished.
pub fn keep_lease(db: PgPool, call: &ClaimedCall, lease: Duration) -> tokio::task::JoinHandle<()> {
    let (call_id, token) = (call.call_id, call.lease_token);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(lease / 3);
        interval.tick().await;
        loop {
            interval.tick().await;
            match db::calls::extend_lease(&db, call_id, token, lease.as_secs_f64()).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "could not extend lease"),
            }
        }
    })
}

/// Settles a job found `completing` (waiting on its calls) after a call's result was committed.
/// The status is read after that commit: whichever of the call's writer and the complete request
/// commits last sees the other's write, so one of them settles.
async fn settle_completing(db: &PgPool, job_id: Uuid) -> sqlx::Result<()> {
    if db::jobs::settle(db, job_id).await? == Settlement::Settled {
        tracing::info!(%job_id, "job settled after its last call");
    }
    Ok(())
}
