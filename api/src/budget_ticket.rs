//! An admitted request's claim on its team's budget slice, settled exactly once: with what the
//! request cost, or, when it is dropped unsettled (client gone before the upstream answered),
//! as released at no cost.

use std::sync::Arc;
use std::time::Instant;

use saasllm_shared::db::budget_slices::{SliceChange, SpendEntry};
use saasllm_shared::db::spend::Usage;
use saasllm_shared::domain::outcomes::CostSource;
use saasllm_shared::domain::status::CallEndpoint;
use uuid::Uuid;

use super::{Budgets, TeamSlot};

/// An admitted request: `estimate` micro-dollars lent from the team's slice until it settles.
pub struct Ticket {
    budgets: Arc<Budgets>,
    slot: Arc<TeamSlot>,
    slice_id: Uuid,
    estimate: i64,
    request_id: Uuid,
    model: String,
    stream: bool,
    endpoint: CallEndpoint,
    settled: bool,
}

impl Ticket {
    pub(super) fn new(
        budgets: &Arc<Budgets>,
        slot: &Arc<TeamSlot>,
        slice_id: Uuid,
        estimate: i64,
        model: String,
        stream: bool,
        endpoint: CallEndpoint,
    ) -> Self {
        Self {
            budgets: Arc::clone(budgets),
            slot: Arc::clone(slot),
            slice_id,
            estimate,
            request_id: Uuid::now_v7(),
            model,
            stream,
            endpoint,
            settled: false,
        }
    }

    /// The id of the request's spend record.
    pub fn request_id(&self) -> Uuid {
        self.request_id
    }

    /// Settles the request at what it cost; its spend record is written with the next batch.
    pub fn finish(mut self, usage: Usage) {
        self.settle(usage);
    }

    /// Gives the estimate back to the slice and moves the cost from the slice to the team's
    /// spend (as much of it as the slice holds; a cost above the estimate is spent all the same).
    fn settle(&mut self, usage: Usage) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let change = {
            let mut held = self.slot.lock();
            match held.as_mut().filter(|s| s.slice_id == self.slice_id) {
                Some(slice) => {
                    slice.in_flight -= self.estimate;
                    let spent = usage
                        .cost_micro_usd
                        .min(slice.reserved - slice.in_flight)
                        .max(0);
                    slice.reserved -= spent;
                    slice.last_used = Instant::now();
                    Some(SliceChange {
                        slice_id: self.slice_id,
                        spent,
                        returned: 0,
                        delete: false,
                    })
                }
                // The reconciler returned the slice (its lease lapsed): the estimate went back
                // with it, and the cost is still spent.
                None => None,
            }
        };
        let entry = SpendEntry {
            request_id: self.request_id,
            team_id: self.slot.team_id.clone(),
            model: std::mem::take(&mut self.model),
            stream: self.stream,
            endpoint: self.endpoint,
            reserved_micro_usd: self.estimate,
            usage,
        };
        self.budgets.queue(&self.slot.team_id, Some(entry), change);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.settle(Usage {
            error: Some("the request ended before the upstream answered (client gone)".into()),
            cost_source: CostSource::PriceTable,
            ..Usage::default()
        });
    }
}
