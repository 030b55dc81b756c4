//! One team's budget slice as this process holds it: what it reserved, what it lent to
//! requests in flight and how long it may be used.

use std::sync::Mutex;
use std::time::Instant;

use saasllm_shared::db::budget_slices::SliceChange;
use uuid::Uuid;

/// One team's slice in this process. `taking` serialises growing it, so concurrent requests
/// that find it empty wait for one update instead of each making their own.
pub(super) struct TeamSlot {
    pub(super) team_id: String,
    slice: Mutex<Option<LiveSlice>>,
    /// Held while growing the slice; holds when the team was last refused after waiting.
    pub(super) taking: tokio::sync::Mutex<Option<Instant>>,
}

pub(super) struct LiveSlice {
    pub(super) slice_id: Uuid,
    /// What the slice row holds once this process's queued changes are written.
    pub(super) reserved: i64,
    /// Estimates of admitted requests not finished yet (never above `reserved`).
    pub(super) in_flight: i64,
    pub(super) usable_until: Instant,
    pub(super) last_used: Instant,
}

impl TeamSlot {
    pub(super) fn new(team_id: &str) -> Self {
        Self {
            team_id: team_id.to_owned(),
            slice: Mutex::new(None),
            taking: tokio::sync::Mutex::new(None),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Option<LiveSlice>> {
        self.slice.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lends `estimate` from the slice if it is usable and has that much free.
    pub(super) fn try_admit(&self, estimate: i64) -> Option<Uuid> {
        let mut held = self.lock();
        let slice = held.as_mut()?;
        let now = Instant::now();
        if now >= slice.usable_until || slice.reserved - slice.in_flight < estimate {
            return None;
        }
        slice.in_flight += estimate;
        slice.last_used = now;
        Some(slice.slice_id)
    }

    /// Adds what was taken to the slice if it is still `slice_id`, else starts a new slice with
    /// it; either is usable until `usable_until`.
    pub(super) fn grow(&self, slice_id: Uuid, added: i64, usable_until: Instant) {
        let mut held = self.lock();
        match &mut *held {
            Some(slice) if slice.slice_id == slice_id => {
                slice.reserved += added;
                slice.usable_until = usable_until;
            }
            _ => {
                *held = Some(LiveSlice {
                    slice_id,
                    reserved: added,
                    in_flight: 0,
                    usable_until,
                    last_used: Instant::now(),
                });
            }
        }
    }

    /// Drops the slice if it is still `slice_id` (the reconciler returned it).
    pub(super) fn forget(&self, slice_id: Uuid) {
        let mut held = self.lock();
        if held.as_ref().is_some_and(|s| s.slice_id == slice_id) {
            *held = None;
        }
    }

    /// Ends the slice when `ready` says so, returning what it still holds. Not while another
    /// request is growing it: that update must find the slice where it left it.
    pub(super) fn end_if(&self, ready: impl Fn(&LiveSlice) -> bool) -> Option<SliceChange> {
        let _taking = self.taking.try_lock().ok()?;
        let mut held = self.lock();
        let slice = held.as_ref().filter(|s| ready(s))?;
        let change = SliceChange {
            slice_id: slice.slice_id,
            spent: 0,
            returned: slice.reserved,
            delete: true,
        };
        *held = None;
        Some(change)
    }
}
