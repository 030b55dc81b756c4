//! The USD budget of the OpenAI-compatible path, admitted in memory. Per team, this process holds
//! one budget slice: part of the team's remaining budget reserved in PostgreSQL in one update
//! (`db::budget_slices`). A request is admitted when its estimate fits what the slice has not
//! lent to requests in flight, so the estimates admitted by all processes together never pass the
//! budget. After the response, the request's spend record and cost are queued and written in
//! batches, one transaction for everything that finished meanwhile.
//!
//! A slice goes back to the team when it has been idle, when another process is refused for lack
//! of budget (it asks over `BUDGET_RECLAIM_CHANNEL`), at shutdown, and, if this process dies, by
//! the reconciler once the slice's lease lapses. A slice is used only while its lease is surely
//! held: until the renewal's start plus the lease minus a margin.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use saasllm_shared::db::budget_slices::{self, SliceChange, SpendEntry, Taken};
use saasllm_shared::domain::status::CallEndpoint;
use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

#[path = "budget_slot.rs"]
mod slot;
#[path = "budget_tasks.rs"]
mod tasks;
#[path = "budget_ticket.rs"]
mod ticket;

use slot::TeamSlot;
pub use ticket::Ticket;

/// PostgreSQL notification channel on which a refused process asks the others to give back the
/// unused part of a team's slices (payload: the team id).
pub const BUDGET_RECLAIM_CHANNEL: &str = "saasllm_budget_reclaim";

/// Pauses between attempts after asking other processes for parked budget.
const RECLAIM_PAUSES: [Duration; 4] = [
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
];

/// After a refusal that waited for parked budget, requests of the team are refused without
/// waiting again for this long (a burst over budget must not queue behind the pauses).
const REFUSAL_MEMORY: Duration = Duration::from_millis(250);

/// How budget slices are sized and kept.
#[derive(Debug, Clone, Copy)]
pub struct SliceSettings {
    /// Largest slice taken at once, in micro-dollars; a slice also takes at most a quarter of
    /// what is free, so other processes find budget too.
    pub max_micro_usd: i64,
    /// Lease of a slice in PostgreSQL; renewed while in use.
    pub lease: Duration,
    /// A slice unused this long goes back to the team.
    pub idle_return: Duration,
}

impl Default for SliceSettings {
    fn default() -> Self {
        Self {
            max_micro_usd: 1_000_000,
            lease: Duration::from_secs(30),
            idle_return: Duration::from_secs(2),
        }
    }
}

/// The budget slices of this process and the queue of finished requests.
pub struct Budgets {
    db: PgPool,
    holder: String,
    usd_per_credit_micro: i64,
    settings: SliceSettings,
    teams: Mutex<HashMap<String, Arc<TeamSlot>>>,
    pending: Mutex<Pending>,
    wake_writer: Notify,
    /// The sequence number of the last queued item known committed.
    committed: watch::Sender<u64>,
    closed: AtomicBool,
}

/// Finished requests and slice changes not yet written, with the sequence number of the last.
#[derive(Default)]
struct Pending {
    entries: Vec<SpendEntry>,
    changes: HashMap<Uuid, (String, SliceChange)>,
    last_seq: u64,
}

/// A request the budget cannot admit.
#[derive(Debug)]
pub enum Refusal {
    /// Less than the estimate is left of the team's budget.
    OverBudget,
    Database(sqlx::Error),
}

