//! A batch's life besides completing: cancelled midway (queued lines never run), expired at
//! the end of its window (what had not run goes to the error file), and failed at validation
//! for a malformed file (OpenAI's `errors` with line numbers).

use std::time::Duration;

use chrono::Utc;
use reqwest::Method;
use serde_json::Value;
use sqlx::PgPool;

use super::{chat_line, create, file_lines, get, jsonl, spend, start, upload, wait_for};
use crate::helpers::stack::{Stack, eventually, spawn_stack};

/// A team whose calls run two at a time on a slow model, so a batch is still running when the
/// test acts on it.
async fn slow_team(stack: &Stack, team_id: &str) -> String {
    let key = stack
        .team(team_id, 100, &[("SlowAgent", &["slow-150-gpt-3.5-turbo"])])
        .await;
    stack.app.limit_concurrent_calls(team_id, 2).await;
    key
}

/// `n` lines for the slow model's group, as JSONL.
fn slow_lines(n: usize) -> String {
    let lines: Vec<Value> = (0..n)
        .map(|i| chat_line(&format!("line-{i}"), "SlowAgent", "work"))
        .collect();
    jsonl(&lines)
}

/// Calls of the batch's job by status.
async fn statuses(db: &PgPool, job_id: &str) -> Vec<(String, i64)> {
    sqlx::query_as(
        "select status, count(*) from llm_calls where job_id = $1::uuid group by 1 order by 1",
    )
    .bind(job_id)
    .fetch_all(db)
    .await
    .expect("statuses")
}

