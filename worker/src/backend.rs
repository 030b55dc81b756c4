//! The worker's apalis backend: calls taken from the project's fair Redis queue and claimed in
//! PostgreSQL in batches.
//!
//! One fetcher per process takes up to as many calls as it has free slots (one Redis script),
//! claims them in one statement (each under its own lease and fencing token) and hands them to
//! apalis as tasks. A task carries its slot, so the fetcher never takes more calls than the
//! process can start: nothing claimed waits in memory while its lease runs. The queue's own
//! rules stay the truth (fair dispatch, per-team limits, leases, the reconciler); apalis runs
//! the handlers, with no retries of its own: redelivery is the lease's job.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::RandomId;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use saasllm_shared::db;
use saasllm_shared::db::calls::ClaimedCall;
use saasllm_shared::domain::backoff::{Backoff, Jitter};
use saasllm_shared::queue::{CallQueue, Dispatched, QueueConsumer};
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tower::layer::util::Identity;

use crate::leases::InFlight;

/// How long one wait for a wake-up blocks in Redis before looking again (teams whose limits
/// eased, shutdown).
const WAKE_WAIT: Duration = Duration::from_secs(1);

/// A claimed call handed to a handler, with the process slot it occupies until dropped.
pub struct Claimed {
    pub call: ClaimedCall,
    pub dispatched: Dispatched,
    pub(crate) slot: OwnedSemaphorePermit,
}

/// What the fetcher needs.
#[derive(Clone)]
pub struct FetchSettings {
    pub queue: CallQueue,
    pub db: PgPool,
    pub worker_id: String,
    pub lease: Duration,
    pub concurrency: usize,
    pub batch_size: usize,
    /// How long a saturated worker waits for more free slots before it takes a smaller batch.
    pub claim_wait: Duration,
}

type Closing = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The apalis backend of one worker process.
pub struct CallBackend {
    tasks: Option<mpsc::UnboundedReceiver<Task<Claimed>>>,
    fetcher: Option<tokio::task::JoinHandle<()>>,
    stop: CancellationToken,
    db: PgPool,
    queue: CallQueue,
    in_flight: Arc<InFlight>,
    closing: Option<Closing>,
}

impl CallBackend {
    /// Starts the fetcher.
    pub fn start(settings: FetchSettings, in_flight: Arc<InFlight>) -> Self {
        let (sender, tasks) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let (db, queue) = (settings.db.clone(), settings.queue.clone());
        let fetcher = tokio::spawn(fetch(settings, in_flight.clone(), sender, stop.clone()));
        Self {
            tasks: Some(tasks),
            fetcher: Some(fetcher),
            stop,
            db,
            queue,
            in_flight,
            closing: None,
        }
    }

    /// Stops the fetcher, then gives back the calls it claimed that no handler started.
    fn close(&mut self) -> Closing {
        self.stop.cancel();
        let fetcher = self.fetcher.take();
        let tasks = self.tasks.take();
        let (db, queue, in_flight) = (self.db.clone(), self.queue.clone(), self.in_flight.clone());
        Box::pin(async move {
            if let Some(fetcher) = fetcher {
                let _ = fetcher.await;
            }
            let Some(mut tasks) = tasks else { return };
            let mut unstarted = Vec::new();
            while let Ok(task) = tasks.try_recv() {
                unstarted.push(task.args);
            }
            if unstarted.is_empty() {
                return;
            }
            let leases: Vec<_> = unstarted
                .iter()
                .map(|c| (c.call.call_id, c.call.lease_token))
                .collect();
            match db::claims::release_unstarted(&db, &leases).await {
                Ok(released) => tracing::info!(released, "calls taken but not started given back"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not give back unstarted calls; their leases will expire")
                }
            }
            for claimed in &unstarted {
                in_flight.remove(claimed.call.call_id);
                end_slot(&queue, &claimed.dispatched).await;
            }
        })
    }
}

