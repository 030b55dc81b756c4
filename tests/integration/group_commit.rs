//! Job creates and settlements served in per-team groups (`JobCredits`): the requests that
//! gather while a flush waits go together in the next one, first come first served, and a
//! request that finds its job settled already affects no other. Rows written in one transaction
//! share its `xmin`, which shows how many transactions served the requests.

use saasllm_shared::db::jobs::{self, Cancellation, NewJob, Settlement};
use saasllm_shared::db::settlement::SettleAnswer;
use saasllm_shared::domain::status::JobStatus;
use saasllm_shared::group_commit::GroupError;
use saasllm_shared::job_credits::JobCredits;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::app::assert_ledger_consistent;
use crate::helpers::groups::{
    FirstFlush, Pending, balance, creates, gathered, jobs_holding_credit, new_job, team,
};

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn creates_waiting_on_the_balance_row_go_in_one_group_first_come_first_served(db: PgPool) {
    team(&db, "team_group", 12).await;
    let credits = JobCredits::new(db.clone());
    let metadata = json!({});
    let new_jobs: Vec<NewJob<'_>> = (0..20)
        .map(|_| new_job("team_group", "grouped", &metadata))
        .collect();

    let requests = creates(&credits, &new_jobs);
    let created = gathered(&db, "team_group", requests, FirstFlush::Runs).await;

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

/// A settlement request of the group: a completion's settlement or a cancel.
#[derive(Clone, Copy)]
enum Ask {
    Settle,
    Cancel,
}

fn settle_request(
    credits: &JobCredits,
    ask: Ask,
    id: Uuid,
) -> Pending<'_, Result<SettleAnswer, GroupError>> {
    Box::pin(async move {
        match ask {
            Ask::Settle => credits
                .settle("team_settle", id)
                .await
                .map(SettleAnswer::Complete),
            Ask::Cancel => credits
                .cancel("team_settle", id)
                .await
                .map(SettleAnswer::Cancel),
        }
    })
}

/// Eleven jobs of `team_settle`, each holding a credit: 0..=8 are being completed (8 as
/// failed), 9 and 10 stay pending; job 0 is settled already.
async fn eleven_jobs_one_settled(db: &PgPool, credits: &JobCredits) -> Vec<Uuid> {
    let ids = jobs_holding_credit(db, "team_settle", "settle", 11).await;
    for (index, id) in ids.iter().take(9).enumerate() {
        let requested = if index == 8 {
            JobStatus::Failed
        } else {
            JobStatus::Completed
        };
        jobs::mark_completing(db, *id, requested, &json!({}), None)
            .await
            .expect("mark")
            .expect("open");
    }
    assert_eq!(
        credits.settle("team_settle", ids[0]).await.expect("settle"),
        Settlement::Settled
    );
    ids
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_settlement_group_answers_each_request_as_if_alone_and_charges_each_job_once(db: PgPool) {
    team(&db, "team_settle", 20).await;
    let credits = JobCredits::new(db.clone());
    let ids = eleven_jobs_one_settled(&db, &credits).await;

    let mut asks = vec![(Ask::Settle, ids[0])];
    asks.extend(ids[1..9].iter().map(|id| (Ask::Settle, *id)));
    asks.extend([
        (Ask::Settle, ids[1]),
        (Ask::Cancel, ids[2]),
        (Ask::Settle, ids[9]),
        (Ask::Cancel, ids[9]),
        (Ask::Cancel, ids[9]),
        (Ask::Cancel, Uuid::now_v7()),
    ]);
    let requests = asks
        .into_iter()
        .map(|(ask, id)| settle_request(&credits, ask, id))
        .collect();
    let answers: Vec<SettleAnswer> = gathered(&db, "team_settle", requests, FirstFlush::Runs)
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
    assert_each_job_settled_once(&db, &ids).await;
}

/// The states and ledger after the settlement group: jobs 0..=7 charged once each (0 before the
/// group), 8 failed and 9 cancelled with their holds released, 10 still holding, all charges of
/// the group written in at most two transactions.
async fn assert_each_job_settled_once(db: &PgPool, ids: &[Uuid]) {
    let states: Vec<(Uuid, String, String)> = sqlx::query_as(
        "select job_id, status, credit_hold from jobs where team_id = 'team_settle' order by job_id",
    )
    .fetch_all(db)
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
    .fetch_one(db)
    .await
    .expect("ledger");
    assert_eq!((deductions, per_job_max), (7, 1), "each job charged once");
    assert!(
        transactions <= 2,
        "{transactions} transactions for one group of settlements"
    );
    assert_eq!(balance(db, "team_settle").await, (20, 8, 1));
    assert_ledger_consistent(db, "team_settle").await;
}
