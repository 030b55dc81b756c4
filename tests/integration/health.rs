//! `GET /health` reports PostgreSQL and Redis, and is 503 when either is down.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::app::spawn_app_with;
use crate::helpers::spawn_app;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn health_is_ok_when_postgres_and_redis_answer(db: PgPool) {
    let app = spawn_app(db).await;

    let response = app
        .anonymous(Method::GET, "/health")
        .send()
        .await
        .expect("request");

    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["checks"]["postgres"]["status"], "ok");
    assert_eq!(body["checks"]["redis"]["status"], "ok");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn health_is_503_when_redis_is_unreachable(db: PgPool) {
    // Nothing listens on port 1.
    let app = spawn_app_with(db, "redis://127.0.0.1:1", 1024).await;

    let response = app
        .anonymous(Method::GET, "/health")
        .send()
        .await
        .expect("request");

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["checks"]["postgres"]["status"], "ok");
    assert_eq!(body["checks"]["redis"]["status"], "error");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn health_is_503_when_postgres_is_gone(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    db.close().await;

    let response = app
        .anonymous(Method::GET, "/health")
        .send()
        .await
        .expect("request");

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["checks"]["postgres"]["status"], "error");
    assert_eq!(body["checks"]["redis"]["status"], "ok");
}
