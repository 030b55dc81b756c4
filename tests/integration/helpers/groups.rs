//! Requests to `JobCredits` gathered into groups with certainty rather than by timing: the test
//! holds the team's balance row locked while every request is submitted (each polled once, which
//! queues it), so the first flush waits on the lock and the rest gather behind it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::future::join_all;
use futures::poll;
use saasllm_shared::db::jobs::{self, JobRow, NewJob};
use saasllm_shared::group_commit::GroupError;
use saasllm_shared::job_credits::JobCredits;
use sqlx::{PgPool, Postgres, Transaction};

use crate::helpers::app::spawn_app;
use crate::helpers::stack::poll_for;

pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub type Created = Result<Option<JobRow>, GroupError>;

/// A team with `credits`, set up through the API.
pub async fn team(db: &PgPool, team_id: &str, credits: i64) {
    spawn_app(db.clone())
        .await
        .team_with_key(team_id, credits)
        .await;
}

/// Locks the team's balance row until the transaction ends.
pub async fn lock_balance(db: &PgPool, team_id: &str) -> Transaction<'static, Postgres> {
    let mut tx = db.begin().await.expect("begin");
    sqlx::query("select 1 from credit_balances where team_id = $1 for update")
        .bind(team_id)
        .execute(&mut *tx)
        .await
        .expect("lock");
    tx
}

/// Polls each request once, in order: each is then queued for its team's group (the first one's
/// flush waiting on the locked balance row).
pub async fn submit_all<T>(requests: &mut [Pending<'_, T>]) {
    for request in requests.iter_mut() {
        assert!(
            poll!(request.as_mut()).is_pending(),
            "answered while the balance row was locked"
        );
    }
}

/// How the first flush of a gathered group fares.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum FirstFlush {
    /// It runs once the balance row is unlocked.
    Runs,
    /// Its connection is ended while it waits on the locked balance row.
    Broken,
}

/// Sends every request while the team's balance row is locked, so that they gather in groups
/// behind the first flush (broken first if asked), then unlocks the row; the answers, in order.
pub async fn gathered<'a, T>(
    db: &PgPool,
    team_id: &str,
    mut requests: Vec<Pending<'a, T>>,
    first_flush: FirstFlush,
) -> Vec<T> {
    let lock = lock_balance(db, team_id).await;
    submit_all(&mut requests).await;
    if first_flush == FirstFlush::Broken {
        kill_the_blocked_flush(db).await;
    }
    lock.commit().await.expect("unlock");
    join_all(requests).await
}

/// A create request for each job, to be sent by `gathered`.
pub fn creates<'a>(
    credits: &'a JobCredits,
    new_jobs: &'a [NewJob<'a>],
) -> Vec<Pending<'a, Created>> {
    new_jobs
        .iter()
        .map(|job| Box::pin(credits.create(job)) as Pending<'_, _>)
        .collect()
}

/// `count` jobs of the team, each holding a credit, written directly; their ids in order.
pub async fn jobs_holding_credit(
    db: &PgPool,
    team_id: &str,
    job_type: &str,
    count: usize,
) -> Vec<uuid::Uuid> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let job =
            jobs::insert_holding_credit(db, &new_job(team_id, job_type, &serde_json::json!({})))
                .await
                .expect("insert")
                .expect("held");
        ids.push(job.job_id);
    }
    ids
}

pub fn new_job<'a>(
    team_id: &'a str,
    job_type: &'a str,
    metadata: &'a serde_json::Value,
) -> NewJob<'a> {
    NewJob {
        team_id,
        user_id: None,
        job_type,
        metadata,
        ttl_secs: 3_600,
        callback: None,
    }
}

/// The counters of the team's balance: allocated, used, reserved.
pub async fn balance(db: &PgPool, team_id: &str) -> (i64, i64, i64) {
    sqlx::query_as("select credits_allocated, credits_used, credits_reserved from credit_balances where team_id = $1")
        .bind(team_id)
        .fetch_one(db)
        .await
        .expect("balance")
}

/// Waits until a flush is blocked on the locked balance row, then ends its connection.
pub async fn kill_the_blocked_flush(db: &PgPool) {
    let pid: i32 = poll_for(Duration::from_secs(10), || async {
        sqlx::query_scalar(
            "select pid from pg_stat_activity
             where datname = current_database() and wait_event_type = 'Lock'
               and query like '%credit_balances%' and pid <> pg_backend_pid()",
        )
        .fetch_optional(db)
        .await
        .expect("activity")
    })
    .await
    .expect("no flush waited on the balance row");
    let ended: bool = sqlx::query_scalar("select pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(db)
        .await
        .expect("terminate");
    assert!(ended);
}
