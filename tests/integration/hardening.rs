//! Hostile clients: replays to revoked keys, bodies sent before a key, invented methods, keyless
//! metrics, connections that never finish their headers, and more connections than allowed.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::app::{
    count, error_detail, ok_json, redis_url, spawn_app, spawn_app_configured,
};
use crate::helpers::fixtures::requests::metrics_text;

/// Creates a job with a callback under an `Idempotency-Key`; returns the response.
async fn create_job_idempotently(app: &crate::helpers::app::TestApp, key: &str) -> Value {
    ok_json(
        app.with_key(key, Method::POST, "/api/jobs/create")
            .header("Idempotency-Key", "job-1")
            .json(&json!({"team_id": "team_r", "job_type": "scan", "callback_url": "https://hooks.example.com/x"}))
            .send()
            .await,
    )
    .await
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_stored_response_is_not_replayed_to_a_rotated_key_or_a_suspended_team(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let old_key = app.team_with_key("team_r", 5).await;
    let first = create_job_idempotently(&app, &old_key).await;
    assert!(
        first["callback_secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_"))
    );
    // The secret is shown once and not kept for replays.
    let replay = create_job_idempotently(&app, &old_key).await;
    assert_eq!(replay["job_id"], first["job_id"]);
    assert!(replay.get("callback_secret").is_none(), "{replay}");
    assert_eq!(
        count(
            &db,
            "select count(*) from idempotency_records where response_body::text like '%whsec_%'"
        )
        .await,
        0
    );

    let rotated = ok_json(
        app.admin(Method::POST, "/api/teams/team_r/rotate-key")
            .send()
            .await,
    )
    .await;
    let replayed_to_old_key = app
        .with_key(&old_key, Method::POST, "/api/jobs/create")
        .header("Idempotency-Key", "job-1")
        .json(&json!({"team_id": "team_r", "job_type": "scan", "callback_url": "https://hooks.example.com/x"}))
        .send()
        .await
        .expect("request");
    assert_eq!(replayed_to_old_key.status(), StatusCode::UNAUTHORIZED);
    assert!(
        replayed_to_old_key
            .headers()
            .get("idempotent-replayed")
            .is_none()
    );
    let body: Value = replayed_to_old_key.json().await.expect("json");
    assert!(body.get("job_id").is_none(), "{body}");

    let new_key = rotated["virtual_key"].as_str().expect("virtual_key");
    ok_json(
        app.admin(Method::POST, "/api/teams/team_r/suspend")
            .send()
            .await,
    )
    .await;
    error_detail(
        app.with_key(new_key, Method::POST, "/api/jobs/create")
            .header("Idempotency-Key", "job-1")
            .json(&json!({"team_id": "team_r", "job_type": "scan"}))
            .send()
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(count(&db, "select count(*) from jobs").await, 1);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn team_keys_are_not_kept_in_replayable_responses(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.create_org("org_k").await;
    let create = || {
        app.admin(Method::POST, "/api/teams/create")
            .header("Idempotency-Key", "team-k")
            .json(&json!({"organization_id": "org_k", "team_id": "team_k", "credits_allocated": 3}))
            .send()
    };
    let first = ok_json(create().await).await;
    assert!(
        first["virtual_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("sk-"))
    );

    let replay = ok_json(create().await).await;

    assert_eq!(replay["team_id"], "team_k");
    assert!(replay.get("virtual_key").is_none(), "{replay}");
    let plain_key = first["virtual_key"].as_str().expect("virtual_key");
    let stored: i64 = sqlx::query_scalar(
        "select count(*) from idempotency_records where strpos(response_body::text, $1) > 0",
    )
    .bind(plain_key)
    .fetch_one(&db)
    .await
    .expect("count");
    assert_eq!(stored, 0);
    assert_eq!(
        count(&db, "select count(*) from idempotency_records").await,
        1
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_unauthenticated_body_is_refused_before_it_is_read_and_leaves_nothing(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    // Larger than the test app's 64 KiB body limit: reading it first would answer 413.
    let large = "x".repeat(256 * 1024);
    for key in [None, Some("sk-not-a-key")] {
        let mut request = app
            .anonymous(Method::POST, "/api/jobs/create")
            .header("Idempotency-Key", "unauthenticated")
            .body(large.clone());
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        error_detail(request.send().await, StatusCode::UNAUTHORIZED).await;
    }
    let openai = app
        .anonymous(Method::POST, "/v1/chat/completions")
        .header("Idempotency-Key", "unauthenticated")
        .body(large)
        .send()
        .await
        .expect("request");
    assert_eq!(openai.status(), StatusCode::UNAUTHORIZED);
    let body: Value = openai.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_api_key");

    assert_eq!(
        count(&db, "select count(*) from idempotency_records").await,
        0
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn refused_requests_are_not_stored_for_replay(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_f", 5).await;
    // Acting for another team is refused (403) after authentication: a later retry of the same
    // key with the right body must run, not replay the refusal.
    error_detail(
        app.with_key(&key, Method::POST, "/api/jobs/create")
            .header("Idempotency-Key", "k")
            .json(&json!({"team_id": "someone_else", "job_type": "scan"}))
            .send()
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        count(&db, "select count(*) from idempotency_records").await,
        0
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn metrics_take_the_admin_key_on_the_public_port_and_none_on_their_own(db: PgPool) {
    let (app, metrics_addr) = spawn_app_configured(db, &redis_url(), |settings| {
        settings.metrics_addr = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    error_detail(
        app.anonymous(Method::GET, "/metrics").send().await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let key = app.team_with_key("team_m", 1).await;
    error_detail(
        app.with_key(&key, Method::GET, "/metrics").send().await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let with_admin_key = app
        .admin(Method::GET, "/metrics")
        .send()
        .await
        .expect("scrape");
    assert_eq!(with_admin_key.status(), StatusCode::OK);

    let metrics_addr = metrics_addr.expect("a metrics listener");
    let keyless = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .expect("scrape");
    assert_eq!(keyless.status(), StatusCode::OK);
    assert!(
        keyless
            .text()
            .await
            .expect("text")
            .contains("http_requests_total")
    );
    let elsewhere = reqwest::get(format!("http://{metrics_addr}/api/organizations/x"))
        .await
        .expect("request");
    assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn invented_methods_do_not_add_metric_series(db: PgPool) {
    let app = spawn_app(db).await;
    let invented: Vec<String> = (0..50).map(|i| format!("ZZMETHOD{i}")).collect();
    for method in &invented {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let response = app
            .anonymous(method, "/health")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    let text = metrics_text(&app).await;
    assert!(
        !text.contains("ZZMETHOD"),
        "a client-chosen method became a label"
    );
    assert!(text.contains(r#"method="other""#));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_client_that_never_finishes_its_headers_is_disconnected(db: PgPool) {
    let (app, _) = spawn_app_configured(db, &redis_url(), |settings| {
        settings.connections.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let mut slow = TcpStream::connect(app.addr).await.expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    // The server closes the connection: the read ends (EOF, or a reset) instead of hanging.
    let mut buffer = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut buffer)).await;
    assert!(ended.is_ok(), "the connection was still open after 30 s");
    assert!(!String::from_utf8_lossy(&buffer).contains("200 OK"));

    let idle = TcpStream::connect(app.addr).await.expect("connect");
    let mut idle = idle;
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(30), idle.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "an idle connection was kept"
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn connections_beyond_the_cap_wait_until_one_closes(db: PgPool) {
    let (app, _) = spawn_app_configured(db, &redis_url(), |settings| {
        settings.connections.max_connections = 2;
    })
    .await;
    let holders = [
        TcpStream::connect(app.addr).await.expect("connect"),
        TcpStream::connect(app.addr).await.expect("connect"),
    ];
    // Give the server the moment it needs to accept both before the third arrives.
    let accepted = crate::helpers::stack::eventually(Duration::from_secs(5), || async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .expect("client");
        client.get(app.url("/health")).send().await.is_err()
    })
    .await;
    assert!(
        accepted,
        "a third connection was served while two were open"
    );

    drop(holders);
    let served = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
        .get(app.url("/health"))
        .send()
        .await
        .expect("served once a connection closed");
    assert!(served.status().is_success() || served.status() == StatusCode::SERVICE_UNAVAILABLE);
}