impl Budgets {
    /// The budgets of this process, with their writer and lease-keeping tasks running.
    pub fn start(db: PgPool, usd_per_credit_micro: i64, settings: SliceSettings) -> Arc<Self> {
        let budgets = Arc::new(Self {
            db,
            holder: holder_name(),
            usd_per_credit_micro,
            settings,
            teams: Mutex::default(),
            pending: Mutex::default(),
            wake_writer: Notify::new(),
            committed: watch::Sender::new(0),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(tasks::write_batches(Arc::clone(&budgets)));
        tokio::spawn(tasks::keep_slices(Arc::clone(&budgets)));
        budgets
    }

    /// Admits a request to `endpoint` costing at most `estimate` micro-dollars, or refuses it
    /// when the team's budget cannot cover it.
    pub async fn admit(
        self: &Arc<Self>,
        team_id: &str,
        estimate: i64,
        model: String,
        stream: bool,
        endpoint: CallEndpoint,
    ) -> Result<Ticket, Refusal> {
        let slot = self.slot(team_id);
        let slice_id = match slot.try_admit(estimate) {
            Some(slice_id) => slice_id,
            None => self.admit_growing(&slot, estimate).await?,
        };
        Ok(Ticket::new(
            self, &slot, slice_id, estimate, model, stream, endpoint,
        ))
    }

    /// Admits `estimate` once the team's slice has grown enough, taking more of the budget
    /// (one request at a time per team) and asking other processes for what they have parked.
    async fn admit_growing(&self, slot: &TeamSlot, estimate: i64) -> Result<Uuid, Refusal> {
        let mut taking = slot.taking.lock().await;
        let refused_lately = taking.is_some_and(|at| at.elapsed() < REFUSAL_MEMORY);
        let waits: &[Duration] = if refused_lately { &[] } else { &RECLAIM_PAUSES };
        let mut pauses = waits.iter();
        loop {
            if let Some(slice_id) = slot.try_admit(estimate) {
                return Ok(slice_id);
            }
            let (slice_id, own, started, taken) = self.take_more(slot, estimate).await?;
            match taken {
                Taken::Granted { added } => {
                    *taking = None;
                    slot.grow(slice_id, added, started + self.usable_part_of_lease());
                }
                Taken::SliceGone => slot.forget(slice_id),
                Taken::Refused { parked } => {
                    // Budget parked in other processes' slices is asked back, then tried again.
                    let pause = pauses.next().filter(|_| parked > own);
                    let Some(pause) = pause else {
                        if !refused_lately {
                            *taking = Some(Instant::now());
                        }
                        return Err(Refusal::OverBudget);
                    };
                    if pause == &RECLAIM_PAUSES[0] {
                        self.ask_for_parked_budget(&slot.team_id).await;
                    }
                    tokio::time::sleep(*pause).await;
                }
            }
        }
    }

    /// Asks PostgreSQL for enough of the team's budget to add to the slice (creating it if the
    /// process has none) for `estimate` to fit. Returns the slice, what it reserved before, when
    /// the update started (the lease counts from then) and what the update did.
    async fn take_more(
        &self,
        slot: &TeamSlot,
        estimate: i64,
    ) -> Result<(Uuid, i64, Instant, Taken), Refusal> {
        // What the slice has not lent counts towards the request: only the rest is needed.
        let (slice_id, create, own, unlent) = match &*slot.lock() {
            Some(slice) => (
                slice.slice_id,
                false,
                slice.reserved,
                (slice.reserved - slice.in_flight).max(0),
            ),
            None => (Uuid::now_v7(), true, 0, 0),
        };
        // The free amount read below must include every cost this process has seen
        // (a cost above its estimate is only in the queue until written).
        self.written(Duration::from_secs(5)).await;
        let started = Instant::now();
        let taken = budget_slices::take(
            &self.db,
            slice_id,
            create,
            &slot.team_id,
            &self.holder,
            (estimate - unlent).max(1),
            self.settings.max_micro_usd,
            self.usd_per_credit_micro,
            self.settings.lease.as_secs_f64(),
        )
        .await
        .map_err(Refusal::Database)?;
        Ok((slice_id, own, started, taken))
    }

    /// Waits until every request that finished before this call is written (bounded), so a
    /// balance read right after a response includes it.
    pub async fn written(&self, within: Duration) {
        let target = self.lock_pending().last_seq;
        let mut committed = self.committed.subscribe();
        let _ = tokio::time::timeout(within, committed.wait_for(|seq| *seq >= target)).await;
    }

    /// Gives the unused part of the team's slice back (another process was refused).
    pub fn give_back(&self, team_id: &str) {
        let Some(slot) = self.teams().get(team_id).cloned() else {
            return;
        };
        let change = {
            let mut held = slot.lock();
            let Some(slice) = held.as_mut() else { return };
            let returned = slice.reserved - slice.in_flight;
            if returned <= 0 {
                return;
            }
            slice.reserved -= returned;
            SliceChange {
                slice_id: slice.slice_id,
                spent: 0,
                returned,
                delete: false,
            }
        };
        self.queue(&slot.team_id, None, Some(change));
    }

    /// Returns every slice and writes everything queued (shutdown), bounded by `within`.
    pub async fn close(&self, within: Duration) {
        self.closed.store(true, Ordering::Relaxed);
        let slots: Vec<Arc<TeamSlot>> = self.teams().values().cloned().collect();
        for slot in slots {
            if let Some(change) = slot.end_if(|slice| slice.in_flight == 0) {
                self.queue(&slot.team_id, None, Some(change));
            }
        }
        self.written(within).await;
    }

    async fn ask_for_parked_budget(&self, team_id: &str) {
        let asked = sqlx::query!("select pg_notify($1, $2)", BUDGET_RECLAIM_CHANNEL, team_id)
            .execute(&self.db)
            .await;
        if let Err(e) = asked {
            tracing::warn!(team_id, error = %e, "could not ask other processes for parked budget");
        }
    }

    fn usable_part_of_lease(&self) -> Duration {
        self.settings.lease.mul_f64(2.0 / 3.0)
    }

    fn slot(&self, team_id: &str) -> Arc<TeamSlot> {
        let mut teams = self.teams();
        Arc::clone(
            teams
                .entry(team_id.to_owned())
                .or_insert_with(|| Arc::new(TeamSlot::new(team_id))),
        )
    }

    fn teams(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<TeamSlot>>> {
        self.teams.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a spend record and/or a slice change for the writer.
    fn queue(&self, team_id: &str, entry: Option<SpendEntry>, change: Option<SliceChange>) {
        {
            let mut pending = self.lock_pending();
            pending.entries.extend(entry);
            if let Some(change) = change {
                let merged = pending.changes.entry(change.slice_id).or_insert_with(|| {
                    (
                        team_id.to_owned(),
                        SliceChange {
                            spent: 0,
                            returned: 0,
                            delete: false,
                            ..change
                        },
                    )
                });
                merged.1.spent += change.spent;
                merged.1.returned += change.returned;
                merged.1.delete |= change.delete;
            }
            pending.last_seq += 1;
        }
        self.wake_writer.notify_one();
    }
}

/// Which process holds a slice: host, process id and a random suffix (several APIs may share a
/// process in tests).
fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let suffix = Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &suffix[..8])
}
