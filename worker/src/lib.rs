//! The queue worker: takes call ids from Redis in batches, runs each call against the upstream
//! with model-group fallback, writes results to PostgreSQL in groups; plus the reconciler and the
//! webhook sender. Stateless: run as many processes as needed against one Redis and one
//! PostgreSQL.

mod backend;
mod batches;
mod config;
mod engine;
mod executor;
mod fallback;
mod fault;
mod leases;
mod reconciler;
mod refills;
mod resilience;
mod results;
mod team_alerts;
mod upstream;
mod webhook_client;
mod webhooks;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis::prelude::WorkerBuilderExt;
use apalis_core::error::BoxDynError;
use apalis_core::monitor::Monitor;
use apalis_core::task::Task;
use apalis_core::worker::builder::WorkerBuilder;
use saasllm_shared::queue::CallQueue;
use saasllm_shared::redis_conn::RedisHandle;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

// The crate's public surface: starting workers, the model chain (which the API's streaming job
// path runs too, claiming and recording its call like a worker), and the upstream client.
pub use batches::pass_at as batch_pass_at;
pub use config::{WorkerConfig, WorkerOptions};
pub use engine::{AttemptRecord, ChainOutcome, Engine, Served, StreamStart, record_metrics};
pub use executor::{keep_lease, record_result};
pub use reconciler::{
    ReconcilerSettings, Turn as ReconcilerTurn, pass as reconcile_pass,
    pass_at as reconcile_pass_at, pass_unless_done as reconcile_unless_done,
};
pub use refills::apply_due as apply_due_refills;
pub use resilience::{Cooldowns, RetryPolicy};
pub use team_alerts::evaluate as evaluate_team_alerts;
pub use upstream::{OpenedStream, Upstream, UpstreamError, reported_cost};

use backend::{CallBackend, Claimed, FetchSettings};
use executor::Executor;
use leases::InFlight;
use results::ResultWriter;

/// Runs the worker until `cancel` fires, then lets in-flight calls finish (bounded by the
/// shutdown timeout) and returns. Calls run through `engine`, whose retry policy and cooldowns
/// apply (a process that streams calls itself passes the engine it streams with).
///
/// Calls run as tasks of an apalis worker over the project's own queue backend
/// ([`backend::CallBackend`]): apalis drives the handlers (concurrency limit, tracing, graceful
/// stop; each call runs on a task of its own, whose panic ends that call only), the backend takes and claims calls in batches, and results are
/// written in groups ([`results::ResultWriter`]).
pub async fn run(
    db: PgPool,
    redis: RedisHandle,
    engine: Engine,
    options: WorkerOptions,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let queue = CallQueue::new(redis);
    let worker_id = worker_id();
    let concurrency = options.concurrency.max(1);
    let batch_size = options.batch_size.clamp(1, concurrency);
    let in_flight = Arc::new(InFlight::default());
    // Fetcher, two result writers, lease keeper, and one spare.
    let batch_db = saasllm_shared::db::batch_pool(&db, 5);
    let results = ResultWriter::new(batch_db.clone(), db.clone(), batch_size);
    let executor = Arc::new(Executor {
        engine,
        queue: queue.clone(),
        results,
        in_flight: in_flight.clone(),
    });
    tracing::info!(%worker_id, concurrency, batch_size, "worker started");

    let lease_keeper_stop = CancellationToken::new();
    let lease_keeper = tokio::spawn(leases::keep(
        batch_db.clone(),
        queue.clone(),
        in_flight.clone(),
        options.lease(),
        lease_keeper_stop.clone(),
    ));
    let fetch_settings = FetchSettings {
        queue: queue.clone(),
        db: batch_db.clone(),
        worker_id,
        lease: options.lease(),
        concurrency,
        batch_size,
        claim_wait: Duration::from_millis(options.claim_wait_ms),
    };
    let monitor = call_monitor(
        fetch_settings,
        executor.clone(),
        in_flight.clone(),
        Duration::from_secs(options.shutdown_timeout_secs),
    );
    let loops = BackgroundLoops::start(&db, queue, &options, &cancel);

    // Returns once every call has finished, or at the shutdown timeout: calls still running
    // then are re-queued when their lease expires.
    if let Err(e) = monitor.run_with_signal(stop_signal(cancel, db)).await {
        tracing::error!(error = %e, "worker ended with an error");
    }
    let unfinished = in_flight.len();
    if unfinished > 0 {
        tracing::warn!(
            unfinished,
            "shutdown timeout reached; unfinished calls will be re-queued when their lease expires"
        );
    }
    lease_keeper_stop.cancel();
    let _ = lease_keeper.await;
    drop(executor);
    // Bounded: after a shutdown timeout a call may still hold a connection.
    let _ = tokio::time::timeout(Duration::from_secs(5), batch_db.close()).await;
    loops.join().await;
    tracing::info!("worker stopped");
    Ok(())
}

