//! Batch pipelines: bulk submission with `custom_id`s, paging results, progress counts, and
//! cancelling a job with calls still queued.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::{assert_ledger_consistent, count, error_detail, ok_json};
use crate::helpers::fixtures::requests::{cancel_job, submit_calls};
use crate::helpers::stack::{Stack, chat, eventually, spawn_stack, spawn_stack_without_workers};
use crate::helpers::team_jobs::team_with_job;

fn bulk_body(group: &str, count: usize, prefix: &str) -> Value {
    let calls: Vec<Value> = (0..count)
        .map(|i| {
            json!({
                "custom_id": format!("{prefix}-{i}"),
                "model_group": group,
                "messages": [{"role": "user", "content": format!("text of {prefix}-{i}")}],
            })
        })
        .collect();
    json!({ "calls": calls })
}

/// A team `team_id` with 5 credits and the `ChatAgent` group, and an open job of it: the key
/// and the job id.
async fn chat_job(stack: &Stack, team_id: &str) -> (String, String) {
    team_with_job(stack, team_id, 5, &[("ChatAgent", &["gpt-4o"])]).await
}

/// Every succeeded call of the job, read in pages of 1 000 through `after`: its content by
/// custom id (each listed once), and the number of pages.
async fn succeeded_contents(
    stack: &Stack,
    key: &str,
    job_id: &str,
) -> (HashMap<String, String>, usize) {
    let mut results: HashMap<String, String> = HashMap::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/api/jobs/{job_id}/calls?limit=1000&status=succeeded");
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let page = stack.app.key_ok(key, Method::GET, &path).await;
        pages += 1;
        for call in page["calls"].as_array().expect("calls") {
            let custom_id = call["custom_id"].as_str().expect("custom_id").to_owned();
            let content = call["response"]["content"]
                .as_str()
                .expect("content")
                .to_owned();
            assert!(call["usage"]["total_tokens"].as_i64().expect("tokens") > 0);
            assert!(
                results.insert(custom_id, content).is_none(),
                "a call listed twice"
            );
        }
        if page["has_more"] == true {
            after = Some(page["next_after"].as_str().expect("next_after").to_owned());
        } else {
            assert!(page["next_after"].is_null());
            break;
        }
    }
    (results, pages)
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn ten_thousand_calls_in_one_request_are_paged_back_by_custom_id(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let (key, job_id) = chat_job(&stack, "team_batch").await;

    let accepted = submit_calls(
        &stack.app,
        &key,
        &job_id,
        &bulk_body("ChatAgent", 10_000, "doc"),
    )
    .await;
    assert_eq!(accepted["count"], 10_000);
    let listed = accepted["calls"].as_array().expect("calls");
    assert_eq!(listed.len(), 10_000);
    // The ids come back in the order given.
    for (i, call) in listed.iter().enumerate() {
        assert_eq!(call["custom_id"], format!("doc-{i}"));
    }
    assert_eq!(
        count(
            &db,
            "select count(*) from llm_calls where custom_id is not null"
        )
        .await,
        10_000
    );

    let finished = eventually(Duration::from_secs(180), || async {
        count(
            &db,
            "select count(*) from llm_calls where status = 'succeeded'",
        )
        .await
            == 10_000
    })
    .await;
    assert!(finished, "the batch did not finish");

    let job = stack.get_job(&key, &job_id).await;
    assert_eq!(job["progress"]["total"], 10_000);
    assert_eq!(job["progress"]["succeeded"], 10_000);
    assert_eq!(job["progress"]["queued"], 0);
    assert_eq!(job["calls_truncated"], true);
    assert_eq!(job["calls"].as_array().expect("calls").len(), 1_000);

    // Page through every result and match it to its input by custom_id.
    let (results, pages) = succeeded_contents(&stack, &key, &job_id).await;
    assert_eq!(pages, 10);
    assert_eq!(results.len(), 10_000);
    for i in 0..10_000 {
        assert_eq!(
            results[&format!("doc-{i}")],
            format!("echo: text of doc-{i}")
        );
    }

    // Completing the job charges one credit, whatever the number of calls.
    let done = ok_json(
        stack
            .app
            .with_key(&key, Method::POST, &format!("/api/jobs/{job_id}/complete"))
            .json(&json!({"status": "completed"}))
            .send()
            .await,
    )
    .await;
    assert_eq!(done["costs"]["total_calls"], 10_000);
    assert_eq!(done["costs"]["successful_calls"], 10_000);
    assert_eq!(done["costs"]["credits_remaining"], 4);
    assert_ledger_consistent(&db, "team_batch").await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_bulk_submission_is_all_or_nothing_and_checked_call_by_call(db: PgPool) {
    let stack = spawn_stack_without_workers(db.clone()).await;
    let (key, job_id) = chat_job(&stack, "team_bulk_errors").await;
    stack.app.create_group("OtherGroup", &["gpt-4o"]).await;
    let post = |body: Value| {
        stack
            .app
            .with_key(&key, Method::POST, &format!("/api/jobs/{job_id}/llm-calls"))
            .json(&body)
            .send()
    };

    let empty = error_detail(post(json!({"calls": []})).await, StatusCode::BAD_REQUEST).await;
    assert!(empty.contains("1 to 50000"), "{empty}");
    let mut bad_message = bulk_body("ChatAgent", 3, "x");
    bad_message["calls"][2]["messages"] = json!("not a list");
    let detail = error_detail(post(bad_message).await, StatusCode::BAD_REQUEST).await;
    assert!(detail.starts_with("calls[2]:"), "{detail}");
    let mut twice = bulk_body("ChatAgent", 3, "x");
    twice["calls"][1]["custom_id"] = json!("x-0");
    let detail = error_detail(post(twice).await, StatusCode::BAD_REQUEST).await;
    assert!(detail.contains("'x-0' appears more than once"), "{detail}");
    let mut streamed = bulk_body("ChatAgent", 2, "x");
    streamed["calls"][0]["stream"] = json!(true);
    error_detail(post(streamed).await, StatusCode::BAD_REQUEST).await;
    let mut forbidden = bulk_body("ChatAgent", 2, "x");
    forbidden["calls"][1]["model_group"] = json!("OtherGroup");
    error_detail(post(forbidden).await, StatusCode::FORBIDDEN).await;
    assert_eq!(
        count(&db, "select count(*) from llm_calls").await,
        0,
        "nothing was inserted"
    );

    let first = post(bulk_body("ChatAgent", 3, "x")).await.expect("request");
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    // A custom_id already used in the job: the whole request is refused.
    let mut reused = bulk_body("ChatAgent", 2, "y");
    reused["calls"][1]["custom_id"] = json!("x-1");
    error_detail(post(reused).await, StatusCode::CONFLICT).await;
    assert_eq!(count(&db, "select count(*) from llm_calls").await, 3);
    // The single-call route takes a custom_id too, with the same uniqueness.
    let mut single = chat("ChatAgent", "one more");
    single["custom_id"] = json!("x-2");
    single["async"] = json!(true);
    let response = stack.llm_call(&key, &job_id, single).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn calls_are_paged_with_checked_parameters_and_hidden_from_other_teams(db: PgPool) {
    let stack = spawn_stack_without_workers(db.clone()).await;
    let (key, job_id) = chat_job(&stack, "team_bulk_errors").await;
    submit_calls(&stack.app, &key, &job_id, &bulk_body("ChatAgent", 3, "x")).await;

    // Bad paging parameters.
    for query in ["limit=0", "limit=1001", "status=done", "after=not-a-uuid"] {
        let path = format!("/api/jobs/{job_id}/calls?{query}");
        let response = stack.app.with_key(&key, Method::GET, &path).send().await;
        error_detail(response, StatusCode::BAD_REQUEST).await;
    }
    let queued_path = format!("/api/jobs/{job_id}/calls?status=queued&limit=2");
    let queued = stack.app.key_ok(&key, Method::GET, &queued_path).await;
    assert_eq!(queued["calls"].as_array().expect("calls").len(), 2);
    assert_eq!(queued["has_more"], true);

    // Another team sees neither the job nor its calls.
    let other = stack
        .team("team_bulk_other", 5, &[("ChatAgent", &["gpt-4o"])])
        .await;
    for (method, path) in [
        (Method::GET, format!("/api/jobs/{job_id}/calls")),
        (Method::POST, format!("/api/jobs/{job_id}/llm-calls")),
        (Method::POST, format!("/api/jobs/{job_id}/cancel")),
    ] {
        let response = stack
            .app
            .with_key(&other, method, &path)
            .json(&bulk_body("ChatAgent", 1, "z"))
            .send()
            .await;
        error_detail(response, StatusCode::NOT_FOUND).await;
    }
}

/// Waits until no call is queued or running, then returns how many succeeded and how many were
/// cancelled.
async fn settled_calls(db: &PgPool) -> (i64, i64) {
    let settled = eventually(Duration::from_secs(20), || async {
        count(
            db,
            "select count(*) from llm_calls where status in ('queued', 'running')",
        )
        .await
            == 0
    })
    .await;
    assert!(settled, "calls still running after the cancel");
    sqlx::query_as(
        "select count(*) filter (where status = 'succeeded'), count(*) filter (where status = 'cancelled') from llm_calls",
    )
    .fetch_one(db)
    .await
    .expect("counts")
}

/// Asserts every cancelled call left the queue without reaching the upstream: only the
/// `succeeded` calls ever did.
async fn assert_no_cancelled_call_ran(stack: &Stack, succeeded: i64) {
    // Every cancelled id has left the queue (dispatched and dropped by a worker)...
    let queue = stack.queue();
    let drained = eventually(Duration::from_secs(20), || async {
        queue.len().await.expect("queue length") == 0
    })
    .await;
    assert!(drained, "cancelled calls still queued");
    // ...and an absence check needs time to pass: a cancelled call that a worker ran anyway
    // would reach the upstream within this window.
    let upstream_before = stack.llm.total_requests();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        stack.llm.total_requests(),
        upstream_before,
        "a cancelled call ran"
    );
    assert_eq!(upstream_before as i64, succeeded);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn cancel_stops_queued_calls_lets_running_ones_finish_and_charges_nothing(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_cancel", 3, &[("SlowAgent", &["slow-400-gpt"])])
        .await;
    let job_id = stack.create_job(&key, "team_cancel").await;
    submit_calls(&stack.app, &key, &job_id, &bulk_body("SlowAgent", 100, "c")).await;
    let running = eventually(Duration::from_secs(20), || async {
        count(
            &db,
            "select count(*) from llm_calls where status = 'running'",
        )
        .await
            > 0
    })
    .await;
    assert!(running, "no call started");

    let cancelled = cancel_job(&stack.app, &key, &job_id).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["credit_applied"], false);
    // The hold is released at once: all 3 credits are available again.
    assert_eq!(cancelled["credits_remaining"], 3);
    assert!(cancelled["calls_cancelled"].as_i64().expect("n") > 0);

    // Running calls finish; none is left running and none starts afterwards.
    let (succeeded, cancelled_calls) = settled_calls(&db).await;
    assert_eq!(succeeded + cancelled_calls, 100);
    assert_no_cancelled_call_ran(&stack, succeeded).await;

    let balance_path = "/api/credits/teams/team_cancel/balance";
    let balance = stack.app.key_ok(&key, Method::GET, balance_path).await;
    assert_eq!(balance["credits_remaining"], 3);
    assert_eq!(
        count(
            &db,
            "select count(*) from credit_transactions where transaction_type = 'deduction'"
        )
        .await,
        0
    );
    assert_ledger_consistent(&db, "team_cancel").await;

    // Cancel again: the same answer. Complete or add calls afterwards: 409.
    let again = cancel_job(&stack.app, &key, &job_id).await;
    assert_eq!(again["status"], "cancelled");
    assert_eq!(again["calls_cancelled"], cancelled_calls);
    error_detail(
        Ok(stack.complete(&key, &job_id, "completed").await),
        StatusCode::CONFLICT,
    )
    .await;
    let more = stack
        .app
        .with_key(&key, Method::POST, &format!("/api/jobs/{job_id}/llm-calls"))
        .json(&bulk_body("SlowAgent", 1, "late"))
        .send()
        .await;
    error_detail(more, StatusCode::CONFLICT).await;
    let job = stack.get_job(&key, &job_id).await;
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["progress"]["cancelled"], cancelled_calls);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_completed_job_cannot_be_cancelled(db: PgPool) {
    let stack = spawn_stack_without_workers(db.clone()).await;
    let key = stack
        .team("team_cancel", 3, &[("SlowAgent", &["slow-400-gpt"])])
        .await;
    let done_job = stack.create_job(&key, "team_cancel").await;
    assert!(
        stack
            .complete(&key, &done_job, "completed")
            .await
            .status()
            .is_success()
    );
    let refused = stack
        .app
        .with_key(&key, Method::POST, &format!("/api/jobs/{done_job}/cancel"))
        .send()
        .await;
    error_detail(refused, StatusCode::CONFLICT).await;
    assert_ledger_consistent(&db, "team_cancel").await;
}
