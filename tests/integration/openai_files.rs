//! OpenAI's Files API on a team key: multipart uploads streamed into 1 MiB chunks (whole or
//! absent), byte-exact content, OpenAI's list paging, deletion of the rows, and files that only
//! their team can see. This file holds the shared helpers and what succeeds; `listing` the
//! list's paging and filters; `refusals` the admin key, a rotated key, bad fields and a file
//! over the size limit; `slow_uploads` how many uploads a team may stream at once.

mod listing;
mod refusals;
mod slow_uploads;

use reqwest::multipart::{Form, Part};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::app::ok_json;
use crate::helpers::{TestApp, spawn_app};

pub(super) const MIB: usize = 1024 * 1024;
pub(super) const SMALL_BATCH: &[u8] = b"{\"custom_id\": \"a\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", \"body\": {}}\n";

pub(super) fn file_part(filename: &str, content: Vec<u8>) -> Part {
    Part::bytes(content).file_name(filename.to_owned())
}

/// An upload with `purpose` sent first, as the OpenAI SDKs do.
pub(super) async fn upload(app: &TestApp, key: &str, filename: &str, content: Vec<u8>) -> Response {
    let form = Form::new()
        .text("purpose", "batch")
        .part("file", file_part(filename, content));
    send_form(app, key, form).await
}

pub(super) async fn send_form(app: &TestApp, key: &str, form: Form) -> Response {
    app.with_key(key, Method::POST, "/v1/files")
        .multipart(form)
        .send()
        .await
        .expect("upload sent")
}

pub(super) async fn openai_error(response: Response, expected: StatusCode) -> Value {
    let status = response.status();
    let body: Value = response.json().await.expect("JSON error");
    assert_eq!(status, expected, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["type"].is_string(), "{body}");
    body["error"].clone()
}

pub(super) async fn get(app: &TestApp, key: &str, path: &str) -> Response {
    app.with_key(key, Method::GET, path)
        .send()
        .await
        .expect("request sent")
}

pub(super) async fn stored(db: &PgPool) -> (i64, i64) {
    sqlx::query_as("select (select count(*) from files), (select count(*) from file_chunks)")
        .fetch_one(db)
        .await
        .expect("counts")
}

async fn chunk_sizes(db: &PgPool, file_id: &str) -> Vec<i32> {
    sqlx::query_scalar("select length(data) from file_chunks where file_id = $1 order by seq")
        .bind(file_id)
        .fetch_all(db)
        .await
        .expect("chunks")
}

pub(super) fn id_of(file: &Value) -> String {
    file["id"].as_str().expect("file id").to_owned()
}