/// Asserts that of a cancelled batch the `failed` withdrawn lines never reached the upstream,
/// are in the error file as cancelled and cost nothing, and that the `completed` ones are in the
/// output file.
async fn assert_withdrawn_lines_never_ran(
    stack: &Stack,
    key: &str,
    ended: &Value,
    completed: i64,
    failed: i64,
) {
    let db = &stack.app.db;
    let job_id = ended["job_id"].as_str().expect("job id");
    let cancelled_attempts: i64 = sqlx::query_scalar(
        "select count(*) from llm_call_attempts a join llm_calls c using (call_id)
         where c.job_id = $1::uuid and c.status = 'cancelled'",
    )
    .bind(job_id)
    .fetch_one(db)
    .await
    .expect("attempts");
    assert_eq!(
        cancelled_attempts, 0,
        "a withdrawn line reached the upstream"
    );
    let counts = statuses(db, job_id).await;
    assert_eq!(
        counts,
        vec![
            ("cancelled".to_owned(), failed),
            ("succeeded".to_owned(), completed)
        ]
    );
    let errors = file_lines(stack, key, &ended["error_file_id"]).await;
    assert_eq!(errors.len() as i64, failed);
    assert!(
        errors
            .values()
            .all(|l| l["error"]["code"] == "batch_cancelled")
    );
    assert_eq!(
        file_lines(stack, key, &ended["output_file_id"]).await.len() as i64,
        completed
    );
    // Only the lines that ran cost anything.
    let cancelled_cost: i64 = sqlx::query_scalar(
        "select coalesce(sum(s.cost_micro_usd), 0)::int8 from spend_records s
         join llm_calls c on c.call_id = s.request_id where c.job_id = $1::uuid and c.status = 'cancelled'",
    )
    .bind(job_id)
    .fetch_one(db)
    .await
    .expect("cost");
    assert_eq!(cancelled_cost, 0);
    let (spent, reserved, recorded) = spend(db, "team_cancel").await;
    assert_eq!((spent, reserved), (recorded, 0));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn cancelling_midway_withdraws_queued_lines_and_charges_nothing_for_them(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = slow_team(&stack, "team_cancel").await;
    let batch_id = start(&stack, &key, &slow_lines(60), "/v1/chat/completions").await;
    let started = eventually(Duration::from_secs(30), || async {
        get(&stack, &key, &batch_id).await["request_counts"]["completed"]
            .as_i64()
            .is_some_and(|done| done >= 2)
    })
    .await;
    assert!(started, "no line finished");

    let cancelling = stack
        .app
        .key_ok(
            &key,
            Method::POST,
            &format!("/v1/batches/{batch_id}/cancel"),
        )
        .await;
    assert!(["cancelling", "cancelled"].contains(&cancelling["status"].as_str().expect("status")));
    assert!(cancelling["cancelling_at"].is_i64());
    let ended = wait_for(&stack, &key, &batch_id, &["cancelled"]).await;
    let (completed, failed) = (
        ended["request_counts"]["completed"]
            .as_i64()
            .expect("completed"),
        ended["request_counts"]["failed"].as_i64().expect("failed"),
    );
    assert_eq!(completed + failed, 60);
    assert!(failed >= 40, "most lines never ran: {ended}");
    // Cancelling again changes nothing; the batch has ended.
    let again = stack
        .app
        .with_key(
            &key,
            Method::POST,
            &format!("/v1/batches/{batch_id}/cancel"),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(again.status(), reqwest::StatusCode::CONFLICT);

    let job_id = ended["job_id"].as_str().expect("job id");
    assert_withdrawn_lines_never_ran(&stack, &key, &ended, completed, failed).await;
    let job = stack.get_job(&key, job_id).await;
    assert_eq!(job["status"], "cancelled");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_batch_past_its_window_expires_with_what_did_not_run_in_the_error_file(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = slow_team(&stack, "team_expiry").await;
    let batch_id = start(&stack, &key, &slow_lines(40), "/v1/chat/completions").await;
    wait_for(&stack, &key, &batch_id, &["in_progress"]).await;

    // A day and an hour later, as the workers' clock would see it.
    let queue = stack.queue();
    saasllm_worker::batch_pass_at(&db, &queue, Utc::now() + chrono::Duration::hours(25))
        .await
        .expect("pass");
    let ended = wait_for(&stack, &key, &batch_id, &["expired"]).await;
    assert!(ended["expired_at"].is_i64());
    let failed = ended["request_counts"]["failed"].as_i64().expect("failed");
    assert!(failed > 0, "{ended}");
    let errors = file_lines(&stack, &key, &ended["error_file_id"]).await;
    assert_eq!(errors.len() as i64, failed);
    assert!(
        errors
            .values()
            .all(|l| l["error"]["code"] == "batch_expired")
    );
    let job = stack
        .app
        .key_ok(
            &key,
            Method::GET,
            &format!("/api/jobs/{}", ended["job_id"].as_str().expect("job")),
        )
        .await;
    assert_eq!(job["status"], "expired");
    let (spent, reserved, recorded) = spend(&db, "team_expiry").await;
    assert_eq!((spent, reserved), (recorded, 0));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_malformed_file_fails_the_batch_at_validation_with_line_numbers(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_malformed", 10, &[("ChatAgent", &["gpt-3.5-turbo"])])
        .await;
    let good = chat_line("ok-1", "ChatAgent", "hello");
    let mut no_id = chat_line("x", "ChatAgent", "hello");
    no_id.as_object_mut().expect("object").remove("custom_id");
    let content = format!(
        "{good}\nthis is not json\n{no_id}\n{}\n[1, 2]\n",
        chat_line("ok-1", "ChatAgent", "again")
    );
    let file_id = upload(&stack, &key, &content).await;
    let batch_id = create(&stack, &key, &file_id, "/v1/chat/completions").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let failed = wait_for(&stack, &key, &batch_id, &["failed"]).await;
    assert!(failed["failed_at"].is_i64());
    assert_eq!(failed["errors"]["object"], "list");
    let found: Vec<(String, i64)> = failed["errors"]["data"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            assert!(e["message"].is_string());
            (
                e["code"].as_str().expect("code").to_owned(),
                e["line"].as_i64().expect("line"),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            ("invalid_json_line".to_owned(), 2),
            ("invalid_custom_id".to_owned(), 3),
            ("duplicate_custom_id".to_owned(), 4),
            ("invalid_json_line".to_owned(), 5),
        ]
    );
    assert!(failed["job_id"].is_null());
    let left: i64 = sqlx::query_scalar(
        "select (select count(*) from jobs where team_id = 'team_malformed')
              + (select count(*) from llm_calls where team_id = 'team_malformed')
              + (select count(*) from budget_slices where team_id = 'team_malformed')",
    )
    .fetch_one(&db)
    .await
    .expect("rows");
    assert_eq!(left, 0, "a failed validation left rows behind");

    // Blank lines only, one line too many, and one line too long: all fail too.
    let long_line = format!("{good}\n{}\n", "x".repeat(10 * 1024 * 1024 + 1));
    for (content, code) in [
        ("\n \n\r\n".to_owned(), "empty_file"),
        ("{}\n".repeat(50_001), "too_many_lines"),
        (long_line, "line_too_long"),
    ] {
        let file_id = upload(&stack, &key, &content).await;
        let batch = create(&stack, &key, &file_id, "/v1/chat/completions").await;
        let failed = wait_for(&stack, &key, batch["id"].as_str().expect("id"), &["failed"]).await;
        assert_eq!(failed["errors"]["data"][0]["code"], code, "{failed}");
    }
}
