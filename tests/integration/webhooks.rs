//! Signed webhooks: a job with a callback URL has its `job.settled` event POSTed there, signed
//! (Standard Webhooks), retried until the receiver answers 2xx, each attempt recorded; a slow or
//! dead receiver holds up nobody else; the secret is shown only when the job is created.

mod callbacks;
mod retries;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::ok_json;
use crate::helpers::fixtures::webhooks::{
    PATIENCE, Received, Receiver, attempts_of, signature_is_valid,
};
use crate::helpers::stack::{Stack, chat, eventually, spawn_stack};

pub(super) const CHAT: (&str, &[&str]) = ("ChatAgent", &["gpt-3.5-turbo", "gpt-4"]);

/// Creates a job with a callback; returns the create response.
pub(super) async fn create_job_with_callback(
    stack: &Stack,
    key: &str,
    team_id: &str,
    extra: Value,
) -> Value {
    let mut body = json!({"team_id": team_id, "job_type": "document_analysis", "metadata": {"document_id": "doc_1"}});
    for (field, value) in extra.as_object().expect("object") {
        body[field] = value.clone();
    }
    stack
        .app
        .key_ok_with(key, Method::POST, "/api/jobs/create", &body)
        .await
}

/// Creates a job whose events go to `url`; returns its id.
pub(super) async fn job_calling_back(stack: &Stack, key: &str, team_id: &str, url: &str) -> String {
    id_of(&create_job_with_callback(stack, key, team_id, json!({"callback_url": url})).await)
}

pub(super) fn id_of(job: &Value) -> String {
    job["job_id"].as_str().expect("job_id").to_owned()
}

/// Completes the job with `status`, asserting a 200.
pub(super) async fn settle(stack: &Stack, key: &str, job_id: &str, status: &str) {
    ok_json(Ok(stack.complete(key, job_id, status).await)).await;
}

/// The delivery of a job's event: (delivery_id, status, attempts).
pub(super) async fn delivery_of(db: &PgPool, job_id: &str) -> Option<(String, String, i32)> {
    sqlx::query_as(
        "select delivery_id::text, status, attempts from webhook_deliveries where job_id = $1::uuid",
    )
    .bind(job_id)
    .fetch_optional(db)
    .await
    .expect("delivery")
}

pub(super) async fn wait_for_status(db: &PgPool, job_id: &str, status: &str) -> bool {
    eventually(PATIENCE, || async {
        delivery_of(db, job_id)
            .await
            .is_some_and(|(_, s, _)| s == status)
    })
    .await
}

/// `GET /api/jobs/{id}/webhooks` as the job's team.
pub(super) async fn listed_deliveries(stack: &Stack, key: &str, job_id: &str) -> Value {
    stack
        .app
        .key_ok(key, Method::GET, &format!("/api/jobs/{job_id}/webhooks"))
        .await
}

/// Asserts the headers of a delivered request: its signature (and that another secret's does
/// not match), its id, a current timestamp, and the content type and user agent.
fn assert_signed_request(request: &Received, secret: &str, delivery_id: &str) {
    assert!(signature_is_valid(secret, request), "bad signature");
    assert!(!signature_is_valid(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        request
    ));
    assert_eq!(request.header("webhook-id"), delivery_id);
    let sent_at: i64 = request.header("webhook-timestamp").parse().expect("unix");
    assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 600);
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(request.header("user-agent"), "saasllm-webhooks");
}

/// Asserts the `job.settled` event of a completed job of `team_hook` with one succeeded call.
fn assert_settled_event(event: &Value, job_id: &str) {
    assert_eq!(event["type"], "job.settled");
    assert!(
        chrono::DateTime::parse_from_rfc3339(event["timestamp"].as_str().expect("timestamp"))
            .is_ok()
    );
    let data = &event["data"];
    assert_eq!(data["job_id"], job_id);
    assert_eq!(data["team_id"], "team_hook");
    assert_eq!(data["job_type"], "document_analysis");
    assert_eq!(data["status"], "completed");
    assert_eq!(data["credits_charged"], 1);
    assert_eq!(
        data["calls"],
        json!({"total": 1, "succeeded": 1, "failed": 0, "cancelled": 0, "running": 0})
    );
    assert!(data["total_tokens"].as_i64().expect("tokens") > 0);
    assert!(data["total_cost_usd"].as_f64().expect("cost") > 0.0);
    assert!(data["created_at"].is_string() && data["completed_at"].is_string());
    assert_eq!(data["metadata"], json!({"document_id": "doc_1"}));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_settled_job_is_posted_to_its_callback_signed_with_the_secret_from_creation(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let receiver = Receiver::healthy().await;
    let key = stack.team("team_hook", 5, &[CHAT]).await;
    let job = create_job_with_callback(
        &stack,
        &key,
        "team_hook",
        json!({"callback_url": receiver.url()}),
    )
    .await;
    let job_id = id_of(&job);
    let secret = job["callback_secret"].as_str().expect("generated secret");
    ok_json(Ok(stack
        .llm_call(&key, &job_id, chat("ChatAgent", "hello"))
        .await))
    .await;

    settle(&stack, &key, &job_id, "completed").await;

    assert!(wait_for_status(&db, &job_id, "delivered").await);
    let (delivery_id, _, attempts) = delivery_of(&db, &job_id).await.expect("delivery");
    assert_eq!(attempts, 1);
    assert_eq!(attempts_of(&db, &job_id).await, vec![(1, Some(200), None)]);
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_signed_request(&received[0], secret, &delivery_id);
    let event = received[0].json();
    assert_settled_event(&event, &job_id);

    let listed = listed_deliveries(&stack, &key, &job_id).await;
    let delivery = &listed["deliveries"][0];
    assert_eq!(listed["deliveries"].as_array().expect("list").len(), 1);
    assert_eq!(delivery["delivery_id"], delivery_id.as_str());
    assert_eq!(delivery["event_type"], "job.settled");
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["url"], receiver.url());
    assert_eq!(delivery["attempt_count"], 1);
    assert_eq!(delivery["attempts"][0]["http_status"], 200);
    assert_eq!(delivery["payload"], event);
    let stranger = stack.team("team_stranger", 5, &[CHAT]).await;
    stack
        .app
        .key_refused(
            &stranger,
            Method::GET,
            &format!("/api/jobs/{job_id}/webhooks"),
            None,
            StatusCode::NOT_FOUND,
        )
        .await;
}

