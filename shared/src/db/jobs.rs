//! Jobs: creation with a credit hold, status transitions, settlement and expiry.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::db::job_creation::{self, JobToCreate};
use crate::db::settlement::{self, SettleAnswer, SettleRequest, settling_update};
use crate::db::{credits, webhooks};
use crate::domain::outcomes::CreditHold;
use crate::domain::status::JobStatus;

/// A stored job.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub job_id: Uuid,
    pub team_id: String,
    pub user_id: Option<String>,
    pub job_type: String,
    pub status: JobStatus,
    pub requested_status: Option<JobStatus>,
    pub credit_hold: CreditHold,
    pub metadata: serde_json::Value,
    pub completion_metadata: Option<serde_json::Value>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    /// Where the `job.settled` event is sent; its signing secret is never read into this row.
    pub callback_url: Option<String>,
}

impl JobRow {
    /// Whether the job's credit was charged.
    pub fn credit_applied(&self) -> bool {
        self.credit_hold == CreditHold::Charged
    }
}

/// `sqlx::query_as!` into [`JobRow`], with the job's column list between `$head` and `$tail`.
/// sqlx's macros take only string literals, so the list cannot be a constant; this keeps it in
/// one place: `query_job!("select ", " from jobs where job_id = $1", job_id)`.
macro_rules! query_job {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $crate::db::jobs::JobRow,
            $head
                + r#"job_id, team_id, user_id, job_type, status as "status: JobStatus",
                     requested_status as "requested_status: JobStatus",
                     credit_hold as "credit_hold: crate::domain::outcomes::CreditHold", metadata,
                     completion_metadata, error_message, created_at, updated_at, completed_at,
                     expires_at, callback_url"#
                + $tail
            $(, $arg)*
        )
    };
}
pub(crate) use query_job;

/// Fields of a new job.
pub struct NewJob<'a> {
    pub team_id: &'a str,
    pub user_id: Option<&'a str>,
    pub job_type: &'a str,
    pub metadata: &'a serde_json::Value,
    pub ttl_secs: i64,
    /// Callback URL and its `whsec_` secret, both or neither.
    pub callback: Option<(&'a str, &'a str)>,
}

/// Holds one credit of the team and inserts the job: one statement, so the conditional balance
/// update and the job commit together (one round trip). `None` when the team has no credit
/// available (or does not exist): nothing was changed. Requests served together use
/// `job_creation::insert_holding_credits`, of which this is the group of one.
pub async fn insert_holding_credit(
    db: impl PgExecutor<'_>,
    job: &NewJob<'_>,
) -> sqlx::Result<Option<JobRow>> {
    let job = JobToCreate::new(job);
    let mut created = job_creation::insert_holding_credits(db, &job.team_id, &[&job]).await?;
    Ok(created.pop().flatten())
}

