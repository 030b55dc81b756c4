//! Failed group flushes: a request the database refuses fails alone and the rest of its group is
//! served; a flush whose connection breaks is retried without holding or charging twice.

use saasllm_shared::db::jobs::{self, NewJob, Settlement};
use saasllm_shared::domain::status::JobStatus;
use saasllm_shared::group_commit::GroupError;
use saasllm_shared::job_credits::JobCredits;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::app::{assert_ledger_consistent, count};
use crate::helpers::groups::{
    FirstFlush, Pending, balance, creates, gathered, jobs_holding_credit, new_job, team,
};

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

    let requests = creates(&credits, &new_jobs);
    let created = gathered(&db, "team_refused", requests, FirstFlush::Runs).await;

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

    // The flush waits for the balance row: ending its connection fails its statement, and the
    // retry holds the credits once.
    let requests = creates(&credits, &new_jobs);
    let created = gathered(&db, "team_retry", requests, FirstFlush::Broken).await;

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
    let ids = jobs_holding_credit(&db, "team_resettle", "settle", 6).await;
    for id in &ids {
        jobs::mark_completing(&db, *id, completed, &json!({}), None)
            .await
            .expect("mark")
            .expect("open");
    }

    let settles: Vec<Pending<'_, Result<Settlement, GroupError>>> = ids
        .iter()
        .map(|id| Box::pin(credits.settle("team_resettle", *id)) as Pending<'_, _>)
        .collect();
    // The flush has moved its jobs and waits for the balance row: ending its connection rolls
    // all of it back, and the retry settles them again, once.
    let answers = gathered(&db, "team_resettle", settles, FirstFlush::Broken).await;

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
