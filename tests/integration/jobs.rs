//! Jobs: credit holds at creation, settlement at completion (exactly once), tenancy. This file
//! holds creation, charging and expiry; `completion` concurrent and waiting completes, `tenancy`
//! other teams and the job list.

use std::time::Duration;

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::app::{assert_ledger_consistent, error_detail, ok_json};
use crate::helpers::stack::{chat, eventually, spawn_stack};

mod completion;
mod tenancy;

pub(super) const CHAT: (&str, &[&str]) = ("ChatAgent", &["gpt-3.5-turbo", "gpt-4"]);

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn guide_flow_charges_one_credit_for_a_job_with_two_calls(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack.team("team_engineering", 1000, &[CHAT]).await;

    let job_id = stack.create_job(&key, "team_engineering").await;
    let first = ok_json(Ok(stack
        .llm_call(&key, &job_id, chat("ChatAgent", "Parse this resume"))
        .await))
    .await;
    let second = ok_json(Ok(stack
        .llm_call(&key, &job_id, chat("ChatAgent", "Analyze it"))
        .await))
    .await;
    let completion = ok_json(Ok(stack.complete(&key, &job_id, "completed").await)).await;

    for call in [&first, &second] {
        assert!(call["call_id"].is_string());
        assert!(
            call["response"]["content"]
                .as_str()
                .expect("content")
                .starts_with("echo: ")
        );
        assert_eq!(call["response"]["finish_reason"], "stop");
        assert!(call["metadata"]["tokens_used"].as_i64().expect("tokens") > 0);
        assert_eq!(call["metadata"]["model_group"], "ChatAgent");
        assert!(
            call.get("model").is_none() && call["metadata"].get("model").is_none(),
            "model must not leak"
        );
    }
    assert_eq!(completion["status"], "completed");
    assert_eq!(completion["costs"]["total_calls"], 2);
    assert_eq!(completion["costs"]["successful_calls"], 2);
    assert_eq!(completion["costs"]["failed_calls"], 0);
    assert_eq!(completion["costs"]["credit_applied"], true);
    assert_eq!(completion["costs"]["credits_remaining"], 999);
    assert!(
        completion["costs"]["total_cost_usd"]
            .as_f64()
            .expect("cost")
            > 0.0
    );
    assert_eq!(completion["calls"].as_array().expect("calls").len(), 2);
    let balance = ok_json(
        stack
            .app
            .with_key(
                &key,
                Method::GET,
                "/api/credits/teams/team_engineering/balance",
            )
            .send()
            .await,
    )
    .await;
    assert_eq!(balance["credits_remaining"], 999);
    assert_eq!(balance["credits_reserved"], 0);
    assert_eq!(stack.llm.count_for_model("gpt-3.5-turbo"), 2);
    assert_eq!(stack.llm.count_for_model("gpt-4"), 0);
    let deductions: i64 = sqlx::query_scalar(
        "select count(*) from credit_transactions where job_id = $1::uuid and transaction_type = 'deduction'",
    )
    .bind(&job_id)
    .fetch_one(&db)
    .await
    .expect("count");
    assert_eq!(deductions, 1);
    assert_ledger_consistent(&db, "team_engineering").await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn job_creation_holds_a_credit_and_refuses_with_402_when_none_is_available(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack.team("team_a", 1, &[CHAT]).await;

    let job = ok_json(
        stack
            .app
            .with_key(&key, Method::POST, "/api/jobs/create")
            .json(&json!({"team_id": "team_a", "user_id": "user_123", "job_type": "document_analysis"}))
            .send()
            .await,
    )
    .await;
    let refused = error_detail(
        stack
            .app
            .with_key(&key, Method::POST, "/api/jobs/create")
            .json(&json!({"team_id": "team_a", "job_type": "document_analysis"}))
            .send()
            .await,
        StatusCode::PAYMENT_REQUIRED,
    )
    .await;

    assert_eq!(job["status"], "pending");
    assert!(job["created_at"].is_string());
    assert_eq!(refused, "Insufficient credits. Required: 1, Available: 0");
    let balance = ok_json(
        stack
            .app
            .admin(Method::GET, "/api/credits/teams/team_a/balance")
            .send()
            .await,
    )
    .await;
    assert_eq!(balance["credits_remaining"], 1);
    assert_eq!(balance["credits_reserved"], 1);
    assert_eq!(balance["credits_available"], 0);
    assert_ledger_consistent(&db, "team_a").await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn two_hundred_concurrent_job_creations_on_fifty_credits_admit_exactly_fifty(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack.team("team_busy", 50, &[CHAT]).await;

    let attempts = (0..200).map(|_| {
        stack
            .app
            .with_key(&key, Method::POST, "/api/jobs/create")
            .json(&json!({"team_id": "team_busy", "job_type": "burst"}))
            .send()
    });
    let statuses: Vec<StatusCode> = join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.expect("request").status())
        .collect();

    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        50
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::PAYMENT_REQUIRED)
            .count(),
        150
    );
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs where team_id = 'team_busy'")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(jobs, 50);
    assert_ledger_consistent(&db, "team_busy").await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn failed_jobs_and_jobs_with_a_failed_call_are_not_charged_and_release_the_hold(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_f", 10, &[CHAT, ("Broken", &["bad-400"])])
        .await;

    let failed_job = stack.create_job(&key, "team_f").await;
    let failed = ok_json(Ok(stack.complete(&key, &failed_job, "failed").await)).await;
    let job_with_failed_call = stack.create_job(&key, "team_f").await;
    let call = stack
        .llm_call(&key, &job_with_failed_call, chat("Broken", "hello"))
        .await;
    assert_eq!(call.status(), StatusCode::BAD_GATEWAY);
    let completed = ok_json(Ok(stack
        .complete(&key, &job_with_failed_call, "completed")
        .await))
    .await;

    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["costs"]["credit_applied"], false);
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["costs"]["failed_calls"], 1);
    assert_eq!(completed["costs"]["credit_applied"], false);
    assert_eq!(completed["costs"]["credits_remaining"], 10);
    let balance = ok_json(
        stack
            .app
            .admin(Method::GET, "/api/credits/teams/team_f/balance")
            .send()
            .await,
    )
    .await;
    assert_eq!(balance["credits_used"], 0);
    assert_eq!(balance["credits_reserved"], 0);
    assert_ledger_consistent(&db, "team_f").await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn jobs_past_their_ttl_expire_and_release_the_hold(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack.team("team_z", 2, &[CHAT]).await;
    let job_id = stack.create_job(&key, "team_z").await;
    sqlx::query("update jobs set expires_at = now() - interval '1 second' where job_id = $1::uuid")
        .bind(&job_id)
        .execute(&db)
        .await
        .expect("age the job");

    let expired = eventually(Duration::from_secs(10), || async {
        let job = stack.get_job(&key, &job_id).await;
        job["status"] == "expired"
    })
    .await;

    assert!(expired, "the reconciler did not expire the job");
    let conflict = error_detail(
        Ok(stack.complete(&key, &job_id, "completed").await),
        StatusCode::CONFLICT,
    )
    .await;
    assert!(conflict.contains("expired"), "{conflict}");
    let balance = ok_json(
        stack
            .app
            .admin(Method::GET, "/api/credits/teams/team_z/balance")
            .send()
            .await,
    )
    .await;
    assert_eq!(balance["credits_reserved"], 0);
    assert_eq!(balance["credits_used"], 0);
    assert_ledger_consistent(&db, "team_z").await;
}
