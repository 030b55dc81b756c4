//! The background tasks of this process's budgets: the writer of queued spend and slice
//! changes, and the keeper that renews slice leases and returns idle slices.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use saasllm_shared::db::budget_slices::{self, SliceChange, SpendEntry};
use sqlx::PgPool;
use uuid::Uuid;

use super::{Budgets, TeamSlot};

/// Writes queued spend and slice changes, one transaction per batch, retrying a failed batch
/// (nothing is lost while PostgreSQL is away; admission goes on against what slices hold).
pub(super) async fn write_batches(budgets: Arc<Budgets>) {
    loop {
        budgets.wake_writer.notified().await;
        let (entries, changes, last_seq) = {
            let mut pending = budgets.lock_pending();
            let taken = std::mem::take(&mut *pending);
            pending.last_seq = taken.last_seq;
            (
                taken.entries,
                taken.changes.into_values().collect::<Vec<_>>(),
                taken.last_seq,
            )
        };
        if entries.is_empty() && changes.is_empty() {
            budgets.committed.send_replace(last_seq);
            continue;
        }
        if !write_or_retry(&budgets.db, &entries, &changes).await {
            // One item the database refuses for good (say, the team was deleted meanwhile)
            // must not hold up the rest: each is written on its own, and a refused one is
            // logged and left out.
            write_or_retry(&budgets.db, &[], &changes).await;
            for entry in entries {
                if !write_or_retry(&budgets.db, std::slice::from_ref(&entry), &[]).await {
                    tracing::error!(request_id = %entry.request_id, team_id = %entry.team_id,
                        cost_micro_usd = entry.usage.cost_micro_usd, "spend record refused by the database; left out");
                }
            }
        }
        budgets.committed.send_replace(last_seq);
        if budgets.db.is_closed() {
            return;
        }
    }
}

/// Writes a batch, retrying while the failure is transient (connection lost, deadlock,
/// serialization failure, database starting or stopping). False when the database refuses the
/// batch itself (a constraint or a value). Broader than `group_commit::is_transient` on
/// purpose: a request waits on a group commit's answer, while spend already served must not be
/// dropped for anything a later try may get past (a full disk, say), so only a refusal of the
/// data ends the retries.
async fn write_or_retry(
    db: &PgPool,
    entries: &[SpendEntry],
    changes: &[(String, SliceChange)],
) -> bool {
    let mut pause = Duration::from_millis(50);
    loop {
        match budget_slices::record(db, entries, changes).await {
            Ok(()) => return true,
            Err(_) if db.is_closed() => return true,
            Err(sqlx::Error::Database(e))
                if e.code()
                    .is_some_and(|c| c.starts_with("22") || c.starts_with("23")) =>
            {
                tracing::warn!(error = %e, records = entries.len(), "spend batch refused");
                return false;
            }
            Err(e) => {
                tracing::warn!(error = %e, records = entries.len(), "could not write spend; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Renews the leases of slices in use and returns idle ones.
pub(super) async fn keep_slices(budgets: Arc<Budgets>) {
    let tick = (budgets.settings.lease / 6).min(Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        if budgets.db.is_closed() || budgets.closed.load(Ordering::Relaxed) {
            return;
        }
        let slots: Vec<Arc<TeamSlot>> = budgets.teams().values().cloned().collect();
        let now = Instant::now();
        let renew_below = budgets.usable_part_of_lease() / 2;
        let mut due = Vec::new();
        for slot in &slots {
            let idle = budgets.settings.idle_return;
            if let Some(change) =
                slot.end_if(|s| s.in_flight == 0 && now.duration_since(s.last_used) >= idle)
            {
                budgets.queue(&slot.team_id, None, Some(change));
                continue;
            }
            if let Some(slice) = &*slot.lock()
                && slice.usable_until.saturating_duration_since(now) < renew_below
            {
                due.push((Arc::clone(slot), slice.slice_id));
            }
        }
        drop(slots);
        if !due.is_empty() {
            renew(&budgets, due).await;
        }
        // Teams without a slice are forgotten, so the map holds only active teams (a slot
        // referenced elsewhere is in use by a request).
        budgets
            .teams()
            .retain(|_, slot| slot.lock().is_some() || Arc::strong_count(slot) > 1);
    }
}

/// Extends the leases of the slices due; a slice the reconciler returned meanwhile is dropped.
async fn renew(budgets: &Budgets, due: Vec<(Arc<TeamSlot>, Uuid)>) {
    let ids: Vec<Uuid> = due.iter().map(|(_, id)| *id).collect();
    let started = Instant::now();
    match budget_slices::renew(&budgets.db, &ids, budgets.settings.lease.as_secs_f64()).await {
        Ok(live) => {
            for (slot, slice_id) in due {
                if !live.contains(&slice_id) {
                    slot.forget(slice_id);
                    continue;
                }
                if let Some(slice) = slot.lock().as_mut().filter(|s| s.slice_id == slice_id) {
                    slice.usable_until = started + budgets.usable_part_of_lease();
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not renew budget slices"),
    }
}