/// apalis's monitor of the worker running claimed calls: it runs the worker and stops it
/// gracefully; the factory would also rebuild it, but the backend never fails (it retries Redis
/// and PostgreSQL itself).
fn call_monitor(
    fetch_settings: FetchSettings,
    executor: Arc<Executor>,
    in_flight: Arc<InFlight>,
    shutdown_timeout: Duration,
) -> Monitor {
    let concurrency = fetch_settings.concurrency;
    Monitor::new()
        .shutdown_timeout(shutdown_timeout)
        .register(move |_restarts| {
            WorkerBuilder::new(fetch_settings.worker_id.as_str())
                .backend(CallBackend::start(
                    fetch_settings.clone(),
                    in_flight.clone(),
                ))
                .concurrency(concurrency)
                .enable_tracing()
                .build(CallService {
                    executor: executor.clone(),
                })
        })
}

/// Resolves when the worker is to stop taking calls: `cancel` fired, or the pool was closed.
async fn stop_signal(cancel: CancellationToken, db: PgPool) -> std::io::Result<()> {
    tokio::select! {
        () = cancel.cancelled() => {}
        // The pool closes only when its owner is going away (an embedding process or a test).
        () = db.close_event() => cancel.cancel(),
    }
    tracing::info!("worker stopping: no new calls are taken; waiting for in-flight calls");
    Ok(())
}

/// The loops a worker runs beside its calls, until `cancel` fires.
struct BackgroundLoops {
    batch_steps: tokio::task::JoinHandle<()>,
    reconciler: tokio::task::JoinHandle<()>,
    webhooks: tokio::task::JoinHandle<()>,
}

impl BackgroundLoops {
    fn start(
        db: &PgPool,
        queue: CallQueue,
        options: &WorkerOptions,
        cancel: &CancellationToken,
    ) -> Self {
        Self {
            batch_steps: tokio::spawn(batches::run(db.clone(), queue.clone(), cancel.clone())),
            reconciler: tokio::spawn(reconciler::run(
                db.clone(),
                queue,
                options.reconciler(),
                cancel.clone(),
            )),
            webhooks: tokio::spawn(webhooks::run(
                db.clone(),
                options.webhooks(),
                cancel.clone(),
            )),
        }
    }

    async fn join(self) {
        let _ = self.reconciler.await;
        let _ = self.batch_steps.await;
        // Deliveries in flight end within their request timeout; one cut short is sent again
        // when its claim expires.
        let _ = self.webhooks.await;
    }
}

/// The apalis service running one claimed call.
#[derive(Clone)]
struct CallService {
    executor: Arc<Executor>,
}

impl tower::Service<Task<Claimed>> for CallService {
    type Response = ();
    type Error = BoxDynError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxDynError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: Task<Claimed>) -> Self::Future {
        let executor = self.executor.clone();
        // Each call runs on its own task, so calls use every core (apalis polls its handlers
        // from one task).
        let running = tokio::spawn(async move { executor.handle(task.args).await });
        Box::pin(async move {
            match running.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    // The call keeps its lease and is re-queued when it expires.
                    tracing::error!(error = ?e, "call could not be run to the end");
                    Err(e.into())
                }
                Err(e) => Err(Box::new(e) as BoxDynError),
            }
        })
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
