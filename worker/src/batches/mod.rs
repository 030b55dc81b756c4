//! OpenAI Batch API batches, moved along by every worker process: validating batches are
//! checked and their lines queued as calls of a job (`validate`); a batch past its window has
//! its queued lines withdrawn; a batch whose lines have all finished is finalized: its output
//! and error files written and its spend settled (`finalize`). Each step is a guarded update,
//! so any number of workers run this loop together; a worker looks every second.

mod finalize;
mod lines;
mod validate;

use std::time::Duration;

use chrono::{DateTime, Utc};
use saasllm_shared::db::{batch_endings, batch_runs};
use saasllm_shared::domain::status::BatchStatus;
use saasllm_shared::queue::CallQueue;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How often a worker looks for batch work without being told.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How often one worker checks a running batch's spend against its reservation (it reads every
/// line of the batch).
const SPEND_CHECK_SECS: f64 = 3.0;
/// Batches moved per pass at most (the oldest first).
const ACTIVE_PER_PASS: i64 = 100;

/// Runs the batch steps until cancelled, in two loops so that a long validation (a large file)
/// never holds up the batches waiting to be expired or finalized.
pub async fn run(db: PgPool, queue: CallQueue, cancel: CancellationToken) {
    let validating = {
        let (db, queue) = (db.clone(), queue.clone());
        run_loop(cancel.clone(), move || {
            let (db, queue) = (db.clone(), queue.clone());
            async move {
                while validate::next(&db, &queue).await? {}
                Ok(())
            }
        })
    };
    let advancing = {
        let db = db.clone();
        run_loop(cancel, move || {
            let db = db.clone();
            async move { advance(&db, Utc::now()).await }
        })
    };
    tokio::join!(validating, advancing);
}

/// Runs `step` at start and every `LOOK_EVERY` until cancelled. (Polling rather than a
/// PostgreSQL listener: a listener holds a pool connection for good, two per worker here.)
async fn run_loop<F, Fut>(cancel: CancellationToken, step: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    loop {
        if let Err(e) = step().await {
            tracing::warn!(error = %e, "batch step failed; retrying");
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(LOOK_EVERY) => {}
        }
    }
}

/// One pass with the clock given (`now` decides which batches are past their window; tests
/// move it instead of waiting a day): validate what waits, expire what is overdue, finalize
/// what has finished.
pub async fn pass_at(db: &PgPool, queue: &CallQueue, now: DateTime<Utc>) -> anyhow::Result<()> {
    while validate::next(db, queue).await? {}
    advance(db, now).await
}

/// Expires what is past its window, withdraws what a batch's spend can no longer cover, and
/// finalizes what has finished.
async fn advance(db: &PgPool, now: DateTime<Utc>) -> anyhow::Result<()> {
    for batch in batch_runs::active(db, ACTIVE_PER_PASS).await? {
        if batch.status == BatchStatus::InProgress && batch.expires_at <= now {
            let mut tx = db.begin().await?;
            batch_runs::expire(&mut tx, &batch).await?;
            tx.commit().await?;
        } else if batch.status == BatchStatus::InProgress {
            let mut conn = db.acquire().await?;
            let withdrawn =
                batch_endings::withdraw_overrun(&mut conn, &batch.batch_id, SPEND_CHECK_SECS)
                    .await?;
            if withdrawn > 0 {
                tracing::warn!(batch_id = %batch.batch_id, withdrawn, "a batch's lines cost more than estimated; withdrew lines its budget cannot cover");
            }
        }
        if batch.status != BatchStatus::Finalizing
            && !batch_runs::begin_finalizing(db, &batch.batch_id).await?
        {
            continue;
        }
        finalize::finalize(db, &batch.batch_id).await?;
    }
    Ok(())
}
