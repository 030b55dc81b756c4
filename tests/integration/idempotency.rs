//! `Idempotency-Key`: a retried request returns the first response and has no second effect.

use futures::future::join_all;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::TestApp;
use crate::helpers::app::{assert_ledger_consistent, error_detail, ok_json};
use crate::helpers::fixtures::requests::is_replayed;
use crate::helpers::stack::{chat, spawn_stack};
use crate::helpers::team_jobs::team_with_job;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn ten_concurrent_identical_job_creations_create_one_job(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_i", 20, &[("ChatAgent", &["gpt-4o"])])
        .await;
    let body = json!({"team_id": "team_i", "job_type": "document_analysis"});

    let responses = join_all((0..10).map(|_| {
        stack
            .app
            .with_key(&key, Method::POST, "/api/jobs/create")
            .header("Idempotency-Key", "create-1")
            .json(&body)
            .send()
    }))
    .await;
    let mut job_ids = Vec::new();
    for response in responses {
        job_ids.push(
            ok_json(response).await["job_id"]
                .as_str()
                .expect("job_id")
                .to_owned(),
        );
    }

    assert!(job_ids.iter().all(|id| *id == job_ids[0]), "{job_ids:?}");
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(jobs, 1);
    let balance_path = "/api/credits/teams/team_i/balance";
    let balance = stack.app.key_ok(&key, Method::GET, balance_path).await;
    assert_eq!(balance["credits_reserved"], 1);
    let mismatch = error_detail(
        stack
            .app
            .with_key(&key, Method::POST, "/api/jobs/create")
            .header("Idempotency-Key", "create-1")
            .json(&json!({"team_id": "team_i", "job_type": "other"}))
            .send()
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(mismatch.contains("different request"), "{mismatch}");
    assert_ledger_consistent(&db, "team_i").await;
}

/// `POST path` with this `Idempotency-Key` and body, sent with the team's key or, without one,
/// the admin key.
fn idempotent_post(
    app: &TestApp,
    key: Option<&str>,
    path: &str,
    idempotency_key: &str,
    body: &Value,
) -> RequestBuilder {
    let request = match key {
        Some(key) => app.with_key(key, Method::POST, path),
        None => app.admin(Method::POST, path),
    };
    request
        .header("Idempotency-Key", idempotency_key)
        .json(body)
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn retried_llm_call_complete_and_credit_addition_have_one_effect(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let (key, job_id) = team_with_job(&stack, "team_j", 5, &[("ChatAgent", &["gpt-4o"])]).await;
    let call_path = format!("/api/jobs/{job_id}/llm-call");
    let call = || {
        idempotent_post(
            &stack.app,
            Some(&key),
            &call_path,
            "call-1",
            &chat("ChatAgent", "once"),
        )
    };

    let first = ok_json(call().send().await).await;
    let retry = call().send().await.expect("sent");
    assert!(is_replayed(&retry));
    let retry: Value = retry.json().await.expect("json");
    assert_eq!(retry, first);
    assert_eq!(stack.llm.total_requests(), 1);

    let complete_path = format!("/api/jobs/{job_id}/complete");
    let complete = || {
        idempotent_post(
            &stack.app,
            Some(&key),
            &complete_path,
            "done-1",
            &json!({"status": "completed"}),
        )
    };
    let done = ok_json(complete().send().await).await;
    let again = ok_json(complete().send().await).await;
    assert_eq!(done, again);

    for _ in 0..3 {
        let add = json!({"credits_amount": 10});
        let path = "/api/credits/teams/team_j/add";
        ok_json(
            idempotent_post(&stack.app, None, path, "refill-1", &add)
                .send()
                .await,
        )
        .await;
    }
    let balance = stack
        .app
        .admin_ok(Method::GET, "/api/credits/teams/team_j/balance")
        .await;
    assert_eq!(balance["credits_allocated"], 15);
    assert_eq!(balance["credits_used"], 1);
    let calls: i64 = sqlx::query_scalar("select count(*) from llm_calls")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(calls, 1);
    assert_ledger_consistent(&db, "team_j").await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn idempotency_keys_are_scoped_to_the_api_key(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key_a = stack
        .team("team_sa", 5, &[("ChatAgent", &["gpt-4o"])])
        .await;
    let key_b = stack
        .team("team_sb", 5, &[("ChatAgent", &["gpt-4o"])])
        .await;

    for (key, team) in [(&key_a, "team_sa"), (&key_b, "team_sb")] {
        ok_json(
            stack
                .app
                .with_key(key, Method::POST, "/api/jobs/create")
                .header("Idempotency-Key", "same-key")
                .json(&json!({"team_id": team, "job_type": "x"}))
                .send()
                .await,
        )
        .await;
    }

    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(jobs, 2, "each team's key is its own namespace");
}
