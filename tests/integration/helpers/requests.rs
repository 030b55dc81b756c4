//! Requests sent with a team's key or the admin key, each asserting the status it must get.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::app::{TestApp, ok_json};

/// `method path` with `key` and no body; asserts a 200 and returns the JSON.
pub async fn ok_with_key(app: &TestApp, key: &str, method: Method, path: &str) -> Value {
    ok_json(app.with_key(key, method, path).send().await).await
}

/// `method path` with the admin key and no body; asserts a 200 and returns the JSON.
pub async fn ok_as_admin(app: &TestApp, method: Method, path: &str) -> Value {
    ok_json(app.admin(method, path).send().await).await
}

/// Queues calls in bulk (`POST /api/jobs/{job_id}/llm-calls`); asserts a 202 and returns the
/// answer.
pub async fn submit_calls(app: &TestApp, key: &str, job_id: &str, body: &Value) -> Value {
    let response = app
        .with_key(key, Method::POST, &format!("/api/jobs/{job_id}/llm-calls"))
        .json(body)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json().await.expect("JSON body")
}

/// `POST /api/jobs/{job_id}/cancel`; asserts a 200 and returns the answer.
pub async fn cancel_job(app: &TestApp, key: &str, job_id: &str) -> Value {
    ok_with_key(
        app,
        key,
        Method::POST,
        &format!("/api/jobs/{job_id}/cancel"),
    )
    .await
}

/// The metrics page scraped with the admin key, as text.
pub async fn metrics_text(app: &TestApp) -> String {
    app.admin(Method::GET, "/metrics")
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text")
}
