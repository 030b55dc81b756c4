//! The job requests that move a team's credits (create, complete, cancel), served in per-team
//! groups (see `group_commit`): a busy team's creates share one balance update and one commit,
//! and so do its settlements, instead of queueing one by one on the team's balance row.

use sqlx::PgPool;
use uuid::Uuid;

use crate::db::is_constraint_violation;
use crate::db::job_creation::{self, JobToCreate};
use crate::db::jobs::{Cancellation, JobRow, NewJob, Settlement};
use crate::db::settlement::{self, SettleAnswer, SettleRequest};
use crate::group_commit::{Flush, GroupCommit, GroupError};

/// Creates gathered into one statement at most: one array element per job and column.
const MAX_CREATES: usize = 256;
/// Settlements gathered into one transaction at most: each locks its job row until the commit.
const MAX_SETTLEMENTS: usize = 128;

/// Serves the credit-moving job requests of this process; cheap to clone.
#[derive(Clone)]
pub struct JobCredits {
    creates: GroupCommit<CreateFlush>,
    settlements: GroupCommit<SettleFlush>,
}

impl JobCredits {
    pub fn new(db: PgPool) -> Self {
        Self {
            creates: GroupCommit::new(CreateFlush { db: db.clone() }, "create", MAX_CREATES),
            settlements: GroupCommit::new(SettleFlush { db }, "settle", MAX_SETTLEMENTS),
        }
    }

    /// Creates the job holding one credit, as `jobs::insert_holding_credit` does: `None` when the
    /// team has no credit left for it (or does not exist). Concurrent creates of a team are
    /// served first come first served.
    pub async fn create(&self, job: &NewJob<'_>) -> Result<Option<JobRow>, GroupError> {
        let job = JobToCreate::new(job);
        let team_id = job.team_id.clone();
        self.creates.submit(&team_id, job).await
    }

    /// Settles the team's job as `jobs::settle` does.
    pub async fn settle(&self, team_id: &str, job_id: Uuid) -> Result<Settlement, GroupError> {
        match self
            .settle_or_cancel(team_id, SettleRequest::Complete(job_id))
            .await?
        {
            SettleAnswer::Complete(settlement) => Ok(settlement),
            SettleAnswer::Cancel(_) => Err(wrong_answer()),
        }
    }

    /// Cancels the team's job as `jobs::cancel` does.
    pub async fn cancel(&self, team_id: &str, job_id: Uuid) -> Result<Cancellation, GroupError> {
        match self
            .settle_or_cancel(team_id, SettleRequest::Cancel(job_id))
            .await?
        {
            SettleAnswer::Cancel(cancellation) => Ok(cancellation),
            SettleAnswer::Complete(_) => Err(wrong_answer()),
        }
    }

    async fn settle_or_cancel(
        &self,
        team_id: &str,
        request: SettleRequest,
    ) -> Result<SettleAnswer, GroupError> {
        self.settlements.submit(team_id, request).await
    }
}

fn wrong_answer() -> GroupError {
    GroupError::from(sqlx::Error::Protocol(
        "a settlement answered another kind of request".into(),
    ))
}

struct CreateFlush {
    db: PgPool,
}

impl Flush for CreateFlush {
    type Request = JobToCreate;
    type Answer = Option<JobRow>;

    async fn flush(
        &self,
        team: &str,
        jobs: &[&JobToCreate],
        retrying: bool,
    ) -> sqlx::Result<Vec<Option<JobRow>>> {
        // An earlier try that committed without our hearing of it left its jobs (those it had
        // credit for): answer from them rather than holding credit a second time.
        if retrying && let Some(created) = job_creation::created_earlier(&self.db, jobs).await? {
            return Ok(created);
        }
        match job_creation::insert_holding_credits(&self.db, team, jobs).await {
            // That earlier try committed while this one ran: its jobs' ids refused this one,
            // which changed nothing.
            Err(error) if retrying && is_constraint_violation(&error, "jobs_pkey") => {
                job_creation::created_earlier(&self.db, jobs)
                    .await?
                    .ok_or(error)
            }
            outcome => outcome,
        }
    }
}

struct SettleFlush {
    db: PgPool,
}

impl Flush for SettleFlush {
    type Request = SettleRequest;
    type Answer = SettleAnswer;

    /// A settlement needs no care on a new try: a job settled by a try that committed is no
    /// longer open, and is answered as such.
    async fn flush(
        &self,
        _team: &str,
        requests: &[&SettleRequest],
        _retrying: bool,
    ) -> sqlx::Result<Vec<SettleAnswer>> {
        settlement::settle_group(&self.db, requests).await
    }
}
