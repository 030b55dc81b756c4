//! Group commit of finished calls. A worker's calls hand their results to writers that write
//! whatever has gathered in one statement (one commit): while one commit waits for the disk,
//! the results finishing meanwhile gather for the next. A lone result is written at once, so an
//! idle worker adds no delay; a busy one pays one commit per group instead of one per call.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use saasllm_shared::db;
use saasllm_shared::db::calls::{Attempt, ClaimedCall};
use saasllm_shared::db::claims::Finished;
use saasllm_shared::db::jobs::Settlement;
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use crate::engine::{AttemptRecord, OwnedResult};

/// Writers committing at the same time: a second one gathers the next group while the first
/// waits for its commit.
const WRITERS: usize = 2;

/// Pauses before each new try of a group whose write failed. The calls keep their leases
/// meanwhile (they stay in flight), so a PostgreSQL hiccup (a restart, a dropped connection, a
/// statement chosen as a deadlock victim) costs a delay, not a second run of every call in the
/// group once their leases lapse.
const RETRY_PAUSES: [Duration; 4] = [
    Duration::from_millis(50),
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

/// A result waiting to be written.
struct Pending {
    call: ClaimedCall,
    attempts: Vec<AttemptRecord>,
    result: OwnedResult,
    written: oneshot::Sender<Result<bool, String>>,
}

/// Hands results to the writers; cheap to clone.
#[derive(Clone)]
pub struct ResultWriter {
    pending: mpsc::UnboundedSender<Pending>,
}

impl ResultWriter {
    /// Starts the writers. They stop once every `ResultWriter` is dropped and the last group is
    /// written.
    pub fn start(db: PgPool, max_group: usize) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let (pending, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        let writers = (0..WRITERS)
            .map(|_| tokio::spawn(write_groups(db.clone(), receiver.clone(), max_group.max(1))))
            .collect();
        (Self { pending }, writers)
    }

    /// Writes a call's attempts and result under its lease, with others finishing at the same
    /// time, and settles its job if the job waits on it. `Ok(false)` when the lease was lost
    /// (nothing written: another worker owns the call).
    pub async fn write(
        &self,
        call: ClaimedCall,
        attempts: Vec<AttemptRecord>,
        result: OwnedResult,
    ) -> anyhow::Result<bool> {
        let (written, answer) = oneshot::channel();
        self.pending
            .send(Pending {
                call,
                attempts,
                result,
                written,
            })
            .map_err(|_| anyhow::anyhow!("result writers have stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("result writer went away"))?
            .map_err(|e| anyhow::anyhow!("could not write results: {e}"))
    }
}

async fn write_groups(
    db: PgPool,
    receiver: Arc<Mutex<mpsc::UnboundedReceiver<Pending>>>,
    max_group: usize,
) {
    loop {
        let mut group = Vec::with_capacity(max_group);
        {
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut group, max_group).await == 0 {
                return;
            }
        }
        let mut outcome = write_group(&db, &group).await;
        for pause in RETRY_PAUSES {
            let Err(e) = &outcome else { break };
            tracing::warn!(error = %e, calls = group.len(), ?pause, "could not write results; trying again");
            tokio::time::sleep(pause).await;
            outcome = write_group(&db, &group).await;
        }
        for pending in group {
            let answer = match &outcome {
                Ok(written) => Ok(written.contains(&pending.call.call_id)),
                Err(e) => Err(e.to_string()),
            };
            let _ = pending.written.send(answer);
        }
    }
}

/// Writes one group in one statement, then settles the jobs found waiting on their calls.
async fn write_group(db: &PgPool, group: &[Pending]) -> sqlx::Result<HashSet<Uuid>> {
    let attempts: Vec<Vec<Attempt<'_>>> = group
        .iter()
        .map(|p| p.attempts.iter().map(AttemptRecord::as_row).collect())
        .collect();
    let results: Vec<_> = group.iter().map(|p| p.result.as_row()).collect();
    let finished: Vec<Finished<'_>> = group
        .iter()
        .zip(&attempts)
        .zip(&results)
        .map(|((p, attempts), result)| Finished {
            call: &p.call,
            attempts,
            result,
        })
        .collect();
    // The group and the job check after its commit share one connection: sqlx pings a
    // connection each time it goes back to the pool.
    let mut conn = db.acquire().await?;
    let written = db::claims::finish_many(&mut *conn, &finished).await?;
    // Their ratio is the mean group committed: how well commits are shared.
    metrics::counter!("worker_result_commits_total").increment(1);
    metrics::counter!("worker_results_written_total").increment(written.len() as u64);
    // Test-only crash point, inert unless SAASLLM_FAULT_CRASH lists it (see `fault`).
    crate::fault::crash_point(crate::fault::AFTER_COMMIT);
    let mut jobs: Vec<Uuid> = written.iter().map(|w| w.job_id).collect();
    jobs.sort_unstable();
    jobs.dedup();
    // Read after the commit: whichever of this write and the job's complete request commits
    // last sees the other's write, so one of them settles the job.
    let completing = db::claims::completing_jobs(&mut *conn, &jobs).await;
    drop(conn);
    // The results are committed whatever happens next; a job left `completing` here is settled
    // by the reconciler.
    match completing {
        Ok(completing) => {
            for job_id in completing {
                match db::jobs::settle(db, job_id).await {
                    Ok(Settlement::Settled) => {
                        tracing::info!(%job_id, "job settled after its last call")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(%job_id, error = %e, "could not settle the job; the reconciler will")
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not look for jobs to settle; the reconciler will")
        }
    }
    Ok(written.into_iter().map(|w| w.call_id).collect())
}
