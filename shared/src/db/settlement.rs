//! Settling jobs, several in one transaction: completions (the hold charged or released once
//! every call has finished) and cancellations. Locks are taken in one order: the job rows first,
//! in job id order, then the queued calls of cancelled jobs, then each team's balance row last,
//! in team id order (no statement waits for anything else while holding a balance row); so two
//! groups, or a group and a single-job statement, never wait on each other in a cycle.
//!
//! Every job moves only through a guarded transition (still open, hold still `held`) made under
//! its row lock, and the ledger refuses a second deduction of a job (unique job and kind), so a
//! job is charged at most once however many requests, processes and retries settle it.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::db::jobs::{
    CallCounts, Cancellation, JOB_SETTLED_CHANNEL, JobRow, Settlement, query_job,
};
use crate::db::{calls, credits, webhooks};
use crate::domain::outcomes::CreditHold;
use crate::domain::status::JobStatus;

/// What to do to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleRequest {
    /// Settle a `completing` job whose calls have all finished.
    Complete(Uuid),
    /// Cancel an open job (also one being completed).
    Cancel(Uuid),
}

impl SettleRequest {
    pub fn job_id(&self) -> Uuid {
        match *self {
            SettleRequest::Complete(id) | SettleRequest::Cancel(id) => id,
        }
    }
}

/// What a request found, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleAnswer {
    Complete(Settlement),
    Cancel(Cancellation),
}

/// A job's move to its final status, decided under its row lock.
struct Transition<'a> {
    job: &'a JobRow,
    status: JobStatus,
    charge: bool,
    /// The request answered by it.
    answer: usize,
}

/// Serves the requests in order, in one transaction. A request whose job has moved on already
/// (settled by an earlier request of the group, or elsewhere) gets the answer it would get alone;
/// the others are not affected.
pub async fn settle_group(
    db: &PgPool,
    requests: &[&SettleRequest],
) -> sqlx::Result<Vec<SettleAnswer>> {
    let mut tx = db.begin().await?;
    let locked = lock_jobs(&mut tx, requests).await?;
    let counts = finished_counts(&mut tx, &locked, requests).await?;
    let Plan {
        mut answers,
        transitions,
        mut to_notify,
    } = Plan::decide(requests, &locked, &counts);
    let moved = move_jobs(&mut tx, &transitions).await?;
    let transitions = keep_moved(&transitions, &moved, &mut answers);
    for t in &transitions {
        if t.status == JobStatus::Cancelled {
            let calls_cancelled = calls::cancel_queued(&mut tx, t.job.job_id).await?;
            answers[t.answer] = SettleAnswer::Cancel(Cancellation::Cancelled { calls_cancelled });
            to_notify.push(t.job.job_id);
        }
    }
    for t in &transitions {
        if t.job.callback_url.is_some() {
            webhooks::enqueue_job_settled(&mut tx, t.job.job_id).await?;
        }
    }
    notify_settled(&mut tx, &to_notify).await?;
    // Last, so the team's hot balance row stays locked only for its update, the ledger rows and
    // the commit.
    let charged = settle_balances(&mut tx, &transitions).await?;
    tx.commit().await?;
    if charged > 0 {
        metrics::counter!("credits_deducted_total").increment(charged);
    }
    Ok(answers)
}

/// Locks the requests' jobs, in job id order.
async fn lock_jobs(
    conn: &mut PgConnection,
    requests: &[&SettleRequest],
) -> sqlx::Result<Vec<JobRow>> {
    let mut ids: Vec<Uuid> = requests.iter().map(|r| r.job_id()).collect();
    ids.sort_unstable();
    ids.dedup();
    query_job!(
        "select ",
        " from jobs where job_id = any($1) order by job_id for no key update",
        &ids
    )
    .fetch_all(conn)
    .await
}

/// What the group does, decided request by request under the job locks.
struct Plan<'a> {
    /// One per request, in order; a cancellation's may change once its job has moved.
    answers: Vec<SettleAnswer>,
    transitions: Vec<Transition<'a>>,
    /// Jobs whose settlement is announced on `JOB_SETTLED_CHANNEL`.
    to_notify: Vec<Uuid>,
}