/// A job's status alone (the worker's check after writing a call's result).
pub async fn status(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<Option<JobStatus>> {
    sqlx::query_scalar!(
        r#"select status as "status: JobStatus" from jobs where job_id = $1"#,
        job_id
    )
    .fetch_optional(db)
    .await
}

/// A job, if it exists and (when `team_id` is given) belongs to that team.
pub async fn find(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    team_id: Option<&str>,
) -> sqlx::Result<Option<JobRow>> {
    query_job!(
        "select ",
        " from jobs where job_id = $1 and ($2::text is null or team_id = $2)",
        job_id,
        team_id
    )
    .fetch_optional(db)
    .await
}

/// Locks the job row for the rest of the transaction.
pub async fn lock(conn: &mut PgConnection, job_id: Uuid) -> sqlx::Result<Option<JobRow>> {
    query_job!(
        "select ",
        " from jobs where job_id = $1 for no key update",
        job_id
    )
    .fetch_optional(conn)
    .await
}

/// pending -> in_progress when the first call is accepted.
pub async fn mark_in_progress(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "update jobs set status = 'in_progress', updated_at = now()
         where job_id = $1 and status = 'pending'",
        job_id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records the requested final status; the job becomes `completing` until its calls finish.
/// Returns the job as changed, or `None` when it was no longer open (a concurrent change).
pub async fn mark_completing(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    requested: JobStatus,
    metadata: &serde_json::Value,
    error_message: Option<&str>,
) -> sqlx::Result<Option<JobRow>> {
    query_job!(
        "update jobs set status = 'completing', requested_status = $2, completion_metadata = $3,
             error_message = $4, updated_at = now()
         where job_id = $1 and status in ('pending', 'in_progress')
         returning ",
        "",
        job_id,
        requested as JobStatus,
        metadata,
        error_message
    )
    .fetch_optional(db)
    .await
}

/// Counts of a job's calls by state.
#[derive(Debug, Clone, Copy, Default, sqlx::FromRow)]
pub struct CallCounts {
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl CallCounts {
    pub fn unfinished(&self) -> i64 {
        self.queued + self.running
    }
}

/// How many of the job's calls are in each state.
pub async fn call_counts(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<CallCounts> {
    sqlx::query_as!(
        CallCounts,
        r#"select count(*) filter (where status = 'queued') as "queued!",
                count(*) filter (where status = 'running') as "running!",
                count(*) filter (where status = 'succeeded') as "succeeded!",
                count(*) filter (where status = 'failed') as "failed!",
                count(*) filter (where status = 'cancelled') as "cancelled!"
         from llm_calls where job_id = $1"#,
        job_id
    )
    .fetch_one(db)
    .await
}

/// What `settle` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The job reached its final status now (charged or released).
    Settled,
    /// Calls are still queued or running; the worker settles when the last one ends.
    Waiting,
    /// Nothing to do: the job is not `completing` (already settled, or never asked to complete).
    NotCompleting,
}

/// Settles a `completing` job whose calls have all finished: the final status, and in the same
/// transaction either the charge (requested `completed` and no call failed) or the release of
/// the hold, plus the `job.settled` webhook event. The job row lock and the guarded hold
/// transition make this safe to run from any number of API processes and workers at once:
/// exactly one of them settles. (`settlement::settle_group` with this job alone.)
pub async fn settle(db: &PgPool, job_id: Uuid) -> sqlx::Result<Settlement> {
    match settle_alone(db, SettleRequest::Complete(job_id)).await? {
        SettleAnswer::Complete(settlement) => Ok(settlement),
        SettleAnswer::Cancel(_) => Err(unexpected_answer()),
    }
}

/// What `cancel` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    /// Cancelled now: the hold released, the queued calls cancelled.
    Cancelled {
        calls_cancelled: u64,
    },
    /// It was cancelled before; nothing changed.
    AlreadyCancelled,
    /// It had already settled otherwise (completed, failed or expired).
    Settled(JobStatus),
    NotFound,
}

/// Cancels an open job (also one being completed): its queued calls never run, running ones
/// finish, the credit hold is released in the same transaction, and no credit is charged.
pub async fn cancel(db: &PgPool, job_id: Uuid) -> sqlx::Result<Cancellation> {
    match settle_alone(db, SettleRequest::Cancel(job_id)).await? {
        SettleAnswer::Cancel(cancellation) => Ok(cancellation),
        SettleAnswer::Complete(_) => Err(unexpected_answer()),
    }
}

async fn settle_alone(db: &PgPool, request: SettleRequest) -> sqlx::Result<SettleAnswer> {
    settlement::settle_group(db, &[&request])
        .await?
        .pop()
        .ok_or_else(unexpected_answer)
}

fn unexpected_answer() -> sqlx::Error {
    sqlx::Error::Protocol("a settlement answered another kind of request".into())
}

/// PostgreSQL notification channel carrying the id of each settled job.
pub const JOB_SETTLED_CHANNEL: &str = "saasllm_job_settled";

/// Expires up to `limit` jobs past their TTL, releases their holds (one balance update per team,
/// in team id order, after the job rows: the lock order of every settlement) and queues their
/// `job.settled` webhook events; returns how many.
pub async fn expire_overdue(db: &PgPool, limit: i64) -> sqlx::Result<u64> {
    let mut tx = db.begin().await?;
    let expired = settling_update!(
        query,
        "update jobs j set status = 'expired', credit_hold = 'released', updated_at = now(), completed_at = now(), ",
        " where job_id in (
             select job_id from jobs
             where status in ('pending', 'in_progress', 'completing') and expires_at < now() and credit_hold = 'held'
             order by expires_at limit $1 for update skip locked)
         returning job_id, team_id",
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut released: BTreeMap<&str, i64> = BTreeMap::new();
    for job in &expired {
        webhooks::enqueue_job_settled(&mut tx, job.job_id).await?;
        *released.entry(job.team_id.as_str()).or_default() += 1;
    }
    for (team_id, holds) in released {
        credits::settle_holds(&mut tx, team_id, &[], holds).await?;
    }
    tx.commit().await?;
    Ok(expired.len() as u64)
}

/// A page of a team's jobs, newest first, optionally of one status; with the total count.
pub async fn list_for_team(
    db: &PgPool,
    team_id: &str,
    status: Option<JobStatus>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<JobRow>, i64)> {
    let rows = query_job!(
        "select ",
        " from jobs where team_id = $1 and ($2::text is null or status = $2)
         order by created_at desc, job_id desc limit $3 offset $4",
        team_id,
        status as Option<JobStatus>,
        limit,
        offset
    )
    .fetch_all(db);
    let total = sqlx::query_scalar!(
        r#"select count(*) as "count!" from jobs where team_id = $1 and ($2::text is null or status = $2)"#,
        team_id,
        status as Option<JobStatus>
    )
    .fetch_one(db);
    tokio::try_join!(rows, total)
}

/// `completing` jobs with no unfinished call: normally settled by whoever finished the last
/// call, listed here for the reconciler in case that process died in between.
pub async fn completing_ready(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        "select j.job_id from jobs j where j.status = 'completing'
           and not exists (select 1 from llm_calls c where c.job_id = j.job_id and c.status in ('queued', 'running'))
         limit $1",
        limit
    )
    .fetch_all(db)
    .await
}
