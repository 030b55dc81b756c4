//! `GET /health` reports PostgreSQL and Redis, and is 503 when either is down.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::spawn_app_with;
use crate::helpers::fixtures::requests::metrics_text;
use crate::helpers::{TestApp, spawn_app};

/// `GET /health` without credentials: the status, whether the answer carries a request id, and
/// the body.
async fn health(app: &TestApp) -> (StatusCode, bool, Value) {
    let response = app
        .anonymous(Method::GET, "/health")
        .send()
        .await
        .expect("request");
    let status = response.status();
    let has_request_id = response.headers().contains_key("x-request-id");
    (status, has_request_id, response.json().await.expect("json"))
}

/// The status of each dependency the body reports: PostgreSQL's and Redis's.
fn checks(body: &Value) -> (&Value, &Value) {
    (
        &body["checks"]["postgres"]["status"],
        &body["checks"]["redis"]["status"],
    )
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn health_is_ok_when_postgres_and_redis_answer(db: PgPool) {
    let app = spawn_app(db).await;

    let (status, has_request_id, body) = health(&app).await;

    assert_eq!(status, StatusCode::OK);
    assert!(has_request_id);
    assert_eq!(body["status"], "healthy");
    assert_eq!(checks(&body), (&json!("ok"), &json!("ok")));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn health_is_503_when_redis_is_unreachable(db: PgPool) {
    // Nothing listens on port 1.
    let app = spawn_app_with(db, "redis://127.0.0.1:1", 1024).await;

    let (status, _, body) = health(&app).await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(checks(&body), (&json!("ok"), &json!("error")));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn health_is_503_when_postgres_is_gone(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    db.close().await;

    let (status, _, body) = health(&app).await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(checks(&body), (&json!("error"), &json!("ok")));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn metrics_move_after_a_job_flow(db: PgPool) {
    let stack = crate::helpers::stack::spawn_stack(db).await;
    let key = stack
        .team("team_m", 5, &[("MetricsAgent", &["fail-500", "gpt-4o"])])
        .await;
    let scrape = || metrics_text(&stack.app);
    let value = |text: &str, prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = scrape().await;

    let job_id = stack.create_job(&key, "team_m").await;
    let call = stack
        .llm_call(
            &key,
            &job_id,
            crate::helpers::stack::chat("MetricsAgent", "count me"),
        )
        .await;
    assert_eq!(call.status(), StatusCode::OK);
    assert_eq!(
        stack.complete(&key, &job_id, "completed").await.status(),
        StatusCode::OK
    );
    let after = scrape().await;

    let group = "{model_group=\"MetricsAgent\"";
    assert_eq!(
        value(
            &after,
            &format!("llm_calls_total{group},outcome=\"succeeded\"}}")
        ) - value(
            &before,
            &format!("llm_calls_total{group},outcome=\"succeeded\"}}")
        ),
        1.0
    );
    assert_eq!(
        value(&after, &format!("llm_fallbacks_total{group}}}"))
            - value(&before, &format!("llm_fallbacks_total{group}}}")),
        1.0
    );
    assert!(
        value(&after, "credits_deducted_total") >= value(&before, "credits_deducted_total") + 1.0
    );
    assert!(after.contains("http_requests_total{method=\"POST\",route=\"/api/jobs/{job_id}/llm-call\",status=\"200\"}"), "{after}");
    assert!(
        after.contains("http_request_duration_seconds_bucket"),
        "latency histograms are exported"
    );
    assert!(after.contains("llm_calls_oldest_queued_age_seconds"));
    assert!(!after.contains(&job_id), "ids never become labels");
}