impl<'a> Plan<'a> {
    /// Answers the requests in order, each seeing the jobs as the earlier ones left them.
    fn decide(
        requests: &[&SettleRequest],
        locked: &'a [JobRow],
        counts: &HashMap<Uuid, CallCounts>,
    ) -> Self {
        let mut current: HashMap<Uuid, (JobStatus, bool)> = locked
            .iter()
            .map(|j| (j.job_id, (j.status, j.credit_hold == CreditHold::Held)))
            .collect();
        let by_id: HashMap<Uuid, &JobRow> = locked.iter().map(|j| (j.job_id, j)).collect();
        let mut plan = Plan {
            answers: Vec::with_capacity(requests.len()),
            transitions: Vec::new(),
            to_notify: Vec::new(),
        };
        for (index, request) in requests.iter().enumerate() {
            let id = request.job_id();
            let (Some(job), Some(state)) = (by_id.get(&id), current.get_mut(&id)) else {
                plan.answers.push(match request {
                    SettleRequest::Complete(_) => SettleAnswer::Complete(Settlement::NotCompleting),
                    SettleRequest::Cancel(_) => SettleAnswer::Cancel(Cancellation::NotFound),
                });
                continue;
            };
            let answer = match request {
                SettleRequest::Complete(_) => {
                    let counts = counts.get(&id).copied().unwrap_or_default();
                    plan.complete(job, state, counts, index)
                }
                SettleRequest::Cancel(_) => plan.cancel(job, state, index),
            };
            plan.answers.push(answer);
        }
        plan
    }

    /// A completion: the job settles once it is `completing` and every call has finished.
    fn complete(
        &mut self,
        job: &'a JobRow,
        state: &mut (JobStatus, bool),
        counts: CallCounts,
        answer: usize,
    ) -> SettleAnswer {
        let (status, held) = *state;
        if status != JobStatus::Completing {
            return SettleAnswer::Complete(Settlement::NotCompleting);
        }
        if counts.unfinished() > 0 {
            return SettleAnswer::Complete(Settlement::Waiting);
        }
        let final_status = job.requested_status.unwrap_or(JobStatus::Failed);
        if held {
            let charge = final_status == JobStatus::Completed && counts.failed == 0;
            self.transitions.push(Transition {
                job,
                status: final_status,
                charge,
                answer,
            });
            *state = (final_status, false);
        }
        self.to_notify.push(job.job_id);
        SettleAnswer::Complete(Settlement::Settled)
    }

    /// A cancellation: an open job whose hold is still held is cancelled; its queued calls are
    /// counted once it has moved.
    fn cancel(
        &mut self,
        job: &'a JobRow,
        state: &mut (JobStatus, bool),
        answer: usize,
    ) -> SettleAnswer {
        let (status, held) = *state;
        match status {
            JobStatus::Cancelled => SettleAnswer::Cancel(Cancellation::AlreadyCancelled),
            JobStatus::Completed | JobStatus::Failed | JobStatus::Expired => {
                SettleAnswer::Cancel(Cancellation::Settled(status))
            }
            JobStatus::Pending | JobStatus::InProgress | JobStatus::Completing if held => {
                let status = JobStatus::Cancelled;
                self.transitions.push(Transition {
                    job,
                    status,
                    charge: false,
                    answer,
                });
                *state = (status, false);
                SettleAnswer::Cancel(Cancellation::Cancelled { calls_cancelled: 0 })
            }
            JobStatus::Pending | JobStatus::InProgress | JobStatus::Completing => {
                SettleAnswer::Cancel(Cancellation::Settled(status))
            }
        }
    }
}

/// The transitions whose job moved. A cancellation whose job did not move is answered with the
/// status the job had when locked.
fn keep_moved<'t, 'a>(
    transitions: &'t [Transition<'a>],
    moved: &HashSet<Uuid>,
    answers: &mut [SettleAnswer],
) -> Vec<&'t Transition<'a>> {
    for t in transitions
        .iter()
        .filter(|t| !moved.contains(&t.job.job_id))
    {
        if t.status == JobStatus::Cancelled {
            answers[t.answer] = SettleAnswer::Cancel(Cancellation::Settled(t.job.status));
        }
    }
    transitions
        .iter()
        .filter(|t| moved.contains(&t.job.job_id))
        .collect()
}

