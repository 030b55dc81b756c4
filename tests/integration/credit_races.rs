//! Hundreds of concurrent creates, completes and cancels of one team across two API processes
//! over the same database (each gathering its own groups): no credit is overdrawn, each job is
//! charged at most once and exactly when its answers say so, and the ledger stays the history of
//! the balance.

use std::collections::HashMap;

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::{TestApp, assert_ledger_consistent, count, spawn_app};

const CREATES: usize = 400;
const CREDITS: i64 = 150;

/// What a job's answers say its final state is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Charged,
    Released,
    Cancelled,
    Open,
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request sent");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

async fn complete(app: &TestApp, key: &str, job_id: &str, status: &str) -> (StatusCode, Value) {
    let path = format!("/api/jobs/{job_id}/complete");
    send(
        app.with_key(key, Method::POST, &path)
            .json(&json!({"status": status})),
    )
    .await
}

async fn cancel(app: &TestApp, key: &str, job_id: &str) -> (StatusCode, Value) {
    send(app.with_key(key, Method::POST, &format!("/api/jobs/{job_id}/cancel"))).await
}

/// Asserts no job of the team has more than one deduction.
async fn assert_no_job_charged_twice(db: &PgPool, team_id: &str) {
    let charged_twice: i64 = sqlx::query_scalar(
        "select count(*) from (select job_id from credit_transactions
         where team_id = $1 and transaction_type = 'deduction'
         group by job_id having count(*) > 1) t",
    )
    .bind(team_id)
    .fetch_one(db)
    .await
    .expect("deductions");
    assert_eq!(charged_twice, 0);
}

