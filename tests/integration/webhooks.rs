//! Signed webhooks: a job with a callback URL has its `job.settled` event POSTed there, signed
//! (Standard Webhooks), retried until the receiver answers 2xx, each attempt recorded; a slow or
//! dead receiver holds up nobody else; the secret is shown only when the job is created.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::helpers::app::{error_detail, ok_json};
use crate::helpers::spawn_app;
use crate::helpers::stack::{
    Stack, StackOptions, chat, eventually, spawn_stack, spawn_stack_with, test_worker_options,
};

const CHAT: (&str, &[&str]) = ("ChatAgent", &["gpt-3.5-turbo", "gpt-4"]);
/// Long enough for any delivery on a loaded machine; the loop retries every 50 ms to 1 s.
const PATIENCE: Duration = Duration::from_secs(30);

/// One request as the receiver saw it.
#[derive(Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .expect("ASCII header")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

#[derive(Clone)]
struct ReceiverState {
    received: Arc<Mutex<Vec<Received>>>,
    /// Requests answered 500 before the receiver starts answering 200.
    fail_first: usize,
    /// When set, requests get no answer until it is cancelled.
    hold_until: Option<CancellationToken>,
}

/// A webhook receiver the test runs on 127.0.0.1.
struct Receiver {
    addr: SocketAddr,
    state: ReceiverState,
}

impl Receiver {
    async fn start(fail_first: usize, hold_until: Option<CancellationToken>) -> Self {
        let state = ReceiverState {
            received: Arc::default(),
            fail_first,
            hold_until,
        };
        let router = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { addr, state }
    }

