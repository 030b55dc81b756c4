//! What a job's callback settings may be, and where its secret is shown: only in the answer
//! that created the job, never in a replay or a later view.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{CHAT, id_of};
use crate::helpers::app::ok_json;
use crate::helpers::fixtures::requests::{is_replayed, job_count};
use crate::helpers::spawn_app;
use crate::helpers::stack::spawn_stack;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn malformed_callback_urls_and_secrets_are_refused_with_400(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_bad", 5).await;
    let short_key = format!("whsec_{}", STANDARD.encode([1u8; 8]));
    let long_url = format!("https://hooks.example.com/{}", "a".repeat(2048));
    let cases = [
        (
            json!({"callback_url": "hooks.example.com/saasllm"}),
            "callback_url must be an absolute http or https URL",
        ),
        (
            json!({"callback_url": "/relative"}),
            "callback_url must be an absolute http or https URL",
        ),
        (
            json!({"callback_url": "ftp://hooks.example.com/saasllm"}),
            "callback_url must be an absolute http or https URL",
        ),
        (
            json!({"callback_url": long_url}),
            "callback_url must be at most 2048 characters",
        ),
        (
            json!({"callback_url": "https://hooks.example.com", "callback_secret": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
            "callback_secret must start with 'whsec_'",
        ),
        (
            json!({"callback_url": "https://hooks.example.com", "callback_secret": "whsec_not base64!"}),
            "callback_secret must be 'whsec_' followed by standard base64",
        ),
        (
            json!({"callback_url": "https://hooks.example.com", "callback_secret": short_key}),
            "callback_secret's key must be 16 to 64 bytes (got 8 bytes)",
        ),
        (
            json!({"callback_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
            "callback_secret was given without a callback_url",
        ),
        (json!({"callback_url": 42}), ""),
    ];
    for (fields, expected) in cases {
        let mut body = json!({"team_id": "team_bad", "job_type": "x"});
        for (field, value) in fields.as_object().expect("object") {
            body[field] = value.clone();
        }
        let detail = app.job_refused(&key, &body).await;
        assert!(detail.contains(expected), "{fields}: {detail}");
    }
    assert_eq!(job_count(&db).await, 0, "a refused job must hold no credit");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_secret_is_shown_only_at_creation_never_in_a_replay(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack.team("team_secret", 5, &[CHAT]).await;
    let body = json!({"team_id": "team_secret", "job_type": "x", "callback_url": "https://hooks.example.com/saasllm"});
    let create = || {
        stack
            .app
            .with_key(&key, Method::POST, "/api/jobs/create")
            .header("Idempotency-Key", "create-with-callback")
            .json(&body)
            .send()
    };
    let first = ok_json(create().await).await;
    let retry = create().await.expect("request");
    assert!(is_replayed(&retry));
    let retry: Value = retry.json().await.expect("json");
    let job_id = id_of(&first);
    let secret = first["callback_secret"].as_str().expect("secret");
    assert_eq!(retry["job_id"], job_id.as_str());
    // Stored replays carry no secrets: a client that must be able to retry passes its own.
    assert!(retry.get("callback_secret").is_none(), "{retry}");
    assert!(secret.starts_with("whsec_"));
    assert_eq!(first["callback_url"], "https://hooks.example.com/saasllm");

    let views = [
        format!("/api/jobs/{job_id}"),
        "/api/teams/team_secret/jobs".to_owned(),
        format!("/api/jobs/{job_id}/webhooks"),
    ];
    let mut shown = Vec::new();
    for path in &views {
        let response = stack.app.key_send(&key, Method::GET, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        shown.push(response.text().await.expect("body"));
    }
    for (path, text) in views.iter().zip(&shown) {
        assert!(!text.contains(secret), "{path} shows the secret");
        assert!(!text.contains("callback_secret"), "{path}: {text}");
    }
    let job: Value = serde_json::from_str(&shown[0]).expect("json");
    assert_eq!(job["callback_url"], "https://hooks.example.com/saasllm");
    assert_eq!(job_count(&db).await, 1);
}
