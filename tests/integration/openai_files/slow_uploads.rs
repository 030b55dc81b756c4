//! Slow uploads cannot take the database from everyone else: an upload holds a connection while
//! its client sends the file, so a team may stream only two at once (429 for a third, which
//! another team does not feel), and a place comes back when an upload breaks off.

use std::time::Duration;

use futures::stream;
use reqwest::{Method, StatusCode};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::upload;
use crate::helpers::stack::eventually;
use crate::helpers::{TestApp, spawn_app};

const BOUNDARY: &str = "slow-upload-boundary";

/// An upload whose body has sent `purpose` and the start of the file, then waits for more; the
/// sender ends it (dropped: the body breaks off).
fn stalled_upload(
    app: &TestApp,
    key: &str,
) -> (
    mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    JoinHandle<StatusCode>,
) {
    let (sender, receiver) = mpsc::channel(4);
    let head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.jsonl\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n{{\"custom_id\": \"a\"}}\n"
    );
    let opening = stream::once(async move { Ok::<_, std::io::Error>(head.into_bytes()) });
    let rest = stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|piece| (piece, receiver))
    });
    let body = reqwest::Body::wrap_stream(futures::StreamExt::chain(opening, rest));
    let request = app
        .with_key(key, Method::POST, "/v1/files")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body);
    let answer = tokio::spawn(async move {
        match request.send().await {
            Ok(response) => response.status(),
            // The body broke off before the server answered.
            Err(_) => StatusCode::BAD_REQUEST,
        }
    });
    (sender, answer)
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_team_streams_at_most_two_uploads_at_once(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.create_org("org_slow").await;
    app.create_group("ChatAgent", &["gpt-4o"]).await;
    let key_of = |team: serde_json::Value| team["virtual_key"].as_str().expect("key").to_owned();
    let key = key_of(
        app.create_team("org_slow", "team_slow", &["ChatAgent"], 1)
            .await,
    );
    let other = key_of(
        app.create_team("org_slow", "team_calm", &["ChatAgent"], 1)
            .await,
    );

    let stalled = [stalled_upload(&app, &key), stalled_upload(&app, &key)];
    // Each stalled upload holds a transaction open while it waits for the rest of its file.
    let streaming = eventually(Duration::from_secs(10), || async {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity
             where datname = current_database() and state = 'idle in transaction'",
        )
        .fetch_one(&db)
        .await
        .expect("activity");
        open == 2
    })
    .await;
    assert!(streaming, "the stalled uploads never started streaming");
    let content = b"{\"custom_id\": \"b\"}\n".to_vec();
    let third = upload(&app, &key, "third.jsonl", content.clone()).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers().contains_key("retry-after"));
    let calm = upload(&app, &other, "calm.jsonl", content.clone()).await;
    assert_eq!(calm.status(), StatusCode::OK, "another team was refused");

    // The stalled uploads break off: nothing of them is stored, and the team may upload again.
    for (sender, answer) in stalled {
        drop(sender);
        assert_ne!(answer.await.expect("upload task"), StatusCode::OK);
    }
    let again = eventually(Duration::from_secs(10), || async {
        upload(&app, &key, "again.jsonl", content.clone())
            .await
            .status()
            == StatusCode::OK
    })
    .await;
    assert!(again, "the team's places never came back");
    let slow_files: i64 =
        sqlx::query_scalar("select count(*) from files where filename = 'slow.jsonl'")
            .fetch_one(&db)
            .await
            .expect("files");
    assert_eq!(slow_files, 0);
}
