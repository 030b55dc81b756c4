//! The reference model of the ledger: each team's balance counters and each job's state, the
//! transitions a case may take, and what the service must answer to each.

use proptest::prelude::*;
use proptest_state_machine::ReferenceStateMachine;
use reqwest::StatusCode;

use super::TEAMS;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Settlement {
    Completed,
    Failed,
    Expired,
}

impl Settlement {
    pub(super) fn status(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct TeamModel {
    pub(super) allocated: i64,
    pub(super) used: i64,
    pub(super) reserved: i64,
}

impl TeamModel {
    pub(super) fn available(&self) -> i64 {
        self.allocated - self.used - self.reserved
    }
}

#[derive(Debug, Clone)]
pub(super) struct JobModel {
    pub(super) team: usize,
    pub(super) failed_call: bool,
    pub(super) settled: Option<Settlement>,
}

#[derive(Debug, Clone)]
pub(super) enum Transition {
    AddCredits {
        team: usize,
        amount: i64,
    },
    CreateJob {
        team: usize,
    },
    /// A call in the job; `fail` picks a group whose upstream answers 400.
    Call {
        job: usize,
        fail: bool,
    },
    /// `/complete` with `completed` or `failed`.
    Complete {
        job: usize,
        settlement: Settlement,
    },
    /// Ages the job past its TTL and runs one reconciler pass.
    Expire {
        job: usize,
    },
}

/// What the service must answer to the last transition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Expected {
    Status(StatusCode),
    /// The job is (or already was) settled as expired.
    JobExpired,
    /// An expiry of a job settled otherwise: nothing to observe.
    Nothing,
}

/// The reference model: balances per team and the jobs created so far, in creation order.
#[derive(Debug, Clone)]
pub(super) struct Ledger {
    pub(super) teams: Vec<TeamModel>,
    pub(super) jobs: Vec<JobModel>,
    pub(super) expected: Expected,
}

impl ReferenceStateMachine for Ledger {
    type State = Ledger;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Ledger> {
        proptest::collection::vec(0..=2_i64, TEAMS)
            .prop_map(|credits| Ledger {
                teams: credits
                    .into_iter()
                    .map(|allocated| TeamModel {
                        allocated,
                        ..TeamModel::default()
                    })
                    .collect(),
                jobs: Vec::new(),
                expected: Expected::Nothing,
            })
            .boxed()
    }

    fn transitions(state: &Ledger) -> BoxedStrategy<Transition> {
        let add =
            (0..TEAMS, 1..3_i64).prop_map(|(team, amount)| Transition::AddCredits { team, amount });
        let create = (0..TEAMS).prop_map(|team| Transition::CreateJob { team });
        if state.jobs.is_empty() {
            return prop_oneof![1 => add, 2 => create].boxed();
        }
        let jobs = 0..state.jobs.len();
        let settlement =
            prop_oneof![7 => Just(Settlement::Completed), 3 => Just(Settlement::Failed)];
        prop_oneof![
            1 => add,
            2 => create,
            1 => (jobs.clone(), proptest::bool::weighted(0.3))
                .prop_map(|(job, fail)| Transition::Call { job, fail }),
            1 => (jobs.clone(), settlement)
                .prop_map(|(job, settlement)| Transition::Complete { job, settlement }),
            1 => jobs.prop_map(|job| Transition::Expire { job }),
        ]
        .boxed()
    }

    /// Shrinking drops transitions, so a later one may name a job that no longer exists.
    fn preconditions(state: &Ledger, transition: &Transition) -> bool {
        match transition {
            Transition::AddCredits { .. } | Transition::CreateJob { .. } => true,
            Transition::Call { job, .. }
            | Transition::Complete { job, .. }
            | Transition::Expire { job } => *job < state.jobs.len(),
        }
    }

    fn apply(mut state: Ledger, transition: &Transition) -> Ledger {
        state.expected = match *transition {
            Transition::AddCredits { team, amount } => {
                state.teams[team].allocated += amount;
                Expected::Status(StatusCode::OK)
            }
            Transition::CreateJob { team } => {
                if state.teams[team].available() >= 1 {
                    state.teams[team].reserved += 1;
                    state.jobs.push(JobModel {
                        team,
                        failed_call: false,
                        settled: None,
                    });
                    Expected::Status(StatusCode::OK)
                } else {
                    Expected::Status(StatusCode::PAYMENT_REQUIRED)
                }
            }
            Transition::Call { job, fail } => {
                let job = &mut state.jobs[job];
                match (job.settled, fail) {
                    (None, false) => Expected::Status(StatusCode::OK),
                    (None, true) => {
                        job.failed_call = true;
                        Expected::Status(StatusCode::BAD_GATEWAY)
                    }
                    (Some(_), _) => Expected::Status(StatusCode::CONFLICT),
                }
            }
            Transition::Complete { job, settlement } => {
                let job = &mut state.jobs[job];
                match job.settled {
                    None => {
                        let team = &mut state.teams[job.team];
                        team.reserved -= 1;
                        if settlement == Settlement::Completed && !job.failed_call {
                            team.used += 1;
                        }
                        job.settled = Some(settlement);
                        Expected::Status(StatusCode::OK)
                    }
                    // Repeating the same completion is idempotent.
                    Some(previous) if previous == settlement => Expected::Status(StatusCode::OK),
                    Some(_) => Expected::Status(StatusCode::CONFLICT),
                }
            }
            Transition::Expire { job } => {
                let job = &mut state.jobs[job];
                match job.settled {
                    None => {
                        state.teams[job.team].reserved -= 1;
                        job.settled = Some(Settlement::Expired);
                        Expected::JobExpired
                    }
                    Some(Settlement::Expired) => Expected::JobExpired,
                    Some(_) => Expected::Nothing,
                }
            }
        };
        state
    }
}