    /// Answers 200 to everything.
    async fn healthy() -> Self {
        Self::start(0, None).await
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.state
            .received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> AxumStatus {
    let seen = {
        let mut received = state.received.lock().unwrap_or_else(|p| p.into_inner());
        received.push(Received { headers, body });
        received.len()
    };
    if let Some(hold) = &state.hold_until {
        hold.cancelled().await;
    }
    if seen <= state.fail_first {
        AxumStatus::INTERNAL_SERVER_ERROR
    } else {
        AxumStatus::OK
    }
}

/// A URL where nothing listens: a port bound and released at once.
async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/hook")
}

/// Whether the request carries a valid signature for `secret`, checked the way docs/WEBHOOKS.md
/// tells receivers to: HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}" with the
/// base64-decoded part of the secret after `whsec_`, compared with each `v1,` signature of the
/// header.
fn signature_is_valid(secret: &str, request: &Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC key");
    mac.update(
        format!(
            "{}.{}.",
            request.header("webhook-id"),
            request.header("webhook-timestamp")
        )
        .as_bytes(),
    );
    mac.update(&request.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    request
        .header("webhook-signature")
        .split(' ')
        .any(|signature| signature == expected)
}

/// Creates a job with a callback; returns the create response.
async fn create_job_with_callback(stack: &Stack, key: &str, team_id: &str, extra: Value) -> Value {
    let mut body = json!({"team_id": team_id, "job_type": "document_analysis", "metadata": {"document_id": "doc_1"}});
    for (field, value) in extra.as_object().expect("object") {
        body[field] = value.clone();
    }
    ok_json(
        stack
            .app
            .with_key(key, Method::POST, "/api/jobs/create")
            .json(&body)
            .send()
            .await,
    )
    .await
}

fn id_of(job: &Value) -> String {
    job["job_id"].as_str().expect("job_id").to_owned()
}

/// The delivery of a job's event: (delivery_id, status, attempts).
async fn delivery_of(db: &PgPool, job_id: &str) -> Option<(String, String, i32)> {
    sqlx::query_as(
        "select delivery_id::text, status, attempts from webhook_deliveries where job_id = $1::uuid",
    )
    .bind(job_id)
    .fetch_optional(db)
    .await
    .expect("delivery")
}

async fn wait_for_status(db: &PgPool, job_id: &str, status: &str) -> bool {
    eventually(PATIENCE, || async {
        delivery_of(db, job_id)
            .await
            .is_some_and(|(_, s, _)| s == status)
    })
    .await
}

/// The recorded attempts of a job's delivery: (attempt_number, http_status, error).
async fn attempts_of(db: &PgPool, job_id: &str) -> Vec<(i32, Option<i32>, Option<String>)> {
    sqlx::query_as(
        "select a.attempt_number, a.http_status, a.error
         from webhook_delivery_attempts a join webhook_deliveries d using (delivery_id)
         where d.job_id = $1::uuid order by a.attempt_number",
    )
    .bind(job_id)
    .fetch_all(db)
    .await
    .expect("attempts")
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

    ok_json(Ok(stack.complete(&key, &job_id, "completed").await)).await;

    assert!(wait_for_status(&db, &job_id, "delivered").await);
    let (delivery_id, _, attempts) = delivery_of(&db, &job_id).await.expect("delivery");
    assert_eq!(attempts, 1);
    assert_eq!(attempts_of(&db, &job_id).await, vec![(1, Some(200), None)]);
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
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
    let event = request.json();
    assert_eq!(event["type"], "job.settled");
    assert!(
        chrono::DateTime::parse_from_rfc3339(event["timestamp"].as_str().expect("timestamp"))
            .is_ok()
    );
    let data = &event["data"];
    assert_eq!(data["job_id"], job_id.as_str());
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

    let listed = ok_json(
        stack
            .app
            .with_key(&key, Method::GET, &format!("/api/jobs/{job_id}/webhooks"))
            .send()
            .await,
    )
    .await;
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
    error_detail(
        stack
            .app
            .with_key(
                &stranger,
                Method::GET,
                &format!("/api/jobs/{job_id}/webhooks"),
            )
            .send()
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_receiver_failing_three_times_gets_the_event_on_the_fourth_attempt(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let receiver = Receiver::start(3, None).await;
    let key = stack.team("team_retry", 5, &[CHAT]).await;
    let job = create_job_with_callback(
        &stack,
        &key,
        "team_retry",
        json!({"callback_url": receiver.url()}),
    )
    .await;
    let job_id = id_of(&job);

    ok_json(Ok(stack.complete(&key, &job_id, "completed").await)).await;

    assert!(wait_for_status(&db, &job_id, "delivered").await);
    assert_eq!(
        attempts_of(&db, &job_id).await,
        vec![
            (1, Some(500), Some("receiver answered 500".to_owned())),
            (2, Some(500), Some("receiver answered 500".to_owned())),
            (3, Some(500), Some("receiver answered 500".to_owned())),
            (4, Some(200), None),
        ]
    );
    let (delivery_id, _, attempts) = delivery_of(&db, &job_id).await.expect("delivery");
    assert_eq!(attempts, 4);
    let received = receiver.received();
    assert_eq!(received.len(), 4);
    let secret = job["callback_secret"].as_str().expect("secret");
    for request in &received {
        assert_eq!(request.header("webhook-id"), delivery_id);
        assert_eq!(request.body, received[0].body, "the same event each time");
        assert!(signature_is_valid(secret, request));
    }
    let (last_status, last_error): (Option<i32>, Option<String>) = sqlx::query_as(
        "select last_http_status, last_error from webhook_deliveries where job_id = $1::uuid",
    )
    .bind(&job_id)
    .fetch_one(&db)
    .await
    .expect("delivery");
    assert_eq!((last_status, last_error), (Some(200), None));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_dead_or_silent_receiver_does_not_delay_another_jobs_delivery(db: PgPool) {
    // A receiver that never answers keeps its attempt open for the whole (long) timeout.
    let options = StackOptions {
        worker_options: saasllm_worker::WorkerOptions {
            webhook_timeout_secs: 120,
            ..test_worker_options()
        },
        ..StackOptions::default()
    };
    let stack = spawn_stack_with(db.clone(), options).await;
    let release = CancellationToken::new();
    let silent = Receiver::start(0, Some(release.clone())).await;
    let healthy = Receiver::healthy().await;
    let key = stack.team("team_mixed", 5, &[CHAT]).await;
    let dead_job = id_of(
        &create_job_with_callback(
            &stack,
            &key,
            "team_mixed",
            json!({"callback_url": closed_port_url().await}),
        )
        .await,
    );
    let silent_job = id_of(
        &create_job_with_callback(
            &stack,
            &key,
            "team_mixed",
            json!({"callback_url": silent.url()}),
        )
        .await,
    );
    ok_json(Ok(stack.complete(&key, &dead_job, "completed").await)).await;
    ok_json(Ok(stack.complete(&key, &silent_job, "completed").await)).await;
    assert!(
        eventually(PATIENCE, || async {
            !silent.received().is_empty() && attempts_of(&db, &dead_job).await.len() >= 2
        })
        .await,
        "the silent receiver was not reached or the dead one not retried"
    );

    let healthy_job = id_of(
        &create_job_with_callback(
            &stack,
            &key,
            "team_mixed",
            json!({"callback_url": healthy.url()}),
        )
        .await,
    );
    ok_json(Ok(stack.complete(&key, &healthy_job, "completed").await)).await;

    assert!(wait_for_status(&db, &healthy_job, "delivered").await);
    assert_eq!(healthy.received().len(), 1);
    // The silent receiver's request is still open: no attempt recorded, still pending.
    assert_eq!(
        delivery_of(&db, &silent_job).await.expect("delivery").1,
        "pending"
    );
    assert!(attempts_of(&db, &silent_job).await.is_empty());
    let dead_attempts = attempts_of(&db, &dead_job).await;
    assert!(
        dead_attempts
            .iter()
            .all(|(_, status, error)| status.is_none()
                && error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("connection failed"))),
        "{dead_attempts:?}"
    );
    assert_eq!(
        delivery_of(&db, &dead_job).await.expect("delivery").1,
        "pending"
    );

    release.cancel();
    assert!(wait_for_status(&db, &silent_job, "delivered").await);
    assert_eq!(silent.received().len(), 1);
}

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
        let detail = error_detail(
            app.with_key(&key, Method::POST, "/api/jobs/create")
                .json(&body)
                .send()
                .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(detail.contains(expected), "{fields}: {detail}");
    }
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(jobs, 0, "a refused job must hold no credit");
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
    ok_json(Ok(stack.complete(&key, &failing, "failed").await)).await;
    let call = stack
        .llm_call(&key, &with_failed_call, chat("Broken", "hello"))
        .await;
    assert_eq!(call.status(), StatusCode::BAD_GATEWAY);
    ok_json(Ok(stack
        .complete(&key, &with_failed_call, "completed")
        .await))
    .await;

    for job_id in [&expiring, &failing, &with_failed_call] {
        assert!(
            wait_for_status(&db, job_id, "delivered").await,
            "{job_id} not delivered"
        );
    }
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    assert!(received.iter().all(|r| signature_is_valid(&secret, r)));
    let event_of = |job_id: &str| {
        received
            .iter()
            .map(Received::json)
            .find(|e| e["data"]["job_id"] == job_id)
            .unwrap_or_else(|| panic!("no event for {job_id}"))
    };
    let expired = event_of(&expiring);
    assert_eq!(expired["type"], "job.settled");
    assert_eq!(expired["data"]["status"], "expired");
    assert_eq!(expired["data"]["credits_charged"], 0);
    assert_eq!(expired["data"]["calls"]["total"], 0);
    let failed = event_of(&failing);
    assert_eq!(failed["data"]["status"], "failed");
    assert_eq!(failed["data"]["credits_charged"], 0);
    let completed = event_of(&with_failed_call);
    assert_eq!(completed["data"]["status"], "completed");
    assert_eq!(completed["data"]["credits_charged"], 0);
    assert_eq!(
        completed["data"]["calls"],
        json!({"total": 1, "succeeded": 0, "failed": 1, "cancelled": 0, "running": 0})
    );

    // A cancelled job: the event is written with the cancellation.
    let cancelled = id_of(
        &create_job_with_callback(
            &stack,
            &key,
            "team_ends",
            json!({"callback_url": receiver.url(), "callback_secret": secret}),
        )
        .await,
    );
    ok_json(
        stack
            .app
            .with_key(&key, Method::POST, &format!("/api/jobs/{cancelled}/cancel"))
            .send()
            .await,
    )
    .await;
    assert!(wait_for_status(&db, &cancelled, "delivered").await);
    let event = receiver
        .received()
        .iter()
        .map(Received::json)
        .find(|e| e["data"]["job_id"] == cancelled.as_str())
        .expect("cancel event");
    assert_eq!(event["data"]["status"], "cancelled");
    assert_eq!(event["data"]["credits_charged"], 0);
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
    assert_eq!(
        retry
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
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
        let response = stack
            .app
            .with_key(&key, Method::GET, path)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        shown.push(response.text().await.expect("body"));
    }
    for (path, text) in views.iter().zip(&shown) {
        assert!(!text.contains(secret), "{path} shows the secret");
        assert!(!text.contains("callback_secret"), "{path}: {text}");
    }
    let job: Value = serde_json::from_str(&shown[0]).expect("json");
    assert_eq!(job["callback_url"], "https://hooks.example.com/saasllm");
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(jobs, 1);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_delivery_failing_past_the_retry_window_is_marked_failed(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let receiver = Receiver::start(usize::MAX, None).await;
    let key = stack.team("team_gone", 5, &[CHAT]).await;
    let job_id = id_of(
        &create_job_with_callback(
            &stack,
            &key,
            "team_gone",
            json!({"callback_url": receiver.url()}),
        )
        .await,
    );
    ok_json(Ok(stack.complete(&key, &job_id, "completed").await)).await;
    assert!(
        eventually(PATIENCE, || async {
            !attempts_of(&db, &job_id).await.is_empty()
        })
        .await
    );

    // The event is now older than the 26-hour window: the next failed attempt is the last.
    sqlx::query(
        "update webhook_deliveries set created_at = now() - interval '27 hours' where job_id = $1::uuid",
    )
    .bind(&job_id)
    .execute(&db)
    .await
    .expect("age the delivery");

    assert!(wait_for_status(&db, &job_id, "failed").await);
    let attempts = attempts_of(&db, &job_id).await;
    assert!(attempts.len() >= 2, "{attempts:?}");
    assert!(attempts.iter().all(|(_, status, _)| *status == Some(500)));
    let listed = ok_json(
        stack
            .app
            .with_key(&key, Method::GET, &format!("/api/jobs/{job_id}/webhooks"))
            .send()
            .await,
    )
    .await;
    assert_eq!(listed["deliveries"][0]["status"], "failed");
    assert_eq!(listed["deliveries"][0]["last_http_status"], 500);
    assert!(listed["deliveries"][0]["next_attempt_at"].is_null());
}
