//! Job creates and settlements served in per-team groups (`JobCredits`): the requests that
//! gather while a flush waits go together in the next one, first come first served; a request
//! that fails or finds its job settled already affects no other; a flush that fails for a reason
//! a retry fixes is retried without applying anything twice.
//!
//! The grouping is made certain, not left to timing: the test holds the team's balance row
//! locked while every request is submitted (each polled once, which queues it), so the first
//! flush waits on the lock and the rest gather behind it. Rows written in one transaction share
//! its `xmin`, which shows how many transactions served the requests.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::future::join_all;
use futures::poll;
use saasllm_shared::db::jobs::{self, Cancellation, JobRow, NewJob, Settlement};
use saasllm_shared::db::settlement::SettleAnswer;
use saasllm_shared::domain::status::JobStatus;
use saasllm_shared::group_commit::GroupError;
use saasllm_shared::job_credits::JobCredits;
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::helpers::app::{assert_ledger_consistent, count, spawn_app};

type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type Created = Result<Option<JobRow>, GroupError>;

/// A team with `credits`, set up through the API.
async fn team(db: &PgPool, team_id: &str, credits: i64) {
    spawn_app(db.clone())
        .await
        .team_with_key(team_id, credits)
        .await;
}

/// Locks the team's balance row until the transaction ends.
async fn lock_balance(db: &PgPool, team_id: &str) -> Transaction<'static, Postgres> {
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
async fn submit_all<T>(requests: &mut [Pending<'_, T>]) {
    for request in requests.iter_mut() {
        assert!(
            poll!(request.as_mut()).is_pending(),
            "answered while the balance row was locked"
        );
    }
}

fn new_job<'a>(team_id: &'a str, job_type: &'a str, metadata: &'a serde_json::Value) -> NewJob<'a> {
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
async fn balance(db: &PgPool, team_id: &str) -> (i64, i64, i64) {
    sqlx::query_as("select credits_allocated, credits_used, credits_reserved from credit_balances where team_id = $1")
        .bind(team_id)
        .fetch_one(db)
        .await
        .expect("balance")
}