/// Announces the settled jobs on `JOB_SETTLED_CHANNEL` (delivered on commit).
async fn notify_settled(conn: &mut PgConnection, job_ids: &[Uuid]) -> sqlx::Result<()> {
    if !job_ids.is_empty() {
        sqlx::query!(
            "select pg_notify($1, id::text) from unnest($2::uuid[]) as t(id)",
            JOB_SETTLED_CHANNEL,
            job_ids
        )
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// The call counts of the jobs that a completion may settle now (locked `completing`).
async fn finished_counts(
    conn: &mut PgConnection,
    locked: &[JobRow],
    requests: &[&SettleRequest],
) -> sqlx::Result<HashMap<Uuid, CallCounts>> {
    let completing: Vec<Uuid> = locked
        .iter()
        .filter(|j| j.status == JobStatus::Completing)
        .filter(|j| requests.contains(&&SettleRequest::Complete(j.job_id)))
        .map(|j| j.job_id)
        .collect();
    if completing.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query!(
        r#"select job_id,
                count(*) filter (where status = 'queued') as "queued!",
                count(*) filter (where status = 'running') as "running!",
                count(*) filter (where status = 'succeeded') as "succeeded!",
                count(*) filter (where status = 'failed') as "failed!",
                count(*) filter (where status = 'cancelled') as "cancelled!"
         from llm_calls where job_id = any($1) group by job_id"#,
        &completing
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let counts = CallCounts {
                queued: row.queued,
                running: row.running,
                succeeded: row.succeeded,
                failed: row.failed,
                cancelled: row.cancelled,
            };
            (row.job_id, counts)
        })
        .collect())
}

/// Moves the jobs to their final status; returns those moved. Each is locked and was checked
/// open and held, so all move; the guard makes sure a hold is settled once even if not. The
/// job's call totals are kept with it when every call has finished (see `settling_update!`).
async fn move_jobs(
    conn: &mut PgConnection,
    transitions: &[Transition<'_>],
) -> sqlx::Result<HashSet<Uuid>> {
    if transitions.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<Uuid> = transitions.iter().map(|t| t.job.job_id).collect();
    let statuses: Vec<&str> = transitions.iter().map(|t| t.status.as_str()).collect();
    let holds: Vec<&str> = transitions
        .iter()
        .map(|t| {
            let hold = if t.charge {
                CreditHold::Charged
            } else {
                CreditHold::Released
            };
            hold.as_str()
        })
        .collect();
    // The arrays of borrowed elements are typed by their casts: sqlx's check expects `Vec<String>`.
    settling_update!(
        query_scalar,
        "update jobs j set status = t.status, credit_hold = t.hold, completed_at = now(), updated_at = now(), ",
        " from unnest($1::uuid[], $2::text[], $3::text[]) as t(job_id, status, hold)
         where j.job_id = t.job_id and j.status in ('pending', 'in_progress', 'completing')
           and j.credit_hold = 'held'
         returning j.job_id",
        &ids,
        &statuses as &[&str],
        &holds as &[&str]
    )
    .fetch_all(conn)
    .await
    .map(|moved: Vec<Uuid>| moved.into_iter().collect())
}

/// The holds of one team settled by a group.
#[derive(Default)]
struct TeamHolds {
    /// Each charged job and the reason written in its ledger row, in the group's order.
    charged: Vec<(Uuid, String)>,
    released: i64,
}

/// One balance update per team (in team id order) for the holds settled, and the ledger rows of
/// the charges; returns how many credits were charged.
async fn settle_balances(
    conn: &mut PgConnection,
    transitions: &[&Transition<'_>],
) -> sqlx::Result<u64> {
    let mut by_team: BTreeMap<&str, TeamHolds> = BTreeMap::new();
    for t in transitions {
        let holds = by_team.entry(t.job.team_id.as_str()).or_default();
        if t.charge {
            let reason = format!("Job {} completed successfully", t.job.job_type);
            holds.charged.push((t.job.job_id, reason));
        } else {
            holds.released += 1;
        }
    }
    let mut charged = 0;
    for (team_id, holds) in &by_team {
        credits::settle_holds(conn, team_id, &holds.charged, holds.released).await?;
        charged += holds.charged.len() as u64;
    }
    Ok(charged)
}

/// `sqlx::$kind!` over an update of the jobs `j` that settles them: the `set` list between
/// `$head` and `$tail` ends with the job's call totals, for usage reports. Each is summed when
/// no call of the job is still unfinished (in the statement's snapshot, so the sum is of final
/// figures), else null, and reports sum the calls themselves. sqlx's macros take only string
/// literals, so every settling statement takes the totals from here.
macro_rules! settling_update {
    ($kind:ident, $head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::$kind!(
            $head
                + "calls_cost_micro_usd = (select case when count(*) filter (where c.finished_at is null) = 0
                       then coalesce(sum(c.cost_micro_usd), 0)::int8 end from llm_calls c where c.job_id = j.job_id),
                   calls_tokens = (select case when count(*) filter (where c.finished_at is null) = 0
                       then coalesce(sum(c.total_tokens), 0)::int8 end from llm_calls c where c.job_id = j.job_id)"
                + $tail
            $(, $arg)*
        )
    };
}
pub(crate) use settling_update;