/// The event of `job_id` among the received requests.
fn event_of(received: &[Received], job_id: &str) -> Value {
    received
        .iter()
        .map(Received::json)
        .find(|e| e["data"]["job_id"] == job_id)
        .unwrap_or_else(|| panic!("no event for {job_id}"))
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn expired_and_failed_jobs_produce_events_too(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let receiver = Receiver::healthy().await;
    let key = stack
        .team("team_ends", 5, &[CHAT, ("Broken", &["bad-400"])])
        .await;
    let secret = format!("whsec_{}", STANDARD.encode([42u8; 32]));
    let callback = json!({"callback_url": receiver.url(), "callback_secret": secret});
    let expiring = create_job_with_callback(&stack, &key, "team_ends", callback.clone()).await;
    let failing =
        id_of(&create_job_with_callback(&stack, &key, "team_ends", callback.clone()).await);
    let with_failed_call =
        id_of(&create_job_with_callback(&stack, &key, "team_ends", callback).await);
    assert_eq!(expiring["callback_secret"], secret.as_str());
    let expiring = id_of(&expiring);

    sqlx::query("update jobs set expires_at = now() - interval '1 second' where job_id = $1::uuid")
        .bind(&expiring)
        .execute(&db)
        .await
        .expect("age the job");
    settle(&stack, &key, &failing, "failed").await;
    let call = stack
        .llm_call(&key, &with_failed_call, chat("Broken", "hello"))
        .await;
    assert_eq!(call.status(), StatusCode::BAD_GATEWAY);
    settle(&stack, &key, &with_failed_call, "completed").await;

    for job_id in [&expiring, &failing, &with_failed_call] {
        assert!(
            wait_for_status(&db, job_id, "delivered").await,
            "{job_id} not delivered"
        );
    }
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    assert!(received.iter().all(|r| signature_is_valid(&secret, r)));
    let expired = event_of(&received, &expiring);
    assert_eq!(expired["type"], "job.settled");
    assert_eq!(expired["data"]["status"], "expired");
    assert_eq!(expired["data"]["credits_charged"], 0);
    assert_eq!(expired["data"]["calls"]["total"], 0);
    let failed = event_of(&received, &failing);
    assert_eq!(failed["data"]["status"], "failed");
    assert_eq!(failed["data"]["credits_charged"], 0);
    let completed = event_of(&received, &with_failed_call);
    assert_eq!(completed["data"]["status"], "completed");
    assert_eq!(completed["data"]["credits_charged"], 0);
    assert_eq!(
        completed["data"]["calls"],
        json!({"total": 1, "succeeded": 0, "failed": 1, "cancelled": 0, "running": 0})
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_cancelled_job_produces_an_event_written_with_the_cancellation(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let receiver = Receiver::healthy().await;
    let key = stack.team("team_ends", 5, &[CHAT]).await;
    let secret = format!("whsec_{}", STANDARD.encode([42u8; 32]));
    let cancelled = id_of(
        &create_job_with_callback(
            &stack,
            &key,
            "team_ends",
            json!({"callback_url": receiver.url(), "callback_secret": secret}),
        )
        .await,
    );

    stack
        .app
        .key_ok(&key, Method::POST, &format!("/api/jobs/{cancelled}/cancel"))
        .await;

    assert!(wait_for_status(&db, &cancelled, "delivered").await);
    let event = event_of(&receiver.received(), &cancelled);
    assert_eq!(event["data"]["status"], "cancelled");
    assert_eq!(event["data"]["credits_charged"], 0);
}