/// Waits until a flush is blocked on the locked balance row, then ends its connection.
async fn kill_the_blocked_flush(db: &PgPool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let pid: i32 = loop {
        let blocked = sqlx::query_scalar(
            "select pid from pg_stat_activity
             where datname = current_database() and wait_event_type = 'Lock'
               and query like '%credit_balances%' and pid <> pg_backend_pid()",
        )
        .fetch_optional(db)
        .await
        .expect("activity");
        if let Some(pid) = blocked {
            break pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no flush waited on the balance row"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let ended: bool = sqlx::query_scalar("select pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(db)
        .await
        .expect("terminate");
    assert!(ended);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn creates_waiting_on_the_balance_row_go_in_one_group_first_come_first_served(db: PgPool) {
    team(&db, "team_group", 12).await;
    let credits = JobCredits::new(db.clone());
    let metadata = json!({});
    let new_jobs: Vec<NewJob<'_>> = (0..20)
        .map(|_| new_job("team_group", "grouped", &metadata))
        .collect();

    let lock = lock_balance(&db, "team_group").await;
    let mut creates: Vec<Pending<'_, Created>> = new_jobs
        .iter()
        .map(|job| Box::pin(credits.create(job)) as Pending<'_, _>)
        .collect();
    submit_all(&mut creates).await;
    lock.commit().await.expect("unlock");
    let created = join_all(creates).await;

    for (position, job) in created.iter().enumerate() {
        let job = job.as_ref().expect("no create failed");
        assert_eq!(
            job.is_some(),
            position < 12,
            "create {position}: first come first served"
        );
    }
    let (jobs, transactions): (i64, i64) = sqlx::query_as(
        "select count(*), count(distinct xmin::text) from jobs where team_id = 'team_group'",
    )
    .fetch_one(&db)
    .await
    .expect("jobs");
    assert_eq!(jobs, 12);
    assert!(
        transactions <= 2,
        "{transactions} transactions for one busy team's creates"
    );
    assert_eq!(balance(&db, "team_group").await, (12, 0, 12));
    assert_ledger_consistent(&db, "team_group").await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_settlement_group_answers_each_request_as_if_alone_and_charges_each_job_once(db: PgPool) {
    team(&db, "team_settle", 20).await;
    let credits = JobCredits::new(db.clone());
    let mut ids = Vec::new();
    for _ in 0..11 {
        let job = jobs::insert_holding_credit(&db, &new_job("team_settle", "settle", &json!({})))
            .await
            .expect("insert")
            .expect("held");
        ids.push(job.job_id);
    }
    // Jobs 0..=8 are being completed (8 as failed), 9 and 10 stay pending.
    for (index, id) in ids.iter().take(9).enumerate() {
        let requested = if index == 8 {
            JobStatus::Failed
        } else {
            JobStatus::Completed
        };
        jobs::mark_completing(&db, *id, requested, &json!({}), None)
            .await
            .expect("mark")
            .expect("open");
    }
    // Job 0 is settled before the group.
    assert_eq!(
        credits.settle("team_settle", ids[0]).await.expect("settle"),
        Settlement::Settled
    );

    let lock = lock_balance(&db, "team_settle").await;
    let settle = |id: Uuid| {
        let credits = &credits;
        Box::pin(async move {
            credits
                .settle("team_settle", id)
                .await
                .map(SettleAnswer::Complete)
        }) as Pending<'_, Result<SettleAnswer, GroupError>>
    };
    let cancel = |id: Uuid| {
        let credits = &credits;
        Box::pin(async move {
            credits
                .cancel("team_settle", id)
                .await
                .map(SettleAnswer::Cancel)
        }) as Pending<'_, Result<SettleAnswer, GroupError>>
    };
    let mut requests = vec![settle(ids[0])];
    requests.extend(ids[1..9].iter().map(|id| settle(*id)));
    requests.extend([
        settle(ids[1]),
        cancel(ids[2]),
        settle(ids[9]),
        cancel(ids[9]),
        cancel(ids[9]),
        cancel(Uuid::now_v7()),
    ]);
    submit_all(&mut requests).await;
    lock.commit().await.expect("unlock");
    let answers: Vec<SettleAnswer> = join_all(requests)
        .await
        .into_iter()
        .map(|a| a.expect("no request failed"))
        .collect();

    let not_completing = SettleAnswer::Complete(Settlement::NotCompleting);
    let mut expected = vec![not_completing];
    expected.extend([SettleAnswer::Complete(Settlement::Settled); 8]);
    expected.extend([
        not_completing,
        SettleAnswer::Cancel(Cancellation::Settled(JobStatus::Completed)),
        not_completing,
        SettleAnswer::Cancel(Cancellation::Cancelled { calls_cancelled: 0 }),
        SettleAnswer::Cancel(Cancellation::AlreadyCancelled),
        SettleAnswer::Cancel(Cancellation::NotFound),
    ]);
    assert_eq!(answers, expected);

    let states: Vec<(Uuid, String, String)> = sqlx::query_as(
        "select job_id, status, credit_hold from jobs where team_id = 'team_settle' order by job_id",
    )
    .fetch_all(&db)
    .await
    .expect("jobs");
    let state_of = |id: Uuid| {
        let (_, status, hold) = states.iter().find(|(j, _, _)| *j == id).expect("job");
        (status.as_str(), hold.as_str())
    };
    for id in &ids[0..8] {
        assert_eq!(state_of(*id), ("completed", "charged"));
    }
    assert_eq!(state_of(ids[8]), ("failed", "released"));
    assert_eq!(state_of(ids[9]), ("cancelled", "released"));
    assert_eq!(state_of(ids[10]), ("pending", "held"));
    let (deductions, per_job_max, transactions): (i64, i64, i64) = sqlx::query_as(
        "select count(*), coalesce(max(n), 0), count(distinct x) from (
             select count(*) over (partition by job_id) as n, xmin::text as x
             from credit_transactions where team_id = 'team_settle' and transaction_type = 'deduction'
               and job_id <> $1) t",
    )
    .bind(ids[0])
    .fetch_one(&db)
    .await
    .expect("ledger");
    assert_eq!((deductions, per_job_max), (7, 1), "each job charged once");
    assert!(
        transactions <= 2,
        "{transactions} transactions for one group of settlements"
    );
    assert_eq!(balance(&db, "team_settle").await, (20, 8, 1));
    assert_ledger_consistent(&db, "team_settle").await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_create_the_database_refuses_fails_alone_and_the_rest_of_its_group_is_served(db: PgPool) {
    team(&db, "team_refused", 30).await;
    let credits = JobCredits::new(db.clone());
    let metadata = json!({});
    // PostgreSQL refuses NUL in text: the group holding this job fails as a whole.
    let new_jobs: Vec<NewJob<'_>> = (0..20)
        .map(|i| {
            new_job(
                "team_refused",
                if i == 10 { "nul\0type" } else { "fine" },
                &metadata,
            )
        })
        .collect();

    let lock = lock_balance(&db, "team_refused").await;
    let mut creates: Vec<Pending<'_, Created>> = new_jobs
        .iter()
        .map(|job| Box::pin(credits.create(job)) as Pending<'_, _>)
        .collect();
    submit_all(&mut creates).await;
    lock.commit().await.expect("unlock");
    let created = join_all(creates).await;

    for (position, job) in created.into_iter().enumerate() {
        if position == 10 {
            let error = job
                .expect_err("NUL refused")
                .into_owned()
                .expect("its own error");
            let code = error
                .as_database_error()
                .and_then(|e| e.code())
                .map(|c| c.into_owned());
            assert_eq!(code.as_deref(), Some("22021"), "{error}");
        } else {
            assert!(job.expect("served").is_some(), "create {position}");
        }
    }
    assert_eq!(
        count(
            &db,
            "select count(*) from jobs where team_id = 'team_refused'"
        )
        .await,
        19
    );
    assert_eq!(balance(&db, "team_refused").await, (30, 0, 19));
    assert_ledger_consistent(&db, "team_refused").await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_group_of_creates_whose_connection_breaks_is_retried_and_held_once(db: PgPool) {
    team(&db, "team_retry", 10).await;
    let credits = JobCredits::new(db.clone());
    let metadata = json!({});
    let new_jobs: Vec<NewJob<'_>> = (0..8)
        .map(|_| new_job("team_retry", "retried", &metadata))
        .collect();

    let lock = lock_balance(&db, "team_retry").await;
    let mut creates: Vec<Pending<'_, Created>> = new_jobs
        .iter()
        .map(|job| Box::pin(credits.create(job)) as Pending<'_, _>)
        .collect();
    submit_all(&mut creates).await;
    // The flush waits for the balance row: ending its connection fails its statement, and the
    // retry holds the credits once.
    kill_the_blocked_flush(&db).await;
    lock.commit().await.expect("unlock");
    let created = join_all(creates).await;

    for (position, job) in created.iter().enumerate() {
        assert!(
            job.as_ref()
                .expect("a broken connection is retried")
                .is_some(),
            "create {position}"
        );
    }
    assert_eq!(
        count(
            &db,
            "select count(*) from jobs where team_id = 'team_retry'"
        )
        .await,
        8
    );
    assert_eq!(balance(&db, "team_retry").await, (10, 0, 8));
    assert_ledger_consistent(&db, "team_retry").await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_group_of_settlements_whose_connection_breaks_is_retried_and_charged_once(db: PgPool) {
    team(&db, "team_resettle", 10).await;
    let credits = JobCredits::new(db.clone());
    let completed = JobStatus::Completed;
    let mut ids = Vec::new();
    for _ in 0..6 {
        let job = jobs::insert_holding_credit(&db, &new_job("team_resettle", "settle", &json!({})))
            .await
            .expect("insert")
            .expect("held");
        jobs::mark_completing(&db, job.job_id, completed, &json!({}), None)
            .await
            .expect("mark")
            .expect("open");
        ids.push(job.job_id);
    }

    let lock = lock_balance(&db, "team_resettle").await;
    let mut settles: Vec<Pending<'_, Result<Settlement, GroupError>>> = ids
        .iter()
        .map(|id| Box::pin(credits.settle("team_resettle", *id)) as Pending<'_, _>)
        .collect();
    submit_all(&mut settles).await;
    // The flush has moved its jobs and waits for the balance row: ending its connection rolls
    // all of it back, and the retry settles them again, once.
    kill_the_blocked_flush(&db).await;
    lock.commit().await.expect("unlock");
    let answers = join_all(settles).await;

    for answer in answers {
        assert_eq!(
            answer.expect("a broken connection is retried"),
            Settlement::Settled
        );
    }
    let (charged, deductions): (i64, i64) = sqlx::query_as(
        "select (select count(*) from jobs where team_id = 'team_resettle' and credit_hold = 'charged'),
                (select count(*) from credit_transactions where team_id = 'team_resettle' and transaction_type = 'deduction')",
    )
    .fetch_one(&db)
    .await
    .expect("counts");
    assert_eq!((charged, deductions), (6, 6));
    assert_eq!(balance(&db, "team_resettle").await, (10, 6, 0));
    assert_ledger_consistent(&db, "team_resettle").await;
}
