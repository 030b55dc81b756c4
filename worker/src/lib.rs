//! The queue worker: pops call ids from Redis, runs each call against the upstream with
//! model-group fallback, writes results to PostgreSQL; plus the reconciler and the webhook
//! sender. Stateless: run as many processes as needed against one Redis and one PostgreSQL.

mod config;
mod engine;
mod executor;
mod fallback;
mod fault;
mod reconciler;
mod resilience;
mod upstream;
mod webhook_client;
mod webhooks;

use std::time::Duration;

use saasllm_shared::queue::{CallQueue, Dispatched};
use saasllm_shared::redis_conn::RedisHandle;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

// The crate's public surface: starting workers, the model chain (which the API's streaming job
// path runs too, claiming and recording its call like a worker), and the upstream client.
pub use config::{WorkerConfig, WorkerOptions};
pub use engine::{AttemptRecord, ChainOutcome, Engine, Served, StreamStart, record_metrics};
pub use executor::{keep_lease, record_result};
pub use reconciler::{ReconcilerSettings, pass as reconcile_pass};
pub use resilience::{Cooldowns, RetryPolicy};
pub use upstream::{OpenedStream, Upstream, UpstreamError, reported_cost};

use executor::Executor;

/// How long one BRPOP blocks before checking for shutdown.
const POP_WAIT: Duration = Duration::from_secs(1);

/// Runs the worker until `cancel` fires, then lets in-flight calls finish (bounded by the
/// shutdown timeout) and returns. Calls run through `engine`, whose retry policy and cooldowns
/// apply (a process that streams calls itself passes the engine it streams with).
pub async fn run(
    db: PgPool,
    redis: RedisHandle,
    engine: Engine,
    options: WorkerOptions,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let queue = CallQueue::new(redis);
    let executor = Executor {
        db: db.clone(),
        worker_id: worker_id(),
        lease: options.lease(),
        engine,
    };
    tracing::info!(worker_id = %executor.worker_id, concurrency = options.concurrency, "worker started");
    let mut slots = JoinSet::new();
    for _ in 0..options.concurrency.max(1) {
        slots.spawn(consume(
            queue.clone(),
            executor.clone(),
            options.lease(),
            cancel.clone(),
        ));
    }
    let reconciler = tokio::spawn(reconciler::run(
        db.clone(),
        queue,
        options.reconciler(),
        cancel.clone(),
    ));
    let webhooks = tokio::spawn(webhooks::run(db, options.webhooks(), cancel.clone()));

    tokio::select! {
        () = cancel.cancelled() => {}
        // The pool closes only when its owner is going away (an embedding process or a test).
        () = db_closed(&executor) => cancel.cancel(),
    }
    tracing::info!("worker stopping: no new calls are taken; waiting for in-flight calls");
    let drained = tokio::time::timeout(Duration::from_secs(options.shutdown_timeout_secs), async {
        while slots.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "shutdown timeout reached; unfinished calls will be re-queued when their lease expires"
        );
        slots.abort_all();
    }
    let _ = reconciler.await;
    // Deliveries in flight end within their request timeout; one cut short is sent again when
    // its claim expires.
    let _ = webhooks.await;
    tracing::info!("worker stopped");
    Ok(())
}

/// One slot: take the next call (fairly across teams), run it, repeat. Redis errors are retried
/// here (with backoff) so a Redis restart never ends the worker.
async fn consume(queue: CallQueue, executor: Executor, lease: Duration, cancel: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !cancel.is_cancelled() {
        let mut consumer = match queue.consumer(lease).await {
            Ok(consumer) => consumer,
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to Redis; retrying");
                pause(&cancel, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        loop {
            let popped = tokio::select! {
                () = cancel.cancelled() => return,
                popped = consumer.pop(POP_WAIT) => popped,
            };
            match popped {
                Ok(Some(next)) => {
                    backoff = Duration::from_millis(100);
                    run_dispatched(&queue, &executor, &next, lease).await;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "Redis pop failed; reconnecting");
                    pause(&cancel, backoff).await;
                    break;
                }
            }
        }
    }
}

/// Runs a dispatched call, keeping its team's concurrency slot alive while it runs (the
/// executor gives the slot back when the upstream has answered).
async fn run_dispatched(
    queue: &CallQueue,
    executor: &Executor,
    next: &Dispatched,
    lease: Duration,
) {
    let slot_keeper = next.holds_slot.then(|| {
        let (queue, team, member) = (
            queue.clone(),
            next.team_id.clone(),
            next.call_id.to_string(),
        );
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(lease / 3);
            interval.tick().await;
            loop {
                interval.tick().await;
                if let Err(e) = queue.extend_slot(&team, &member, lease).await {
                    tracing::warn!(error = %e, "could not extend the team's concurrency slot");
                }
            }
        })
    });
    let outcome = executor.handle(queue, next).await;
    if let Some(keeper) = slot_keeper {
        keeper.abort();
    }
    if let Err(e) = outcome {
        // The call keeps its lease and is re-queued when it expires.
        tracing::error!(call_id = %next.call_id, error = ?e, "call could not be run to the end");
    }
}

async fn db_closed(executor: &Executor) {
    executor.db.close_event().await;
}

async fn pause(cancel: &CancellationToken, duration: Duration) {
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tokio::time::sleep(duration) => {}
    }
}

/// A name unique to this process start, for leases and logs.
fn worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}
