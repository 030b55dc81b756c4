//! What the Files API refuses: the admin key (403) and a rotated key (401), uploads with bad
//! fields or malformed multipart bodies (400), and a file over 200 MiB (413, found while it
//! streams in). A refused request neither stores nor deletes a file or a chunk.

use reqwest::multipart::{Form, Part};
use reqwest::{Method, Response, StatusCode};
use sqlx::PgPool;

use super::{MIB, SMALL_BATCH, file_part, get, id_of, openai_error, send_form, stored, upload};
use crate::helpers::app::ok_json;
use crate::helpers::{ADMIN_KEY, TestApp, spawn_app};

/// A multipart body written by hand, for what a client library would not send.
async fn send_raw(app: &TestApp, key: &str, content_type: &str, body: &'static [u8]) -> Response {
    app.with_key(key, Method::POST, "/v1/files")
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("upload sent")
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_admin_key_is_403_and_a_rotated_key_401(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let old_key = app.team_with_key("team_r", 10).await;
    let file_id = id_of(
        &ok_json(Ok(
            upload(&app, &old_key, "a.jsonl", SMALL_BATCH.to_vec()).await
        ))
        .await,
    );
    app.admin_ok(Method::POST, "/api/teams/team_r/rotate-key")
        .await;

    let admin_upload = upload(&app, ADMIN_KEY, "admin.jsonl", SMALL_BATCH.to_vec()).await;
    let admin_list = get(&app, ADMIN_KEY, "/v1/files").await;
    let admin_get = get(&app, ADMIN_KEY, &format!("/v1/files/{file_id}")).await;
    let rotated_upload = upload(&app, &old_key, "late.jsonl", SMALL_BATCH.to_vec()).await;
    let rotated_content = get(&app, &old_key, &format!("/v1/files/{file_id}/content")).await;
    let rotated_delete = app
        .with_key(&old_key, Method::DELETE, &format!("/v1/files/{file_id}"))
        .send()
        .await
        .expect("sent");

    for response in [admin_upload, admin_list, admin_get] {
        openai_error(response, StatusCode::FORBIDDEN).await;
    }
    for response in [rotated_upload, rotated_content, rotated_delete] {
        let error = openai_error(response, StatusCode::UNAUTHORIZED).await;
        assert_eq!(error["code"], "invalid_api_key");
    }
    assert_eq!(stored(&db).await, (1, 1));
}

// Long only because of its table of cases.
#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn uploads_with_bad_fields_are_400_and_store_nothing(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_v", 10).await;
    let with_purpose = |purpose: &str| {
        Form::new()
            .text("purpose", purpose.to_owned())
            .part("file", file_part("in.jsonl", SMALL_BATCH.to_vec()))
    };
    let cases = [
        ("purpose", with_purpose("fine-tune")),
        ("purpose", with_purpose("batch_output")),
        ("purpose", with_purpose(&"batch".repeat(20))),
        // The file streams in first; the wrong purpose after it rolls it back.
        (
            "purpose",
            Form::new()
                .part("file", file_part("in.jsonl", vec![b'x'; MIB + 5]))
                .text("purpose", "assistants"),
        ),
        (
            "purpose",
            Form::new().part("file", file_part("in.jsonl", SMALL_BATCH.to_vec())),
        ),
        ("file", Form::new().text("purpose", "batch")),
        (
            "file",
            Form::new()
                .text("purpose", "batch")
                .text("file", "not a file"),
        ),
        (
            "file",
            Form::new()
                .text("purpose", "batch")
                .part("file", file_part("empty.jsonl", Vec::new())),
        ),
        (
            "file",
            Form::new()
                .text("purpose", "batch")
                .part("file", file_part(&"n".repeat(513), SMALL_BATCH.to_vec())),
        ),
        (
            "file",
            with_purpose("batch").part("file", file_part("twice.jsonl", SMALL_BATCH.to_vec())),
        ),
    ];
    for (param, form) in cases {
        let error = openai_error(send_form(&app, &key, form).await, StatusCode::BAD_REQUEST).await;
        assert_eq!(error["param"], param, "{error}");
    }

    let multipart = "multipart/form-data; boundary=XyZ";
    let raw_cases: [(&str, &'static [u8]); 6] = [
        (multipart, b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"tab\there.jsonl\"\r\n\r\n{}\n\r\n--XyZ--\r\n"),
        // An extra field is ignored only with a plain name; this one has none, after the file.
        (multipart, b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n\r\n{}\n\r\n--XyZ\r\nContent-Disposition: form-data; name=\"\"\r\n\r\nx\r\n--XyZ--\r\n"),
        // Cut off before the closing boundary: the file written so far is rolled back.
        (multipart, b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.jsonl\"\r\n\r\n{}\n"),
        (multipart, b"this is not multipart at all"),
        ("multipart/form-data", b"--XyZ--\r\n"),
        ("application/json", b"{\"purpose\": \"batch\", \"file\": \"{}\"}"),
    ];
    for (content_type, body) in raw_cases {
        openai_error(
            send_raw(&app, &key, content_type, body).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    assert_eq!(stored(&db).await, (0, 0));

    // The same body as the first raw case, with an ordinary filename, is stored.
    let fine = send_raw(&app, &key, multipart, b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fine.jsonl\"\r\nContent-Type: application/octet-stream\r\n\r\n{}\n\r\n--XyZ--\r\n").await;
    let file = ok_json(Ok(fine)).await;
    assert_eq!(
        (file["filename"].as_str(), file["bytes"].as_i64()),
        (Some("fine.jsonl"), Some(3))
    );
    assert_eq!(stored(&db).await, (1, 1));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_file_over_200_mib_is_refused_while_streaming_and_leaves_nothing(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_big", 10).await;
    // 200 MiB and one byte, generated piece by piece rather than held whole.
    let pieces = (0..=200).map(|i| {
        Ok::<_, std::io::Error>(if i < 200 {
            vec![b'x'; MIB]
        } else {
            b"y".to_vec()
        })
    });
    let body = reqwest::Body::wrap_stream(futures::stream::iter(pieces));
    let form = Form::new()
        .text("purpose", "batch")
        .part("file", Part::stream(body).file_name("big.jsonl"));

    let error = openai_error(
        send_form(&app, &key, form).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    assert_eq!(error["code"], "file_too_large");
    assert_eq!(stored(&db).await, (0, 0));
}
