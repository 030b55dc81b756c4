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
use std::ops::ControlFlow;
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

use crate::leases::{InFlight, give_back_team_slot};

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
                give_back_team_slot(&queue, &claimed.dispatched, 0).await;
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
    let mut fetcher = Fetcher {
        slots: Arc::new(Semaphore::new(settings.concurrency.max(1))),
        consumer: None,
        failures: FailurePause::default(),
        settings,
        in_flight,
        tasks,
        stop,
    };
    while !fetcher.stop.is_cancelled() {
        if fetcher.round().await.is_break() {
            return;
        }
    }
}

/// The state of the fetch loop.
struct Fetcher {
    settings: FetchSettings,
    in_flight: Arc<InFlight>,
    tasks: mpsc::UnboundedSender<Task<Claimed>>,
    stop: CancellationToken,
    /// The process's slots: a call is taken only for a free one.
    slots: Arc<Semaphore>,
    /// Connected on first use, and again after an error.
    consumer: Option<QueueConsumer>,
    failures: FailurePause,
}

impl Fetcher {
    /// One round: waits for free slots, takes calls for them, claims them and hands them to
    /// apalis. Breaks when the fetcher is to stop.
    async fn round(&mut self) -> ControlFlow<()> {
        let first = tokio::select! {
            () = self.stop.cancelled() => return ControlFlow::Break(()),
            slot = self.slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let free = gather_slots(
            &self.slots,
            first,
            self.settings.batch_size.max(1),
            self.settings.claim_wait,
        )
        .await;
        let Some(dispatched) = self.take(free.len()).await else {
            return ControlFlow::Continue(());
        };
        if dispatched.is_empty() {
            return ControlFlow::Continue(());
        }
        let Some(claimed) = self.claim(&dispatched).await else {
            return ControlFlow::Continue(());
        };
        self.hand_out(dispatched, claimed, free).await
    }

    /// Up to `max` calls from the queue, connecting first if need be; `None` after an error
    /// (paused for already).
    async fn take(&mut self, max: usize) -> Option<Vec<Dispatched>> {
        let conn = match &mut self.consumer {
            Some(conn) => conn,
            None => match self.settings.queue.consumer(self.settings.lease).await {
                Ok(conn) => self.consumer.insert(conn),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot connect to Redis; retrying");
                    self.failures.pause(&self.stop).await;
                    return None;
                }
            },
        };
        // Not cut short by `stop`: a script interrupted after it ran would lose the ids it took
        // until the reconciler finds them. The wait is bounded by WAKE_WAIT.
        match conn.take(max, WAKE_WAIT).await {
            Ok(dispatched) => Some(dispatched),
            Err(e) => {
                tracing::warn!(error = %e, "Redis queue read failed; reconnecting");
                self.consumer = None;
                self.failures.pause(&self.stop).await;
                None
            }
        }
    }

    /// Claims the dispatched calls in one statement; `None` after an error (paused for
    /// already), their team slots given back.
    async fn claim(&mut self, dispatched: &[Dispatched]) -> Option<Vec<ClaimedCall>> {
        let settings = &self.settings;
        let ids: Vec<_> = dispatched.iter().map(|d| d.call_id).collect();
        let lease_secs = settings.lease.as_secs_f64();
        let claimed =
            match db::claims::claim_many(&settings.db, &ids, &settings.worker_id, lease_secs).await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    // The calls stay queued in PostgreSQL; the reconciler pushes them again.
                    tracing::warn!(error = %e, "could not claim calls; retrying");
                    for next in dispatched {
                        give_back_team_slot(&settings.queue, next, 0).await;
                    }
                    self.failures.pause(&self.stop).await;
                    return None;
                }
            };
        self.failures.reset();
        // Their ratio is the mean batch claimed: how well claims are shared.
        metrics::counter!("worker_claim_statements_total").increment(1);
        metrics::counter!("worker_claimed_calls_total").increment(claimed.len() as u64);
        // Test-only crash point: nothing unless built with `crash-points` (see `fault`).
        crate::fault::crash_point(crate::fault::AFTER_CLAIM);
        Some(claimed)
    }

    /// Hands each claimed call to apalis with one of the free slots; a dispatched call that was
    /// not claimed gives back its team slot. Breaks when the worker is gone.
    async fn hand_out(
        &self,
        dispatched: Vec<Dispatched>,
        mut claimed: Vec<ClaimedCall>,
        mut free: Vec<OwnedSemaphorePermit>,
    ) -> ControlFlow<()> {
        for next in dispatched {
            let Some(at) = claimed.iter().position(|c| c.call_id == next.call_id) else {
                // Not queued any more: a duplicate entry, or a call of a cancelled job.
                tracing::debug!(call_id = %next.call_id, "call is not queued; duplicate entry dropped");
                give_back_team_slot(&self.settings.queue, &next, 0).await;
                continue;
            };
            let call = claimed.swap_remove(at);
            let team_slot = next.holds_slot.then(|| next.team_id.clone());
            self.in_flight
                .insert(call.call_id, call.lease_token, team_slot);
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
            if self.tasks.send(task).is_err() {
                // The worker is gone; `close` gives back what it had not started.
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
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