/// Creates a job through one app and, if it got a credit, settles it through the other in the
/// way its number picks; returns the job and what its answers say became of it.
async fn lifecycle(apps: [&TestApp; 2], key: &str, n: usize) -> Option<(String, Expected)> {
    let (creator, other) = (apps[n % 2], apps[(n + 1) % 2]);
    let body = json!({"team_id": "team_hot", "job_type": "race"});
    let (status, created) = send(
        creator
            .with_key(key, Method::POST, "/api/jobs/create")
            .json(&body),
    )
    .await;
    if status == StatusCode::PAYMENT_REQUIRED {
        return None;
    }
    assert_eq!(status, StatusCode::OK, "create {n}: {created}");
    let job_id = created["job_id"].as_str().expect("job_id").to_owned();
    let context = format!("job {n} ({job_id})");
    let expected = match n % 6 {
        0 => {
            let (status, body) = complete(other, key, &job_id, "completed").await;
            assert_eq!(status, StatusCode::OK, "{context}: {body}");
            assert_eq!(body["costs"]["credit_applied"], true, "{context}: {body}");
            Expected::Charged
        }
        1 => {
            let (status, body) = complete(other, key, &job_id, "failed").await;
            assert_eq!(status, StatusCode::OK, "{context}: {body}");
            assert_eq!(body["costs"]["credit_applied"], false, "{context}: {body}");
            Expected::Released
        }
        2 => {
            let (status, body) = cancel(other, key, &job_id).await;
            assert_eq!(status, StatusCode::OK, "{context}: {body}");
            Expected::Cancelled
        }
        3 => {
            // Complete and cancel race, one through each app: exactly one wins.
            let ((completed, c_body), (cancelled, x_body)) = tokio::join!(
                complete(creator, key, &job_id, "completed"),
                cancel(other, key, &job_id)
            );
            match (completed, cancelled) {
                (StatusCode::OK, StatusCode::CONFLICT) => Expected::Charged,
                (StatusCode::CONFLICT, StatusCode::OK) => Expected::Cancelled,
                other => {
                    panic!("{context}: complete and cancel answered {other:?}: {c_body} {x_body}")
                }
            }
        }
        4 => {
            // The same completion twice at once, one through each app: both see it settled.
            let ((first, f_body), (second, s_body)) = tokio::join!(
                complete(creator, key, &job_id, "completed"),
                complete(other, key, &job_id, "completed")
            );
            assert_eq!(
                (first, second),
                (StatusCode::OK, StatusCode::OK),
                "{context}: {f_body} {s_body}"
            );
            Expected::Charged
        }
        _ => Expected::Open,
    };
    Some((job_id, expected))
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn concurrent_lifecycles_across_two_apps_never_overdraw_nor_charge_twice(db: PgPool) {
    let first = spawn_app(db.clone()).await;
    let second = spawn_app(db.clone()).await;
    let key = first.team_with_key("team_hot", CREDITS).await;

    let outcomes = join_all((0..CREATES).map(|n| lifecycle([&first, &second], &key, n))).await;
    let jobs: HashMap<String, Expected> = outcomes.into_iter().flatten().collect();
    let refused = CREATES - jobs.len();

    // Every credit still held or charged was there: at most the allocation, and with this many
    // creates for it, some were refused.
    assert!(refused > 0, "every create got a credit");
    let stored: Vec<(String, String, String)> = sqlx::query_as(
        "select job_id::text, status, credit_hold from jobs where team_id = 'team_hot'",
    )
    .fetch_all(&db)
    .await
    .expect("jobs");
    assert_eq!(stored.len(), jobs.len(), "one job per successful create");
    for (job_id, status, hold) in &stored {
        let expected = match (status.as_str(), hold.as_str()) {
            ("completed", "charged") => Expected::Charged,
            ("failed", "released") => Expected::Released,
            ("cancelled", "released") => Expected::Cancelled,
            ("pending", "held") => Expected::Open,
            other => panic!("job {job_id} left as {other:?}"),
        };
        assert_eq!(jobs.get(job_id), Some(&expected), "job {job_id}");
    }
    let of = |kind: Expected| jobs.values().filter(|e| **e == kind).count() as i64;
    let (allocated, used, reserved): (i64, i64, i64) = sqlx::query_as(
        "select credits_allocated, credits_used, credits_reserved from credit_balances where team_id = 'team_hot'",
    )
    .fetch_one(&db)
    .await
    .expect("balance");
    assert_eq!(
        (allocated, used, reserved),
        (CREDITS, of(Expected::Charged), of(Expected::Open))
    );
    assert!(used + reserved <= allocated);
    assert_no_job_charged_twice(&db, "team_hot").await;
    assert_ledger_consistent(&db, "team_hot").await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn two_hundred_creates_on_fifty_credits_across_two_apps_get_exactly_fifty_jobs(db: PgPool) {
    let first = spawn_app(db.clone()).await;
    let second = spawn_app(db.clone()).await;
    let key = first.team_with_key("team_scarce", 50).await;
    let body = json!({"team_id": "team_scarce", "job_type": "scarce"});

    let answers = join_all((0..200).map(|n| {
        let app = if n % 2 == 0 { &first } else { &second };
        send(
            app.with_key(&key, Method::POST, "/api/jobs/create")
                .json(&body),
        )
    }))
    .await;

    let created = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::PAYMENT_REQUIRED)
        .map(|(_, body)| body)
        .collect();
    assert_eq!((created, refused.len()), (50, 150), "{answers:?}");
    for body in refused {
        assert_eq!(
            body["detail"],
            "Insufficient credits. Required: 1, Available: 0"
        );
    }
    let balance: (i64, i64, i64) = sqlx::query_as(
        "select credits_allocated, credits_used, credits_reserved from credit_balances where team_id = 'team_scarce'",
    )
    .fetch_one(&db)
    .await
    .expect("balance");
    assert_eq!(balance, (50, 0, 50));
    assert_eq!(
        count(
            &db,
            "select count(*) from jobs where team_id = 'team_scarce'"
        )
        .await,
        50
    );
    assert_ledger_consistent(&db, "team_scarce").await;
}

/// `n` jobs of `team_expiry`, created through the two apps in turn; their ids.
async fn jobs_through_both(apps: [&TestApp; 2], key: &str, n: usize) -> Vec<String> {
    let body = json!({"team_id": "team_expiry", "job_type": "racing"});
    let mut job_ids = Vec::new();
    for i in 0..n {
        let (status, job) = send(
            apps[i % 2]
                .with_key(key, Method::POST, "/api/jobs/create")
                .json(&body),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{job}");
        job_ids.push(job["job_id"].as_str().expect("job_id").to_owned());
    }
    job_ids
}

/// Four concurrent expiry loops of 20 passes each over the overdue jobs; how many they expired.
async fn expire_in_passes(db: &PgPool) -> u64 {
    let expiries = join_all((0..4).map(|_| async {
        let mut expired = 0;
        for _ in 0..20 {
            expired += saasllm_shared::db::jobs::expire_overdue(db, 5)
                .await
                .expect("expiry");
            tokio::task::yield_now().await;
        }
        expired
    }));
    expiries.await.into_iter().sum()
}

/// A job, whether its client cancelled it (or else completed it), and the answer it got.
type ClientAnswer = (String, bool, (StatusCode, Value));

/// Asserts each job ended as its client's answer allows: charged only if its complete
/// succeeded, cancelled only if its cancel did, expired only if the client was refused or told
/// so.
async fn assert_each_job_ended_as_answered(db: &PgPool, answers: &[ClientAnswer]) {
    for (job_id, cancelled, (status, answer)) in answers {
        let (job_status, hold): (String, String) =
            sqlx::query_as("select status, credit_hold from jobs where job_id = $1::uuid")
                .bind(job_id)
                .fetch_one(db)
                .await
                .expect("job");
        match (job_status.as_str(), hold.as_str()) {
            ("completed", "charged") => assert!(
                !cancelled && status.is_success(),
                "job {job_id} charged although its client got {status} {answer}"
            ),
            ("cancelled", "released") => assert!(*cancelled && status.is_success()),
            ("expired", "released") => assert!(
                !status.is_success() || answer["status"] == "expired",
                "job {job_id} expired although its client got {status} {answer}"
            ),
            other => panic!("job {job_id} left as {other:?} ({status} {answer})"),
        }
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn expiry_racing_completes_and_cancels_across_two_apps_settles_each_job_once(db: PgPool) {
    let first = spawn_app(db.clone()).await;
    let second = spawn_app(db.clone()).await;
    let key = first.team_with_key("team_expiry", 100).await;
    let job_ids = jobs_through_both([&first, &second], &key, 60).await;
    // Every job is past its TTL: the reconciler's expiry races the clients' completes and cancels.
    sqlx::query(
        "update jobs set expires_at = now() - interval '1 second' where team_id = 'team_expiry'",
    )
    .execute(&db)
    .await
    .expect("past TTL");

    let clients = join_all(job_ids.iter().enumerate().map(|(n, job_id)| {
        let app = if n % 2 == 0 { &second } else { &first };
        let key = &key;
        async move {
            let answer = if n % 3 == 0 {
                cancel(app, key, job_id).await
            } else {
                complete(app, key, job_id, "completed").await
            };
            (job_id.clone(), n % 3 == 0, answer)
        }
    }));
    let (answers, expired) = tokio::join!(clients, expire_in_passes(&db));
    // Whatever the clients did not settle, expiry does.
    while saasllm_shared::db::jobs::expire_overdue(&db, 100)
        .await
        .expect("expiry")
        > 0
    {}

    assert_each_job_ended_as_answered(&db, &answers).await;
    let charged = count(
        &db,
        "select count(*) from jobs where team_id = 'team_expiry' and credit_hold = 'charged'",
    )
    .await;
    let (used, reserved): (i64, i64) = sqlx::query_as(
        "select credits_used, credits_reserved from credit_balances where team_id = 'team_expiry'",
    )
    .fetch_one(&db)
    .await
    .expect("balance");
    assert_eq!((used, reserved), (charged, 0));
    assert!(
        expired > 0 || charged < 40,
        "the expiry never raced anything"
    );
    assert_no_job_charged_twice(&db, "team_expiry").await;
    assert_ledger_consistent(&db, "team_expiry").await;
}
