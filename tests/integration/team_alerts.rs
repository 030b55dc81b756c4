//! Team alerts: a crossed threshold sends one signed webhook (Standard Webhooks, through the job
//! webhook machinery), is not sent again by later passes, and fires again only after the value
//! went back above it; two reconcilers racing send one event per crossing; the settings are
//! validated, shown in the team's info (a team key sees the URL's origin only) and never show
//! the secret after the answer that set it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use saasllm_worker::evaluate_team_alerts;
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::helpers::app::{TestApp, count, error_detail, ok_json};
use crate::helpers::spawn_app;
use crate::helpers::stack::{eventually, spawn_stack};

const CHAT: (&str, &[&str]) = ("ChatAgent", &["gpt-3.5-turbo", "gpt-4"]);
const PATIENCE: Duration = Duration::from_secs(30);

/// Requests a receiver got: headers and exact body bytes.
type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A webhook receiver on 127.0.0.1 answering 200.
async fn receiver() -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let router = axum::Router::new()
        .route(
            "/hook",
            post(
                |State(seen): State<Received>, headers: HeaderMap, body: Bytes| async move {
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((headers, body));
                    AxumStatus::OK
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr = listener.local_addr().expect("receiver addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, received)
}

fn received(seen: &Received) -> Vec<(HeaderMap, Bytes)> {
    seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// The receiver-side check of the Standard Webhooks signature.
fn signature_is_valid(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC key");
    mac.update(
        format!(
            "{}.{}.",
            header(headers, "webhook-id"),
            header(headers, "webhook-timestamp")
        )
        .as_bytes(),
    );
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    header(headers, "webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}

async fn put_alerts(app: &TestApp, team_id: &str, body: Value) -> Value {
    ok_json(
        app.admin(Method::PUT, &format!("/api/teams/{team_id}/alerts"))
            .json(&body)
            .send()
            .await,
    )
    .await
}

/// The team's alert deliveries, oldest first: (delivery_id, event_type, payload, url, status).
async fn deliveries(db: &PgPool, team_id: &str) -> Vec<(String, String, Value, String, String)> {
    sqlx::query_as(
        "select delivery_id::text, event_type, payload, url, status from webhook_deliveries
         where team_id = $1 and job_id is null order by created_at, delivery_id",
    )
    .bind(team_id)
    .fetch_all(db)
    .await
    .expect("deliveries")
}

/// Whether each threshold is fired: (credits, budget).
async fn fired(db: &PgPool, team_id: &str) -> (bool, bool) {
    sqlx::query_as(
        "select credits_fired_at is not null, budget_fired_at is not null from team_alerts where team_id = $1",
    )
    .bind(team_id)
    .fetch_one(db)
    .await
    .expect("alert state")
}

async fn evaluate(db: &PgPool) {
    evaluate_team_alerts(db, Utc::now())
        .await
        .expect("alert evaluation");
}

/// Opens `n` jobs, each holding a credit; returns their ids.
async fn hold(app: &TestApp, key: &str, team_id: &str, n: usize) -> Vec<String> {
    let mut jobs = Vec::with_capacity(n);
    for _ in 0..n {
        let job = ok_json(
            app.with_key(key, Method::POST, "/api/jobs/create")
                .json(&json!({"team_id": team_id, "job_type": "alert_test"}))
                .send()
                .await,
        )
        .await;
        jobs.push(job["job_id"].as_str().expect("job_id").to_owned());
    }
    jobs
}

/// Completes the jobs as failed, which releases their holds.
async fn release(app: &TestApp, key: &str, jobs: &[String]) {
    for job_id in jobs {
        ok_json(
            app.with_key(key, Method::POST, &format!("/api/jobs/{job_id}/complete"))
                .json(&json!({"status": "failed"}))
                .send()
                .await,
        )
        .await;
    }
}

async fn available(db: &PgPool, team_id: &str) -> i64 {
    sqlx::query_scalar(
        "select credits_allocated - credits_used - credits_reserved from credit_balances where team_id = $1",
    )
    .bind(team_id)
    .fetch_one(db)
    .await
    .expect("balance")
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_low_balance_alert_is_posted_once_signed_and_again_only_after_rearming(db: PgPool) {
    let mut stack = spawn_stack(db.clone()).await;
    let (addr, seen) = receiver().await;
    let key = stack.team("team_low", 5, &[CHAT]).await;
    let url = format!("http://{addr}/hook");
    let set = put_alerts(
        &stack.app,
        "team_low",
        json!({"url": url, "credits_below": 3}),
    )
    .await;
    let secret = set["signing_secret"]
        .as_str()
        .expect("a secret generated for the first alerts")
        .to_owned();
    assert_eq!(set["alerts"]["enabled"], true);
    assert_eq!(set["alerts"]["credits_below_state"], "armed");
    assert_eq!(set["alerts"]["budget_spend_pct_state"], Value::Null);

    evaluate(&db).await;
    assert!(
        deliveries(&db, "team_low").await.is_empty(),
        "5 available is not below 3"
    );

    // Three open jobs hold three credits: 2 available, below 3. Later passes send nothing more.
    let jobs = hold(&stack.app, &key, "team_low", 3).await;
    for _ in 0..4 {
        evaluate(&db).await;
    }
    assert!(
        eventually(PATIENCE, || async {
            deliveries(&db, "team_low")
                .await
                .first()
                .is_some_and(|d| d.4 == "delivered")
        })
        .await,
        "the alert was not delivered"
    );
    let stored = deliveries(&db, "team_low").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let (delivery_id, event_type, payload, stored_url, _) = &stored[0];
    assert_eq!(event_type, "team.credits_low");
    assert_eq!(stored_url, &url);
    assert_eq!(fired(&db, "team_low").await, (true, false));
    let requests = received(&seen);
    assert_eq!(requests.len(), 1);
    let (headers, body) = &requests[0];
    assert!(signature_is_valid(&secret, headers, body), "bad signature");
    assert_eq!(header(headers, "webhook-id"), delivery_id);
    // The bytes signed and sent are the stored payload's.
    assert_eq!(
        body.as_ref(),
        serde_json::to_vec(payload).expect("payload").as_slice()
    );
    let event: Value = serde_json::from_slice(body).expect("JSON body");
    assert_eq!(event["type"], "team.credits_low");
    assert!(
        chrono::DateTime::parse_from_rfc3339(event["timestamp"].as_str().expect("timestamp"))
            .is_ok()
    );
    assert_eq!(
        event["data"],
        json!({"team_id": "team_low", "organization_id": "org_team_low",
               "metric": "credits_available", "threshold": 3, "value": 2})
    );

    // Back above the threshold: armed again, and nothing sent.
    release(&stack.app, &key, &jobs).await;
    assert_eq!(available(&db, "team_low").await, 5);
    evaluate(&db).await;
    assert_eq!(fired(&db, "team_low").await, (false, false));
    assert_eq!(deliveries(&db, "team_low").await.len(), 1);

    // A second crossing: a second event.
    hold(&stack.app, &key, "team_low", 3).await;
    evaluate(&db).await;
    assert!(
        eventually(PATIENCE, || async { received(&seen).len() == 2 }).await,
        "the second crossing was not delivered"
    );
    assert_eq!(deliveries(&db, "team_low").await.len(), 2);
    assert_eq!(fired(&db, "team_low").await, (true, false));
    stack.stop_workers().await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn two_reconcilers_racing_send_one_event_per_crossing(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_race", 5).await;
    put_alerts(
        &app,
        "team_race",
        json!({"url": "https://hooks.example.com/alerts", "credits_below": 3}),
    )
    .await;
    let other = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(db.connect_options().as_ref().clone())
        .await
        .expect("a second pool, as another worker process has");

    for round in 1..=5usize {
        let jobs = hold(&app, &key, "team_race", 3).await;
        let now = Utc::now();
        let (a, b) = tokio::join!(
            evaluate_team_alerts(&db, now),
            evaluate_team_alerts(&other, now)
        );
        a.expect("first reconciler");
        b.expect("second reconciler");
        assert_eq!(
            deliveries(&db, "team_race").await.len(),
            round,
            "round {round}"
        );
        assert_eq!(fired(&db, "team_race").await, (true, false));

        release(&app, &key, &jobs).await;
        let now = Utc::now();
        let (a, b) = tokio::join!(
            evaluate_team_alerts(&db, now),
            evaluate_team_alerts(&other, now)
        );
        a.expect("first reconciler");
        b.expect("second reconciler");
        assert_eq!(fired(&db, "team_race").await, (false, false));
        assert_eq!(deliveries(&db, "team_race").await.len(), round);
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_budget_alert_fires_at_the_percentage_and_rearms_after_a_budget_reset(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    // 10 credits: a budget of $1.00 at the default $0.10 per credit.
    app.team_with_key("team_budget", 10).await;
    put_alerts(
        &app,
        "team_budget",
        json!({"url": "https://hooks.example.com/alerts", "budget_spend_pct": 80}),
    )
    .await;
    let refills = ok_json(
        app.admin(Method::PUT, "/api/teams/team_budget/refills")
            .json(&json!({"budget_duration": "1d"}))
            .send()
            .await,
    )
    .await;
    let reset_at: chrono::DateTime<Utc> =
        serde_json::from_value(refills["refills"]["next_budget_reset_at"].clone())
            .expect("next_budget_reset_at");
    // Spend as the /v1 batch writer records it: 79 % first, then 85 %.
    let spend = |micro: i64| {
        sqlx::query("update credit_balances set spend_micro_usd = $1 where team_id = 'team_budget'")
            .bind(micro)
            .execute(&db)
    };
    spend(790_000).await.expect("spend");
    evaluate(&db).await;
    assert!(deliveries(&db, "team_budget").await.is_empty());
    spend(850_000).await.expect("spend");
    evaluate(&db).await;
    evaluate(&db).await;

    let stored = deliveries(&db, "team_budget").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].1, "team.budget_threshold");
    assert_eq!(
        stored[0].2["data"],
        json!({"team_id": "team_budget", "organization_id": "org_team_budget",
               "metric": "budget_spent_pct", "threshold": 80, "value": 85.0,
               "spend_usd": 0.85, "budget_usd": 1.0})
    );
    assert_eq!(fired(&db, "team_budget").await, (false, true));

    // The period ends: spend back to 0, and the alert is armed again in the same pass.
    saasllm_worker::apply_due_refills(&db, reset_at + chrono::TimeDelta::seconds(1))
        .await
        .expect("refills");
    evaluate(&db).await;
    assert_eq!(fired(&db, "team_budget").await, (false, false));
    assert_eq!(
        count(
            &db,
            "select spend_micro_usd from credit_balances where team_id = 'team_budget'"
        )
        .await,
        0
    );
    assert_eq!(deliveries(&db, "team_budget").await.len(), 1);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn team_info_shows_the_settings_a_team_key_sees_the_url_origin_and_nobody_the_secret(
    db: PgPool,
) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_info", 5).await;
    let url = "https://hooks.example.com:8443/alerts?token=s3cr3t";
    let first = put_alerts(
        &app,
        "team_info",
        json!({"url": url, "credits_below": 2, "budget_spend_pct": 90}),
    )
    .await;
    let secret = first["signing_secret"].as_str().expect("secret").to_owned();
    // Resending keeps the secret and does not show it again.
    let again = put_alerts(
        &app,
        "team_info",
        json!({"url": url, "credits_below": 2, "budget_spend_pct": 90}),
    )
    .await;
    assert_eq!(again.get("signing_secret"), None);
    let stored: String =
        sqlx::query_scalar("select secret from team_alerts where team_id = 'team_info'")
            .fetch_one(&db)
            .await
            .expect("secret");
    assert_eq!(stored, secret);

    let by_admin = ok_json(app.admin(Method::GET, "/api/teams/team_info").send().await).await;
    let by_team = ok_json(
        app.with_key(&key, Method::GET, "/api/teams/team_info")
            .send()
            .await,
    )
    .await;
    assert_eq!(by_admin["alerts"]["url"], url);
    assert_eq!(by_team["alerts"]["url"], "https://hooks.example.com:8443");
    for info in [&by_admin, &by_team] {
        assert_eq!(info["alerts"]["credits_below"], 2);
        assert_eq!(info["alerts"]["budget_spend_pct"], 90);
        assert_eq!(info["alerts"]["credits_below_state"], "armed");
        assert_eq!(info["refills"]["credit_grant"], Value::Null);
        assert!(!info.to_string().contains(&secret), "secret shown: {info}");
    }
    assert!(!by_team.to_string().contains("s3cr3t"), "{by_team}");

    // Rotating shows the new secret once; turning alerts off keeps it for pending deliveries.
    let rotated = put_alerts(
        &app,
        "team_info",
        json!({"url": url, "credits_below": 2, "rotate_secret": true}),
    )
    .await;
    let new_secret = rotated["signing_secret"].as_str().expect("rotated secret");
    assert_ne!(new_secret, secret);
    assert_eq!(rotated["alerts"]["budget_spend_pct"], Value::Null);
    let off = put_alerts(&app, "team_info", json!({"enabled": false})).await;
    assert_eq!(off["alerts"]["enabled"], false);
    assert_eq!(off["alerts"]["url"], Value::Null);
    assert_eq!(
        count(
            &db,
            "select count(*) from team_alerts where team_id = 'team_info'
               and url is null and credits_below is null and budget_spend_pct is null and secret <> ''"
        )
        .await,
        1
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn bad_alert_settings_get_400_team_keys_403_and_unknown_teams_404(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_bad", 5).await;
    let ok_url = "https://hooks.example.com/alerts";
    let long_url = format!("https://hooks.example.com/{}", "a".repeat(10 * 1024));
    let cases: Vec<(Value, &str)> = vec![
        (json!([]), "JSON object"),
        (
            json!({"url": "http://127.0.0.1/hook", "credits_below": 5}),
            "url",
        ),
        (
            json!({"url": "http://169.254.169.254/latest", "credits_below": 5}),
            "url",
        ),
        (
            json!({"url": "http://localhost:8080/hook", "credits_below": 5}),
            "url",
        ),
        (
            json!({"url": "ftp://hooks.example.com/", "credits_below": 5}),
            "url",
        ),
        (json!({"url": long_url, "credits_below": 5}), "at most 2048"),
        (
            json!({"url": "https://hooks.example.com/\u{0}", "credits_below": 5}),
            "NUL",
        ),
        (json!({"url": ok_url, "credits_below": 0}), "credits_below"),
        (
            json!({"url": ok_url, "credits_below": 1_000_000_000_000i64}),
            "credits_below",
        ),
        (
            json!({"url": ok_url, "credits_below": 1e30}),
            "whole number",
        ),
        (
            json!({"url": ok_url, "budget_spend_pct": 0}),
            "budget_spend_pct",
        ),
        (
            json!({"url": ok_url, "budget_spend_pct": 101}),
            "budget_spend_pct",
        ),
        (
            json!({"url": ok_url, "budget_spend_pct": "80"}),
            "Invalid request body",
        ),
        (json!({"credits_below": 5}), "url is required"),
        (json!({"url": ok_url}), "no threshold"),
        (
            json!({"enabled": false, "credits_below": 5, "url": ok_url}),
            "enabled is false",
        ),
        (json!({"enabled": true, "url": ok_url}), "no threshold"),
        (
            json!({"url": ok_url, "credits_below": 5, "secret": "whsec_short"}),
            "secret",
        ),
        (
            json!({"url": ok_url, "credits_below": 5, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "rotate_secret": true}),
            "not both",
        ),
        (
            json!({"url": ok_url, "credits_below": 5, "unknown": 1}),
            "unknown field",
        ),
    ];
    for (body, expected) in cases {
        let detail = error_detail(
            app.admin(Method::PUT, "/api/teams/team_bad/alerts")
                .json(&body)
                .send()
                .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(detail.contains(expected), "{body}: {detail}");
        assert!(detail.len() < 400, "detail echoes the input: {detail}");
    }
    let raw = error_detail(
        app.admin(Method::PUT, "/api/teams/team_bad/alerts")
            .body("{\"credits_below\": ")
            .send()
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(raw.contains("Malformed JSON"), "{raw}");

    let body = json!({"url": ok_url, "credits_below": 5});
    error_detail(
        app.with_key(&key, Method::PUT, "/api/teams/team_bad/alerts")
            .json(&body)
            .send()
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let missing = error_detail(
        app.admin(Method::PUT, "/api/teams/team_nobody/alerts")
            .json(&body)
            .send()
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(missing.contains("team_nobody"), "{missing}");
    assert_eq!(count(&db, "select count(*) from team_alerts").await, 0);
    assert_eq!(
        count(&db, "select count(*) from webhook_deliveries").await,
        0
    );
}
