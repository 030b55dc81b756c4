//! Requests a batch refuses, in OpenAI's error shape and never with a 500: bad fields, another
//! team's batch or file (404), the admin key; and the job API refusing to change a batch's job.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{chat_line, create, jsonl, upload, wait_for};
use crate::helpers::ADMIN_KEY;
use crate::helpers::app::count;
use crate::helpers::stack::spawn_stack;

async fn error_of(response: reqwest::Response, expected: StatusCode) -> Value {
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, expected, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    body["error"].clone()
}

/// Bodies `POST /v1/batches` refuses, with the status of each refusal; `file_id` is an
/// uploaded batch file of the team.
fn bad_create_bodies(file_id: &str) -> Vec<(Value, StatusCode)> {
    let too_much_metadata: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    vec![
        (
            json!({"input_file_id": file_id, "endpoint": "/v1/completions", "completion_window": "24h"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "48h"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": too_much_metadata}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": {"k": 1}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"input_file_id": 7, "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"input_file_id": "file-nope\u{0}", "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"input_file_id": "file-0193", "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"endpoint": "/v1/chat/completions", "completion_window": "24h"}),
            StatusCode::BAD_REQUEST,
        ),
        (json!([1, 2]), StatusCode::BAD_REQUEST),
    ]
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn bad_batch_requests_are_refused_with_openai_errors(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_refusals", 10, &[("ChatAgent", &["gpt-3.5-turbo"])])
        .await;
    let file_id = upload(&stack, &key, &jsonl(&[chat_line("a", "ChatAgent", "x")])).await;
    for (body, expected) in bad_create_bodies(&file_id) {
        let response = stack
            .app
            .with_key(&key, Method::POST, "/v1/batches")
            .json(&body)
            .send()
            .await
            .expect("request");
        error_of(response, expected).await;
    }
    for query in ["limit=0", "limit=101", "limit=x"] {
        let response = stack
            .app
            .with_key(&key, Method::GET, &format!("/v1/batches?{query}"))
            .send()
            .await
            .expect("request");
        error_of(response, StatusCode::BAD_REQUEST).await;
    }
    for (path, expected) in [
        ("/v1/batches/batch_nope", StatusCode::NOT_FOUND),
        ("/v1/batches/x'--", StatusCode::NOT_FOUND),
        ("/v1/batches/%00", StatusCode::BAD_REQUEST),
    ] {
        let response = stack.app.key_send(&key, Method::GET, path).await;
        error_of(response, expected).await;
    }
    let admin = stack
        .app
        .with_key(ADMIN_KEY, Method::POST, "/v1/batches")
        .json(&json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .send()
        .await
        .expect("request");
    error_of(admin, StatusCode::FORBIDDEN).await;
    assert_eq!(
        count(&db, "select count(*) from batches").await,
        0,
        "a refused request created a batch"
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn another_team_finds_neither_the_batch_nor_its_files_and_its_job_changes_only_as_a_batch(
    db: PgPool,
) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_owner", 10, &[("ChatAgent", &["gpt-3.5-turbo"])])
        .await;
    let other = stack
        .team("team_other", 10, &[("ChatAgent", &["gpt-3.5-turbo"])])
        .await;
    let file_id = upload(&stack, &key, &jsonl(&[chat_line("a", "ChatAgent", "x")])).await;
    let batch = create(&stack, &key, &file_id, "/v1/chat/completions").await;
    let batch_id = batch["id"].as_str().expect("id");
    let ended = wait_for(&stack, &key, batch_id, &["completed"]).await;
    let output_file = ended["output_file_id"].as_str().expect("output file");

    for (method, path) in [
        (Method::GET, format!("/v1/batches/{batch_id}")),
        (Method::POST, format!("/v1/batches/{batch_id}/cancel")),
        (Method::GET, format!("/v1/files/{output_file}")),
        (Method::GET, format!("/v1/files/{output_file}/content")),
    ] {
        let response = stack.app.key_send(&other, method, &path).await;
        error_of(response, StatusCode::NOT_FOUND).await;
    }
    let theirs = stack
        .app
        .with_key(&other, Method::POST, "/v1/batches")
        .json(&json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .send()
        .await
        .expect("request");
    error_of(theirs, StatusCode::NOT_FOUND).await;
    let listed: Value = stack
        .app
        .with_key(&other, Method::GET, "/v1/batches")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["data"], json!([]));

    // The batch's job: visible, but changed only through /v1/batches.
    let job_id = ended["job_id"].as_str().expect("job id");
    for (path, body) in [
        (
            format!("/api/jobs/{job_id}/complete"),
            json!({"status": "completed"}),
        ),
        (format!("/api/jobs/{job_id}/cancel"), json!({})),
        (
            format!("/api/jobs/{job_id}/llm-call"),
            json!({"model_group": "ChatAgent", "messages": [{"role": "user", "content": "x"}]}),
        ),
    ] {
        let response = stack
            .app
            .with_key(&key, Method::POST, &path)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::CONFLICT, "{path}");
    }
    let reserved = stack
        .app
        .with_key(&key, Method::POST, "/api/jobs/create")
        .json(&json!({"team_id": "team_owner", "job_type": "openai_batch"}))
        .send()
        .await
        .expect("request");
    assert_eq!(reserved.status(), StatusCode::BAD_REQUEST);
}
