//! The calls a worker process holds: registered when claimed, dropped once their result is
//! written. One task keeps all of them alive, extending every lease in one statement (and the
//! team concurrency slots they hold in Redis) a few times per lease, instead of one task and one
//! statement per call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saasllm_shared::db;
use saasllm_shared::queue::team_slots::call_member;
use saasllm_shared::queue::{CallQueue, Dispatched};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Extensions per lease: a lease outlives one or two failed extensions (a database hiccup).
const EXTENSIONS_PER_LEASE: u32 = 3;

/// Shortest lease: the interval between extensions is then at least a second.
pub(crate) const MIN_LEASE: Duration = Duration::from_secs(EXTENSIONS_PER_LEASE as u64);

/// How often a lease of length `lease` is extended.
pub(crate) fn extension_interval(lease: Duration) -> Duration {
    lease / EXTENSIONS_PER_LEASE
}

/// A claimed call's lease, and the team whose concurrency slot it holds (if its team has a
/// concurrency limit).
struct Held {
    lease_token: i64,
    slot_of_team: Option<String>,
}

/// A team concurrency slot held by a call: `(team, member)`.
type TeamSlot = (String, String);

/// The calls this process has claimed and not yet finished.
#[derive(Default)]
pub struct InFlight {
    calls: Mutex<HashMap<Uuid, Held>>,
}

impl InFlight {
    pub fn insert(&self, call_id: Uuid, lease_token: i64, slot_of_team: Option<String>) {
        self.lock().insert(
            call_id,
            Held {
                lease_token,
                slot_of_team,
            },
        );
    }

    /// The call no longer needs its lease kept: its result is written, or it is left to expire.
    pub fn remove(&self, call_id: Uuid) {
        self.lock().remove(&call_id);
    }

    /// The call's team slot has been given back: it needs no more extending.
    pub fn slot_ended(&self, call_id: Uuid) {
        if let Some(held) = self.lock().get_mut(&call_id) {
            held.slot_of_team = None;
        }
    }

    /// How many calls are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// The leases held `(call, token)` and the team slots held `(team, member)`.
    fn snapshot(&self) -> (Vec<(Uuid, i64)>, Vec<TeamSlot>) {
        let calls = self.lock();
        let leases = calls.iter().map(|(id, h)| (*id, h.lease_token)).collect();
        let slots = calls
            .iter()
            .filter_map(|(id, h)| Some((h.slot_of_team.clone()?, call_member(*id))))
            .collect();
        (leases, slots)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Held>> {
        // A panic while holding this short lock leaves the map consistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Extends the leases and team slots of every call in flight, at the `extension_interval`, until
/// `stop` fires. Runs until the worker has drained, so calls finishing during a shutdown keep
/// their leases.
pub async fn keep(
    db: PgPool,
    queue: CallQueue,
    in_flight: Arc<InFlight>,
    lease: Duration,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(extension_interval(lease));
    interval.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let (leases, slots) = in_flight.snapshot();
        match db::claims::extend_leases(&db, &leases, lease.as_secs_f64()).await {
            Ok(kept) if kept.len() < leases.len() => {
                // Their calls were re-queued by the reconciler (this process stalled past the
                // lease): the result written later will be refused by its fencing token.
                tracing::warn!(
                    lost = leases.len() - kept.len(),
                    "leases lost before the calls finished"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not extend leases"),
        }
        for (team, member) in slots {
            if let Err(e) = queue.extend_slot(&team, &member, lease).await {
                tracing::warn!(error = %e, "could not extend the team's concurrency slot");
            }
        }
    }
}

/// Gives back a dispatched call's hold on its team's limits (see
/// [`CallQueue::finish_dispatched`]), counting `tokens` towards the team's minute.
pub(crate) async fn give_back_team_slot(queue: &CallQueue, call: &Dispatched, tokens: i64) {
    if let Err(e) = queue.finish_dispatched(call, tokens).await {
        // The slot lapses by itself when its hold expires.
        tracing::warn!(error = %e, "could not give back the team's concurrency slot");
    }
}