impl Backend for CallBackend {
    type Task = Task<Claimed>;
    type Error = Infallible;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Task<Claimed>, Infallible>>> {
        match &mut self.tasks {
            Some(tasks) => tasks.poll_recv(cx).map(|task| task.map(Ok)),
            None => Poll::Ready(None),
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Infallible>> {
        let closing = match &mut self.closing {
            Some(closing) => closing,
            None => {
                let closing = self.close();
                self.closing.insert(closing)
            }
        };
        closing.as_mut().poll(cx).map(Ok)
    }
}

impl BackendConfig for CallBackend {
    type Args = Claimed;
    type Id = RandomId;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = Identity;

    fn config(&self) -> &() {
        &()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Identity {
        Identity::new()
    }
}

/// Takes and claims calls while there are free slots, until `stop` fires. Redis and PostgreSQL
/// errors are retried here with backoff: an error returned to apalis would end the worker.
async fn fetch(
    settings: FetchSettings,
    in_flight: Arc<InFlight>,
    tasks: mpsc::UnboundedSender<Task<Claimed>>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut consumer: Option<QueueConsumer> = None;
    let mut failures = FailurePause::default();
    while !stop.is_cancelled() {
        let first = tokio::select! {
            () = stop.cancelled() => return,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let mut free = gather_slots(
            &slots,
            first,
            settings.batch_size.max(1),
            settings.claim_wait,
        )
        .await;
        let conn = match &mut consumer {
            Some(conn) => conn,
            None => match settings.queue.consumer(settings.lease).await {
                Ok(conn) => consumer.insert(conn),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot connect to Redis; retrying");
                    failures.pause(&stop).await;
                    continue;
                }
            },
        };
        // Not cut short by `stop`: a script interrupted after it ran would lose the ids it took
        // until the reconciler finds them. The wait is bounded by WAKE_WAIT.
        let dispatched = match conn.take(free.len(), WAKE_WAIT).await {
            Ok(dispatched) => dispatched,
            Err(e) => {
                tracing::warn!(error = %e, "Redis queue read failed; reconnecting");
                consumer = None;
                failures.pause(&stop).await;
                continue;
            }
        };
        if dispatched.is_empty() {
            continue;
        }
        let ids: Vec<_> = dispatched.iter().map(|d| d.call_id).collect();
        let lease_secs = settings.lease.as_secs_f64();
        let mut claimed =
            match db::claims::claim_many(&settings.db, &ids, &settings.worker_id, lease_secs).await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    // The calls stay queued in PostgreSQL; the reconciler pushes them again.
                    tracing::warn!(error = %e, "could not claim calls; retrying");
                    for next in &dispatched {
                        end_slot(&settings.queue, next).await;
                    }
                    failures.pause(&stop).await;
                    continue;
                }
            };
        failures.reset();
        // Their ratio is the mean batch claimed: how well claims are shared.
        metrics::counter!("worker_claim_statements_total").increment(1);
        metrics::counter!("worker_claimed_calls_total").increment(claimed.len() as u64);
        // Test-only crash point: nothing unless built with `crash-points` (see `fault`).
        crate::fault::crash_point(crate::fault::AFTER_CLAIM);
        for next in dispatched {
            let Some(at) = claimed.iter().position(|c| c.call_id == next.call_id) else {
                // Not queued any more: a duplicate entry, or a call of a cancelled job.
                tracing::debug!(call_id = %next.call_id, "call is not queued; duplicate entry dropped");
                end_slot(&settings.queue, &next).await;
                continue;
            };
            let call = claimed.swap_remove(at);
            let team_slot = next.holds_slot.then(|| next.team_id.clone());
            in_flight.insert(call.call_id, call.lease_token, team_slot);
            let Some(slot) = free.pop() else {
                unreachable!("no more calls are taken than slots are free")
            };
            // The task's id is the call's, so apalis's spans and events name the call.
            let task_id = TaskId::from_string(call.call_id.to_string());
            let task = TaskBuilder::new(Claimed {
                call,
                dispatched: next,
                slot,
            })
            .task_id(task_id)
            .build();
            if tasks.send(task).is_err() {
                // The worker is gone; `close` gives back what it had not started.
                return;
            }
        }
    }
}

/// Up to `batch` free slots, starting with `first`. Slots already free are taken at once, so an
/// idle or lightly loaded worker takes calls without delay. A saturated worker (slots freed one
/// at a time as calls finish) waits up to `wait` for more, so that it claims a batch in one
/// statement instead of one call per statement: a few milliseconds against calls that take
/// hundreds.
async fn gather_slots(
    slots: &Arc<Semaphore>,
    first: OwnedSemaphorePermit,
    batch: usize,
    wait: Duration,
) -> Vec<OwnedSemaphorePermit> {
    let mut free = vec![first];
    let deadline = tokio::time::Instant::now() + wait;
    while free.len() < batch {
        match slots.clone().try_acquire_owned() {
            Ok(slot) => free.push(slot),
            Err(_) => {
                match tokio::time::timeout_at(deadline, slots.clone().acquire_owned()).await {
                    Ok(Ok(slot)) => free.push(slot),
                    _ => break,
                }
            }
        }
    }
    free
}

/// Gives back a dispatched call's hold on its team's limits without running it.
pub async fn end_slot(queue: &CallQueue, next: &Dispatched) {
    if !(next.holds_slot || next.counts_tokens) {
        return;
    }
    if let Err(e) = queue
        .finish(&next.team_id, &next.call_id.to_string(), 0)
        .await
    {
        // The slot lapses by itself when its hold expires.
        tracing::warn!(error = %e, "could not give back the team's concurrency slot");
    }
}

/// Pause after consecutive failures: 100 ms doubling to 5 s, reset by a success.
#[derive(Default)]
struct FailurePause {
    failures: u32,
}

impl FailurePause {
    const BACKOFF: Backoff = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_secs(5),
        jitter: Jitter::None,
    };

    async fn pause(&mut self, stop: &CancellationToken) {
        self.failures = self.failures.saturating_add(1);
        let delay = Self::BACKOFF.delay(self.failures);
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}
