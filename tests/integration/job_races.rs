//! `complete` and `cancel` racing on the same job: exactly one of them wins, the loser answers
//! 409, and the ledger charges exactly the jobs that completed.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::assert_ledger_consistent;
use crate::helpers::stack::{Stack, chat, spawn_stack};

const ROUNDS: usize = 30;

/// How a round is arranged: whether the job has a call still running (so `complete` waits for
/// it), and how long `cancel` is held back so that `complete` is already waiting.
fn arrangement(round: usize) -> (bool, Duration) {
    match round % 3 {
        0 => (false, Duration::ZERO),
        1 => (true, Duration::from_millis(60)),
        _ => (true, Duration::ZERO),
    }
}

async fn status_and_body(response: reqwest::Result<reqwest::Response>) -> (StatusCode, Value) {
    let response = response.expect("request sent");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

/// What one side of the race was answered.
type Answer = (StatusCode, Value);

/// A new job of the team, arranged as `round` says, then `complete` and `cancel` sent on it at
/// once: the job and both answers.
async fn race(stack: &Stack, key: &str, round: usize) -> (String, Answer, Answer) {
    let job_id = stack.create_job(key, "team_race").await;
    let (with_call, cancel_delay) = arrangement(round);
    if with_call {
        let mut body = chat("Slow", "keep the job busy");
        body["async"] = json!(true);
        let accepted = stack.llm_call(key, &job_id, body).await;
        assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    }
    let complete = stack
        .app
        .with_key(key, Method::POST, &format!("/api/jobs/{job_id}/complete"))
        .json(&json!({"status": "completed"}))
        .send();
    let cancel = async {
        // The stagger is the arrangement under test: `complete` exposes no sign that it has
        // begun waiting for the running call, so `cancel` is held back for a while instead.
        tokio::time::sleep(cancel_delay).await;
        stack
            .app
            .with_key(key, Method::POST, &format!("/api/jobs/{job_id}/cancel"))
            .send()
            .await
    };
    let (complete, cancel) = tokio::join!(complete, cancel);
    let complete = status_and_body(complete).await;
    let cancel = status_and_body(cancel).await;
    (job_id, complete, cancel)
}

/// Asserts exactly one side won, as both the answers and the stored job say; whether it was
/// `complete`.
fn complete_won(complete: &Answer, cancel: &Answer, stored: &str, round: usize) -> bool {
    let ((complete_status, complete_body), (cancel_status, cancel_body)) = (complete, cancel);
    let context = format!(
        "round {round}: complete {complete_status} {complete_body}, cancel {cancel_status} {cancel_body}"
    );
    match *complete_status {
        StatusCode::OK => {
            assert_eq!(complete_body["status"], "completed", "{context}");
            assert_eq!(complete_body["costs"]["credit_applied"], true, "{context}");
            assert_eq!(*cancel_status, StatusCode::CONFLICT, "{context}");
            assert_eq!(stored, "completed", "{context}");
            true
        }
        StatusCode::CONFLICT => {
            assert!(
                complete_body["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("was cancelled")),
                "{context}"
            );
            assert_eq!(*cancel_status, StatusCode::OK, "{context}");
            assert_eq!(cancel_body["status"], "cancelled", "{context}");
            assert_eq!(stored, "cancelled", "{context}");
            false
        }
        other => panic!("complete answered {other}; {context}"),
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn complete_racing_cancel_never_answers_200_for_a_cancelled_job(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_race", 100, &[("Slow", &["slow-300"])])
        .await;
    let mut completed = 0;

    for round in 0..ROUNDS {
        let (job_id, complete, cancel) = race(&stack, &key, round).await;
        let stored: String =
            sqlx::query_scalar("select status::text from jobs where job_id = $1::uuid")
                .bind(&job_id)
                .fetch_one(&db)
                .await
                .expect("job");
        if complete_won(&complete, &cancel, &stored, round) {
            completed += 1;
        }
    }

    let deductions: i64 = sqlx::query_scalar(
        "select count(*) from credit_transactions where team_id = 'team_race' and transaction_type = 'deduction'",
    )
    .fetch_one(&db)
    .await
    .expect("deductions");
    let charged_jobs: i64 = sqlx::query_scalar(
        "select count(*) from jobs where team_id = 'team_race' and credit_hold = 'charged'",
    )
    .fetch_one(&db)
    .await
    .expect("charged");
    let (used, reserved): (i64, i64) = sqlx::query_as(
        "select credits_used, credits_reserved from credit_balances where team_id = 'team_race'",
    )
    .fetch_one(&db)
    .await
    .expect("balance");
    assert_eq!(deductions, completed);
    assert_eq!(charged_jobs, completed);
    assert_eq!(used, completed);
    assert_eq!(reserved, 0);
    assert_ledger_consistent(&db, "team_race").await;
}
