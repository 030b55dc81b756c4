//! A batch of OpenAI's maximum size, 50,000 lines, drained by a fleet of three workers: every
//! line runs once, the output file holds every custom_id once, and the spend settles exactly.
//! (Its throughput is measured by the benchmark's batch scenario, not here.)

use std::collections::HashSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{spend, start, wait_within};
use saasllm_worker::WorkerOptions;

use crate::helpers::stack::{StackOptions, spawn_stack_with, test_worker_options};

const LINES: usize = 50_000;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_fifty_thousand_line_batch_is_drained_by_the_fleet(
    _: PgPoolOptions,
    connect: PgConnectOptions,
) {
    // The API and three workers share this pool here (each has its own when deployed): sized
    // for all of them, as the test pool is sized for one.
    let db = PgPoolOptions::new()
        .max_connections(40)
        .connect_with(connect)
        .await
        .expect("pool");
    let stack = spawn_stack_with(
        db.clone(),
        StackOptions {
            workers: 3,
            worker_options: WorkerOptions {
                concurrency: 64,
                batch_size: 32,
                ..test_worker_options()
            },
            ..StackOptions::default()
        },
    )
    .await;
    let key = stack
        .team("team_fleet", 1_000, &[("ChatAgent", &["gpt-3.5-turbo"])])
        .await;
    let content: String = (0..LINES)
        .map(|i| {
            let line = json!({"custom_id": format!("doc-{i}"), "method": "POST", "url": "/v1/chat/completions",
                              "body": {"model": "ChatAgent", "messages": [{"role": "user", "content": format!("page {i}")}], "max_tokens": 16}});
            format!("{line}\n")
        })
        .collect();
    let batch_id = start(&stack, &key, &content, "/v1/chat/completions").await;
    let ended = wait_within(
        &stack,
        &key,
        &batch_id,
        &["completed"],
        Duration::from_secs(900),
    )
    .await;
    assert_eq!(
        ended["request_counts"],
        json!({"total": LINES, "completed": LINES, "failed": 0})
    );
    assert!(ended["error_file_id"].is_null());

    let output_id = ended["output_file_id"].as_str().expect("output file");
    let response = stack
        .app
        .with_key(&key, Method::GET, &format!("/v1/files/{output_id}/content"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("text");
    let mut seen = HashSet::new();
    for line in text.lines() {
        let line: Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(line["response"]["status_code"], 200);
        let custom_id = line["custom_id"].as_str().expect("custom_id").to_owned();
        assert!(seen.insert(custom_id), "a line came back twice");
    }
    assert_eq!(seen.len(), LINES);

    // Every line ran exactly once, spread over the fleet.
    let (attempts, workers): (i64, i64) = sqlx::query_as(
        "select (select count(*) from llm_call_attempts a join llm_calls c using (call_id) where c.team_id = 'team_fleet'),
                (select count(distinct worker_id) from llm_calls where team_id = 'team_fleet')",
    )
    .fetch_one(&db)
    .await
    .expect("attempts");
    assert_eq!(attempts, LINES as i64);
    assert!(workers >= 2, "the lines ran on {workers} worker(s)");
    let (spent, reserved, recorded) = spend(&db, "team_fleet").await;
    assert_eq!((spent, reserved), (recorded, 0));
}
