//! OpenAI's Batch API on the team key: a batch file's lines run as calls of a job with
//! model-group fallback, their results come back as output and error files in OpenAI's line
//! format, and their cost is settled against the team's budget. This file holds the shared
//! helpers and the complete runs; `lifecycle` cancel, expiry and malformed files; `money` the
//! budget; `refusals` bad requests and other teams.

mod fleet;
mod lifecycle;
mod money;
mod refusals;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::{assert_ledger_consistent, ok_json};
use crate::helpers::stack::{Stack, poll_for, spawn_stack};

/// Uploads `content` as a batch file; its id.
pub(super) async fn upload(stack: &Stack, key: &str, content: &str) -> String {
    let part =
        reqwest::multipart::Part::bytes(content.as_bytes().to_vec()).file_name("requests.jsonl");
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part("file", part);
    let file = ok_json(
        stack
            .app
            .with_key(key, Method::POST, "/v1/files")
            .multipart(form)
            .send()
            .await,
    )
    .await;
    file["id"].as_str().expect("file id").to_owned()
}

/// A chat line of a batch file.
pub(super) fn chat_line(custom_id: &str, model: &str, text: &str) -> Value {
    json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 50}})
}

/// Lines as JSONL.
pub(super) fn jsonl(lines: &[Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Creates a batch of the file; the batch object.
pub(super) async fn create(stack: &Stack, key: &str, file_id: &str, endpoint: &str) -> Value {
    let body = json!({"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h",
                      "metadata": {"pipeline": "tests"}});
    stack
        .app
        .key_ok_with(key, Method::POST, "/v1/batches", &body)
        .await
}

/// Uploads `content` as a batch file and creates a batch of it; the batch's id.
pub(super) async fn start(stack: &Stack, key: &str, content: &str, endpoint: &str) -> String {
    let file_id = upload(stack, key, content).await;
    create(stack, key, &file_id, endpoint).await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

pub(super) async fn get(stack: &Stack, key: &str, batch_id: &str) -> Value {
    stack
        .app
        .key_ok(key, Method::GET, &format!("/v1/batches/{batch_id}"))
        .await
}

/// Waits until the batch has one of `statuses`; the batch object.
pub(super) async fn wait_for(stack: &Stack, key: &str, batch_id: &str, statuses: &[&str]) -> Value {
    wait_within(stack, key, batch_id, statuses, Duration::from_secs(60)).await
}

/// `wait_for` with its own deadline.
pub(super) async fn wait_within(
    stack: &Stack,
    key: &str,
    batch_id: &str,
    statuses: &[&str],
    deadline: Duration,
) -> Value {
    let reached = poll_for(deadline, || async {
        let batch = get(stack, key, batch_id).await;
        statuses
            .iter()
            .any(|s| batch["status"] == *s)
            .then_some(batch)
    })
    .await;
    match reached {
        Some(batch) => batch,
        None => panic!(
            "batch never reached {statuses:?}: {}",
            get(stack, key, batch_id).await
        ),
    }
}

/// A file's lines, parsed, by custom_id.
pub(super) async fn file_lines(
    stack: &Stack,
    key: &str,
    file_id: &Value,
) -> BTreeMap<String, Value> {
    let file_id = file_id.as_str().expect("a file id");
    let response = stack
        .app
        .with_key(key, Method::GET, &format!("/v1/files/{file_id}/content"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("text");
    text.lines()
        .map(|line| {
            let line: Value = serde_json::from_str(line).expect("a JSON line");
            (
                line["custom_id"].as_str().expect("custom_id").to_owned(),
                line,
            )
        })
        .collect()
}

/// The team's (spend, budget reserved), and the sum of its spend records' costs.
pub(super) async fn spend(db: &PgPool, team_id: &str) -> (i64, i64, i64) {
    sqlx::query_as(
        "select spend_micro_usd, budget_reserved_micro_usd,
                (select coalesce(sum(cost_micro_usd), 0)::int8 from spend_records where team_id = $1)
         from credit_balances where team_id = $1",
    )
    .bind(team_id)
    .fetch_one(db)
    .await
    .expect("balance")
}

/// Lines of every kind for the `ChatAgent` and `FallbackAgent` groups: ten through the group,
/// five naming a model of it, one that falls back, two naming models the team may not use, and
/// one sent to the wrong URL.
fn chat_lines_of_every_kind() -> Vec<Value> {
    let mut lines: Vec<Value> = (0..10)
        .map(|i| chat_line(&format!("group-{i}"), "ChatAgent", &format!("document {i}")))
        .collect();
    lines.extend((0..5).map(|i| chat_line(&format!("direct-{i}"), "gpt-4", "summarise")));
    lines.push(chat_line("fallback", "FallbackAgent", "hello"));
    lines.push(chat_line("not-allowed-1", "claude-3-opus", "hello"));
    lines.push(chat_line("not-allowed-2", "gpt-4o", "hello"));
    let mut wrong_url = chat_line("wrong-url", "ChatAgent", "hello");
    wrong_url["url"] = json!("/v1/embeddings");
    lines.push(wrong_url);
    lines
}

/// Asserts the output file (the 16 lines that ran, answered 200) and the error file (the three
/// refused lines, with their codes) of a batch of `chat_lines_of_every_kind`.
async fn assert_chat_output_and_errors(stack: &Stack, key: &str, ended: &Value) {
    let output = file_lines(stack, key, &ended["output_file_id"]).await;
    let expected: BTreeSet<String> = (0..10)
        .map(|i| format!("group-{i}"))
        .chain((0..5).map(|i| format!("direct-{i}")))
        .chain(["fallback".to_owned()])
        .collect();
    assert_eq!(output.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for line in output.values() {
        assert!(line["id"].as_str().expect("id").starts_with("batch_req_"));
        assert_eq!(line["response"]["status_code"], 200);
        assert!(line["response"]["body"]["choices"][0]["message"]["content"].is_string());
        assert!(line["error"].is_null());
    }
    assert_eq!(output["direct-0"]["response"]["body"]["model"], "gpt-4");
    assert_eq!(
        output["fallback"]["response"]["body"]["model"],
        "gpt-3.5-turbo"
    );

    let errors = file_lines(stack, key, &ended["error_file_id"]).await;
    let codes: BTreeMap<&str, &str> = errors
        .iter()
        .map(|(id, line)| (id.as_str(), line["error"]["code"].as_str().expect("code")))
        .collect();
    assert_eq!(
        codes,
        BTreeMap::from([
            ("not-allowed-1", "model_not_allowed"),
            ("not-allowed-2", "model_not_allowed"),
            ("wrong-url", "invalid_url"),
        ])
    );
    assert!(errors.values().all(|l| l["response"].is_null()));
}

/// Asserts that `records` spend records of chat lines are the team's whole spend, nothing
/// stays reserved, and no credit was charged.
async fn assert_spent_without_credit(db: &PgPool, team_id: &str, records: i64) {
    let (spent, reserved, recorded) = spend(db, team_id).await;
    assert!(spent > 0);
    assert_eq!(spent, recorded);
    assert_eq!(reserved, 0);
    let (recorded_lines, credits_used): (i64, i64) = sqlx::query_as(
        "select (select count(*) from spend_records where team_id = $1 and endpoint = 'chat'),
                (select credits_used from credit_balances where team_id = $1)",
    )
    .bind(team_id)
    .fetch_one(db)
    .await
    .expect("records");
    assert_eq!((recorded_lines, credits_used), (records, 0));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_chat_batch_runs_its_lines_and_writes_output_and_error_files(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team(
            "team_batch",
            100,
            &[
                ("ChatAgent", &["gpt-3.5-turbo", "gpt-4"]),
                ("FallbackAgent", &["fail-500-first", "gpt-3.5-turbo"]),
            ],
        )
        .await;
    let lines = chat_lines_of_every_kind();
    let file_id = upload(&stack, &key, &jsonl(&lines)).await;

    let created = create(&stack, &key, &file_id, "/v1/chat/completions").await;
    assert_eq!(created["object"], "batch");
    assert_eq!(created["status"], "validating");
    assert_eq!(created["metadata"], json!({"pipeline": "tests"}));
    let batch_id = created["id"].as_str().expect("id").to_owned();
    let ended = wait_for(&stack, &key, &batch_id, &["completed"]).await;
    assert_eq!(
        ended["request_counts"],
        json!({"total": 19, "completed": 16, "failed": 3})
    );
    for field in ["in_progress_at", "finalizing_at", "completed_at"] {
        assert!(ended[field].is_i64(), "{field}: {ended}");
    }

    assert_chat_output_and_errors(&stack, &key, &ended).await;

    // The batch's job, visible in the job API; the fallback is among its attempts.
    let job_id = ended["job_id"].as_str().expect("job id");
    let job = stack.get_job(&key, job_id).await;
    assert_eq!(job["job_type"], "openai_batch");
    assert_eq!(job["status"], "completed");
    let fallbacks: i64 = sqlx::query_scalar(
        "select count(*) from llm_call_attempts a join llm_calls c using (call_id)
         where c.job_id = $1::uuid and c.custom_id = 'fallback' and a.outcome = 'fallback'",
    )
    .bind(job_id)
    .fetch_one(&db)
    .await
    .expect("attempts");
    assert_eq!(fallbacks, 1);

    // Spend: every line that ran is a spend record; nothing stays reserved; no credit charged.
    assert_spent_without_credit(&db, "team_batch", 16).await;
    assert_ledger_consistent(&db, "team_batch").await;
}

/// `n` embedding lines for the group `Embedder`, every other one with two inputs.
fn embedding_lines(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let input = if i % 2 == 0 {
                json!(format!("text {i}"))
            } else {
                json!(["a", "b"])
            };
            json!({"custom_id": format!("e-{i}"), "method": "POST", "url": "/v1/embeddings",
                   "body": {"model": "Embedder", "input": input}})
        })
        .collect()
}

/// Creates a second embeddings batch of `file_id` and asserts that the list shows it first,
/// paged, then `first_batch`; waits for it to complete.
async fn assert_listed_newest_first(stack: &Stack, key: &str, file_id: &str, first_batch: &str) {
    let second = create(stack, key, file_id, "/v1/embeddings").await;
    let page = stack
        .app
        .key_ok(key, Method::GET, "/v1/batches?limit=1")
        .await;
    assert_eq!(page["object"], "list");
    assert_eq!(page["data"][0]["id"], second["id"]);
    assert_eq!(page["has_more"], true);
    let rest = stack
        .app
        .key_ok(
            key,
            Method::GET,
            &format!(
                "/v1/batches?limit=10&after={}",
                page["last_id"].as_str().expect("id")
            ),
        )
        .await;
    assert_eq!(rest["data"][0]["id"], first_batch);
    assert_eq!(rest["has_more"], false);
    wait_for(
        stack,
        key,
        second["id"].as_str().expect("id"),
        &["completed"],
    )
    .await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_embeddings_batch_returns_vectors_and_lists_its_batches(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team(
            "team_vectors",
            100,
            &[("Embedder", &["text-embedding-3-small"])],
        )
        .await;
    let lines = embedding_lines(30);
    let file_id = upload(&stack, &key, &jsonl(&lines)).await;
    let batch_id = create(&stack, &key, &file_id, "/v1/embeddings").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let ended = wait_for(&stack, &key, &batch_id, &["completed"]).await;
    assert_eq!(
        ended["request_counts"],
        json!({"total": 30, "completed": 30, "failed": 0})
    );
    assert!(ended["error_file_id"].is_null());
    let output = file_lines(&stack, &key, &ended["output_file_id"]).await;
    assert_eq!(output.len(), 30);
    assert_eq!(
        output["e-1"]["response"]["body"]["data"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert!(output["e-0"]["response"]["body"]["data"][0]["embedding"].is_array());
    let records: i64 = sqlx::query_scalar(
        "select count(*) from spend_records where team_id = 'team_vectors' and endpoint = 'embeddings'",
    )
    .fetch_one(&db)
    .await
    .expect("records");
    assert_eq!(records, 30);

    // A second batch, then the list: newest first, paged.
    assert_listed_newest_first(&stack, &key, &file_id, &batch_id).await;
    assert_ledger_consistent(&db, "team_vectors").await;
}
