//! Listing files: OpenAI's paging by after, limit and order, the filter by purpose, and the
//! service's own output files listed, read and deleted like uploads.

use reqwest::{Method, StatusCode};
use saasllm_shared::db::files::{self, ChunkWriter};
use serde_json::Value;
use sqlx::PgPool;

use super::{SMALL_BATCH, get, id_of, openai_error, stored, upload};
use crate::helpers::app::ok_json;
use crate::helpers::spawn_app;

/// Writes a batch's results file of `team_id`, as the service does; its id.
async fn write_batch_output(db: &PgPool, team_id: &str) -> String {
    let output_id = files::new_file_id();
    let mut tx = db.begin().await.expect("tx");
    let mut writer = ChunkWriter::start(
        &mut tx,
        &output_id,
        team_id,
        saasllm_shared::domain::batch_api::FilePurpose::BatchOutput,
        "batch_out.jsonl",
    )
    .await
    .expect("start");
    writer
        .write(&mut tx, b"{\"id\": \"r1\"}\n")
        .await
        .expect("write");
    writer.finish(&mut tx).await.expect("finish");
    tx.commit().await.expect("commit");
    output_id
}

/// The ids of a list's files, in its order.
fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(id_of)
        .collect()
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn lists_page_by_after_limit_and_order_and_filter_by_purpose(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_l", 10).await;
    let mut uploaded = Vec::new();
    for name in ["one.jsonl", "two.jsonl", "three.jsonl"] {
        uploaded.push(id_of(
            &ok_json(Ok(upload(&app, &key, name, SMALL_BATCH.to_vec()).await)).await,
        ));
    }
    // A batch's results, as the service writes them.
    let output_id = write_batch_output(&db, "team_l").await;

    let page = |query: &'static str| {
        let app = &app;
        let key = &key;
        async move { ok_json(Ok(get(app, key, &format!("/v1/files{query}")).await)).await }
    };
    let newest_first = page("").await;
    let first_two = page("?limit=2").await;
    let oldest_first = page("?order=asc&limit=10000").await;
    let batch_only = page("?purpose=batch&order=asc").await;
    let outputs = page("?purpose=batch_output").await;
    let unknown_purpose = page("?purpose=fine-tune").await;
    let rest = ok_json(Ok(get(
        &app,
        &key,
        &format!("/v1/files?limit=2&after={}", uploaded[1]),
    )
    .await))
    .await;

    let mut all = uploaded.clone();
    all.push(output_id.clone());
    let mut all_desc = all.clone();
    all_desc.reverse();
    assert_eq!(newest_first["object"], "list");
    assert_eq!(ids(&newest_first), all_desc);
    assert_eq!(newest_first["has_more"], false);
    assert_eq!(newest_first["first_id"], all_desc[0].as_str());
    assert_eq!(newest_first["last_id"], all[0].as_str());
    assert_eq!(ids(&first_two), all_desc[..2]);
    assert_eq!(first_two["has_more"], true);
    assert_eq!(first_two["last_id"], all_desc[1].as_str());
    assert_eq!(
        ids(&rest),
        [uploaded[0].clone()],
        "after in newest-first order"
    );
    assert_eq!(rest["has_more"], false);
    assert_eq!(ids(&oldest_first), all);
    assert_eq!(ids(&batch_only), uploaded);
    assert_eq!(ids(&outputs), std::slice::from_ref(&output_id));
    assert_eq!(outputs["data"][0]["purpose"], "batch_output");
    assert_eq!(ids(&unknown_purpose), Vec::<String>::new());
    assert!(unknown_purpose["first_id"].is_null() && unknown_purpose["last_id"].is_null());
    for bad in ["?limit=0", "?limit=10001", "?limit=many", "?order=sideways"] {
        openai_error(
            get(&app, &key, &format!("/v1/files{bad}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }

    // The service's output file is read and deleted like an upload.
    let content = get(&app, &key, &format!("/v1/files/{output_id}/content")).await;
    assert_eq!(
        content.bytes().await.expect("content"),
        &b"{\"id\": \"r1\"}\n"[..]
    );
    let deleted = app
        .with_key(&key, Method::DELETE, &format!("/v1/files/{output_id}"))
        .send()
        .await;
    assert_eq!(ok_json(Ok(deleted.expect("sent"))).await["deleted"], true);
    assert_eq!(stored(&db).await, (3, 3));
}