/// 3.5 MiB of 100-byte lines and a last line without a newline: four chunks.
fn lines_over_chunks() -> Vec<u8> {
    (0..3 * MIB + MIB / 2)
        .map(|i| {
            if i % 100 == 99 {
                b'\n'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .chain(*b"last line")
        .collect()
}

/// Asserts that the file's content reads back byte for byte, as an octet stream of its length.
async fn assert_read_back(app: &TestApp, key: &str, file: &Value, content: &[u8]) {
    let response = get(app, key, &format!("/v1/files/{}/content", id_of(file))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(response.content_length(), Some(content.len() as u64));
    let body = response.bytes().await.expect("content");
    assert!(
        body == content,
        "content differs ({} bytes read)",
        body.len()
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn uploads_are_stored_in_chunks_and_read_back_byte_for_byte(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_f", 10).await;
    // A few MiB spanning four chunks, without a trailing newline, sent with the file before
    // `purpose` and with an Idempotency-Key (neither changes anything for an upload).
    let large = lines_over_chunks();
    let form = Form::new()
        .part("file", file_part("dir/large.jsonl", large.clone()))
        .text("purpose", "batch")
        .text("ignored_extra", "anything");
    let large_file = ok_json(Ok(app
        .with_key(&key, Method::POST, "/v1/files")
        .header("Idempotency-Key", "upload-1")
        .multipart(form)
        .send()
        .await
        .expect("sent")))
    .await;
    let small_file = ok_json(Ok(
        upload(&app, &key, "small.jsonl", SMALL_BATCH.to_vec()).await
    ))
    .await;

    assert_eq!(large_file["object"], "file");
    assert_eq!(large_file["bytes"], large.len());
    assert_eq!(large_file["filename"], "dir/large.jsonl");
    assert_eq!(large_file["purpose"], "batch");
    assert_eq!(large_file["status"], "processed");
    assert!(large_file["status_details"].is_null() && large_file["expires_at"].is_null());
    assert!(large_file["created_at"].as_i64().expect("created_at") > 1_600_000_000);
    assert!(id_of(&large_file).starts_with("file-"));
    let retrieved = ok_json(Ok(get(
        &app,
        &key,
        &format!("/v1/files/{}", id_of(&large_file)),
    )
    .await))
    .await;
    assert_eq!(retrieved, large_file);

    for (file, content) in [(&large_file, &large[..]), (&small_file, SMALL_BATCH)] {
        assert_read_back(&app, &key, file, content).await;
    }
    let whole = MIB as i32;
    assert_eq!(
        chunk_sizes(&db, &id_of(&large_file)).await,
        [whole, whole, whole, whole / 2 + 9]
    );
    assert_eq!(
        chunk_sizes(&db, &id_of(&small_file)).await,
        [SMALL_BATCH.len() as i32]
    );
    let lines: Vec<(i64, i64)> = sqlx::query_as(
        "select bytes, line_count from files where team_id = 'team_f' order by file_id",
    )
    .fetch_all(&db)
    .await
    .expect("files");
    let newlines = large.iter().filter(|&&b| b == b'\n').count() as i64;
    assert_eq!(
        lines,
        [
            (large.len() as i64, newlines + 1),
            (SMALL_BATCH.len() as i64, 1)
        ]
    );
}

/// An upload streams to storage and is never held whole to be hashed, so an Idempotency-Key does
/// not make it replayable: the same upload twice is two files.
#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_idempotency_key_does_not_replay_an_upload(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_i", 10).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let form = Form::new()
            .text("purpose", "batch")
            .part("file", file_part("same.jsonl", SMALL_BATCH.to_vec()));
        let response = app
            .with_key(&key, Method::POST, "/v1/files")
            .header("Idempotency-Key", "same-upload")
            .multipart(form)
            .send()
            .await
            .expect("sent");
        assert!(response.headers().get("idempotent-replayed").is_none());
        ids.push(id_of(&ok_json(Ok(response)).await));
    }

    assert_ne!(ids[0], ids[1]);
    assert_eq!(stored(&db).await, (2, 2));
    let keys: i64 = sqlx::query_scalar("select count(*) from idempotency_records")
        .fetch_one(&db)
        .await
        .expect("idempotency keys");
    assert_eq!(keys, 0);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn deleting_a_file_removes_its_row_and_chunks(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_d", 10).await;
    let kept = id_of(
        &ok_json(Ok(
            upload(&app, &key, "kept.jsonl", SMALL_BATCH.to_vec()).await
        ))
        .await,
    );
    let gone = id_of(
        &ok_json(Ok(upload(
            &app,
            &key,
            "gone.jsonl",
            vec![b'x'; 2 * MIB + 1],
        )
        .await))
        .await,
    );
    assert_eq!(stored(&db).await, (2, 4));

    let delete = || {
        app.with_key(&key, Method::DELETE, &format!("/v1/files/{gone}"))
            .send()
    };
    let deleted = ok_json(Ok(delete().await.expect("sent"))).await;
    let again = delete().await.expect("sent");

    assert_eq!(
        deleted,
        serde_json::json!({"id": gone, "object": "file", "deleted": true})
    );
    openai_error(again, StatusCode::NOT_FOUND).await;
    openai_error(
        get(&app, &key, &format!("/v1/files/{gone}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    openai_error(
        get(&app, &key, &format!("/v1/files/{gone}/content")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(stored(&db).await, (1, 1));
    assert_eq!(chunk_sizes(&db, &kept).await, [SMALL_BATCH.len() as i32]);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn another_teams_files_are_not_found_and_not_listed(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let owner = app.team_with_key("team_a", 10).await;
    let other = app.team_with_key("team_b", 10).await;
    let file_id = id_of(
        &ok_json(Ok(
            upload(&app, &owner, "mine.jsonl", SMALL_BATCH.to_vec()).await
        ))
        .await,
    );

    let foreign_get = get(&app, &other, &format!("/v1/files/{file_id}")).await;
    let foreign_content = get(&app, &other, &format!("/v1/files/{file_id}/content")).await;
    let foreign_delete = app
        .with_key(&other, Method::DELETE, &format!("/v1/files/{file_id}"))
        .send()
        .await
        .expect("sent");
    let foreign_list = ok_json(Ok(get(&app, &other, "/v1/files").await)).await;

    for response in [foreign_get, foreign_content, foreign_delete] {
        let error = openai_error(response, StatusCode::NOT_FOUND).await;
        assert_eq!(error["type"], "invalid_request_error");
    }
    assert_eq!(foreign_list["data"], serde_json::json!([]));
    for malformed in ["nope", "file-%00", "file-..%2Fx", "f".repeat(300).as_str()] {
        openai_error(
            get(&app, &owner, &format!("/v1/files/{malformed}")).await,
            StatusCode::NOT_FOUND,
        )
        .await;
    }
    let still_there = ok_json(Ok(get(&app, &owner, &format!("/v1/files/{file_id}")).await)).await;
    assert_eq!(still_there["id"], file_id.as_str());
    assert_eq!(stored(&db).await, (1, 1));
}
