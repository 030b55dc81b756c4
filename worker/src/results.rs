//! Group commit of finished calls. A finished call hands its result to the writer, which writes
//! whatever has gathered in one statement (one commit): while one commit waits for the disk, the
//! results finishing meanwhile gather for the next. The first call to find a writer's place free
//! writes the group itself, its own result included, so an idle worker adds no hop between tasks
//! and no delay; a busy one pays one commit per group instead of one per call.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use saasllm_shared::db;
use saasllm_shared::db::calls::{Attempt, ClaimedCall};
use saasllm_shared::db::claims::Finished;
use saasllm_shared::db::jobs::Settlement;
use saasllm_shared::db::settlement::{SettleAnswer, SettleRequest};
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use uuid::Uuid;

use crate::engine::{AttemptRecord, OwnedResult};

/// Groups committing at the same time: a second one gathers while the first waits for its
/// commit.
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

/// Writes results in groups; cheap to clone.
#[derive(Clone)]
pub struct ResultWriter {
    inner: Arc<Inner>,
}

struct Inner {
    /// The worker's connections with cached plans, for the group statement.
    batch_db: PgPool,
    /// The process's pool, for settling jobs.
    db: PgPool,
    pending: Mutex<VecDeque<Pending>>,
    /// A permit per group being written.
    writers: Arc<Semaphore>,
    max_group: usize,
}

impl ResultWriter {
    pub fn new(batch_db: PgPool, db: PgPool, max_group: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                batch_db,
                db,
                pending: Mutex::new(VecDeque::new()),
                writers: Arc::new(Semaphore::new(WRITERS)),
                max_group: max_group.max(1),
            }),
        }
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
        let call_id = call.call_id;
        let (written, answer) = oneshot::channel();
        self.inner.lock().push_back(Pending {
            call,
            attempts,
            result,
            written,
        });
        // A free writer's place: write groups, ours among them, then leave what gathered
        // meanwhile to a writer of its own. Otherwise a group being written will be followed by
        // one that takes ours (each writer looks for pending results after it ends).
        if let Ok(place) = self.inner.writers.clone().try_acquire_owned() {
            // Only up to our own group: the results behind ours are not this call's to wait for.
            while let Some(group) = self.inner.take_group(Some(call_id)) {
                self.inner.write_and_answer(group).await;
            }
            drop(place);
            Inner::hand_on(&self.inner);
        }
        answer
            .await
            .map_err(|_| anyhow::anyhow!("result writer went away"))?
            .map_err(|e| anyhow::anyhow!("could not write results: {e}"))
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Pending>> {
        // Pushes and drains only: a panic elsewhere leaves the queue consistent.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next group; with `ours`, only while that call is still pending (not yet taken by
    /// any writer).
    fn take_group(&self, ours: Option<Uuid>) -> Option<Vec<Pending>> {
        let mut pending = self.lock();
        if ours.is_some_and(|id| !pending.iter().any(|p| p.call.call_id == id)) {
            return None;
        }
        let n = pending.len().min(self.max_group);
        (n > 0).then(|| pending.drain(..n).collect())
    }

    /// Results still pending after a writer left get a writer task, if a place is free; if not,
    /// the writer holding it hands on in turn when it ends.
    fn hand_on(inner: &Arc<Self>) {
        if inner.lock().is_empty() {
            return;
        }
        let Ok(place) = inner.writers.clone().try_acquire_owned() else {
            return;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            inner.write_all(place).await;
        });
    }

    async fn write_all(self: Arc<Self>, place: OwnedSemaphorePermit) {
        while let Some(group) = self.take_group(None) {
            self.write_and_answer(group).await;
        }
        drop(place);
        Self::hand_on(&self);
    }

    async fn write_and_answer(&self, group: Vec<Pending>) {
        let mut outcome = write_group(&self.batch_db, &self.db, &group).await;
        for pause in RETRY_PAUSES {
            let Err(e) = &outcome else { break };
            tracing::warn!(error = %e, calls = group.len(), ?pause, "could not write results; trying again");
            tokio::time::sleep(pause).await;
            outcome = write_group(&self.batch_db, &self.db, &group).await;
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
async fn write_group(
    batch_db: &PgPool,
    db: &PgPool,
    group: &[Pending],
) -> sqlx::Result<HashSet<Uuid>> {
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
    let mut conn = batch_db.acquire().await?;
    let written = db::claims::finish_many(&mut *conn, &finished).await?;
    // Their ratio is the mean group committed: how well commits are shared.
    metrics::counter!("worker_result_commits_total").increment(1);
    metrics::counter!("worker_results_written_total").increment(written.len() as u64);
    // Test-only crash point: nothing unless built with `crash-points` (see `fault`).
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
        Ok(completing) => settle_jobs(db, &completing).await,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for jobs to settle; the reconciler will")
        }
    }
    Ok(written.into_iter().map(|w| w.call_id).collect())
}

/// Settles the jobs whose last calls the group wrote, in one transaction: their rows locked in
/// id order, then each team's balance row updated once. A job this leaves `completing` (the
/// transaction failed) is settled by the reconciler.
async fn settle_jobs(db: &PgPool, completing: &[Uuid]) {
    if completing.is_empty() {
        return;
    }
    let requests: Vec<SettleRequest> = completing
        .iter()
        .map(|id| SettleRequest::Complete(*id))
        .collect();
    let requests: Vec<&SettleRequest> = requests.iter().collect();
    match db::settlement::settle_group(db, &requests).await {
        Ok(answers) => {
            for (job_id, answer) in completing.iter().zip(answers) {
                if answer == SettleAnswer::Complete(Settlement::Settled) {
                    tracing::info!(%job_id, "job settled after its last call");
                }
            }
        }
        Err(e) => {
            tracing::warn!(jobs = completing.len(), error = %e, "could not settle the jobs; the reconciler will")
        }
    }
}
