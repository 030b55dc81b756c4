//! Runs one claimed call: try the group's models in priority order through the engine, give back
//! the team's slot, and hand the attempts and result to the group writer (fenced by the lease).

use std::sync::Arc;
use std::time::{Duration, Instant};

use saasllm_shared::db;
use saasllm_shared::db::calls::{Attempt, CallResult, ClaimedCall};
use saasllm_shared::db::jobs::Settlement;
use saasllm_shared::domain::status::{CallEndpoint, JobStatus};
use sqlx::PgPool;
use uuid::Uuid;

use saasllm_shared::queue::{CallQueue, Dispatched};

use crate::backend::Claimed;
use crate::engine::{Engine, OwnedResult, WholeCompletion, WholeEmbedding};
use crate::leases::{self, InFlight};
use crate::results::ResultWriter;
// The chain's attempt records and metrics live with the chain; callers still find them here.
pub use crate::engine::{AttemptRecord, record_metrics};

/// Executes claimed calls.
#[derive(Clone)]
pub struct Executor {
    /// Runs the model chain (upstream, retries, cooldowns shared by the process).
    pub engine: Engine,
    pub queue: CallQueue,
    pub results: ResultWriter,
    pub in_flight: Arc<InFlight>,
}

/// Writes a call's attempts and result under its lease, then settles the job if it waits on
/// this call. Returns false when the lease was lost (nothing written).
pub async fn record_result(
    db: &PgPool,
    call: &ClaimedCall,
    attempts: &[AttemptRecord],
    result: &CallResult<'_>,
) -> sqlx::Result<bool> {
    let rows: Vec<Attempt<'_>> = attempts.iter().map(AttemptRecord::as_row).collect();
    // The result and the job check after its commit share one connection: sqlx pings a
    // connection each time it goes back to the pool, so this saves a round trip per call.
    let mut conn = db.acquire().await?;
    let written = db::calls::finish(&mut *conn, call, &rows, result).await?;
    if written {
        // Test-only crash point: nothing unless built with `crash-points` (see `fault`).
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
    /// Runs one claimed call to its result. The team's concurrency slot is given back, and the
    /// call's tokens counted towards its minute, as soon as the upstream has answered: before
    /// the result is committed, so a client that sees the result and sends its next request
    /// finds the limits already up to date. The result is written with others finishing at the
    /// same time (one commit per group). On an error the call is left to its lease: the process
    /// stops extending it and the reconciler queues the call again once it expires.
    #[tracing::instrument(skip_all, fields(call_id = %claimed.call.call_id, job_id = %claimed.call.job_id, team_id = %claimed.call.team_id, request_id))]
    pub async fn handle(&self, claimed: Claimed) -> anyhow::Result<()> {
        // The slot is held until the result is written: only then may the fetcher take another.
        let Claimed {
            call,
            dispatched,
            slot,
        } = claimed;
        if let Some(request_id) = &call.request_id {
            tracing::Span::current().record("request_id", request_id.as_str());
        }
        let in_flight = metrics::gauge!("worker_calls_in_flight");
        in_flight.increment(1.0);
        let outcome = self.run_chain(&call).await;
        in_flight.decrement(1.0);
        // Test-only crash point: nothing unless built with `crash-points` (see `fault`).
        crate::fault::crash_point(crate::fault::AFTER_UPSTREAM);
        let tokens = match &outcome {
            Ok((attempts, result)) => {
                record_metrics(&call.model_group, attempts, result.status());
                result.total_tokens().unwrap_or(0)
            }
            Err(_) => 0,
        };
        self.end_team_slot(&dispatched, tokens).await;
        let call_id = call.call_id;
        let written = match outcome {
            Ok((attempts, result)) => self.results.write(call, attempts, result).await,
            Err(e) => Err(e),
        };
        self.in_flight.remove(call_id);
        drop(slot);
        match written {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::warn!(
                    "lease lost before the result was written; another worker owns the call"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Frees the call's team concurrency slot and counts its tokens towards the team's minute.
    async fn end_team_slot(&self, next: &Dispatched, tokens: i64) {
        if !next.holds_limits() {
            return;
        }
        self.in_flight.slot_ended(next.call_id);
        leases::give_back_team_slot(&self.queue, next, tokens).await;
    }

    async fn run_chain(
        &self,
        call: &ClaimedCall,
    ) -> anyhow::Result<(Vec<AttemptRecord>, OwnedResult)> {
        let started = Instant::now();
        let (group, models, request) = (&call.model_group, &call.models.0, &call.request);
        // Both attempts hand back a `Completion`, so the result is priced and stored alike.
        let chain = match call.endpoint {
            CallEndpoint::Chat => {
                let attempt = WholeCompletion {
                    call_id: call.call_id,
                };
                self.engine.run(group, models, request, &attempt).await
            }
            CallEndpoint::Embeddings => {
                let attempt = WholeEmbedding {
                    call_id: call.call_id,
                };
                self.engine.run(group, models, request, &attempt).await
            }
        };
        Ok((
            chain.attempts,
            OwnedResult::from_chain(chain.result, started.elapsed()),
        ))
    }
}

/// Extends the lease while a call runs, so a long call is not taken for a dead one. Abort the
/// handle when the call is finished.
pub fn keep_lease(db: PgPool, call: &ClaimedCall, lease: Duration) -> tokio::task::JoinHandle<()> {
    let (call_id, token) = (call.call_id, call.lease_token);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(leases::extension_interval(lease));
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
