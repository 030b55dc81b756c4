//! Team alerts: a crossed threshold sends one signed webhook (Standard Webhooks, through the job
//! webhook machinery), is not sent again by later passes, and fires again only after the value
//! went back above it; two reconcilers racing send one event per crossing; the settings are
//! validated, shown in the team's info (a team key sees the URL's origin only) and never show
//! the secret after the answer that set it.

mod settings;

use std::time::Duration;

use chrono::Utc;
use reqwest::Method;
use saasllm_worker::evaluate_team_alerts;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::helpers::app::{TestApp, count};
use crate::helpers::fixtures::webhooks::{Received, Receiver, signature_is_valid};
use crate::helpers::spawn_app;
use crate::helpers::stack::{eventually, spawn_stack};

const CHAT: (&str, &[&str]) = ("ChatAgent", &["gpt-3.5-turbo", "gpt-4"]);
const PATIENCE: Duration = Duration::from_secs(30);

pub(super) async fn put_alerts(app: &TestApp, team_id: &str, body: Value) -> Value {
    app.admin_ok_with(Method::PUT, &format!("/api/teams/{team_id}/alerts"), &body)
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

/// Two reconcilers, on two pools, evaluating the alerts at the same instant.
async fn evaluate_racing(db: &PgPool, other: &PgPool) {
    let now = Utc::now();
    let (a, b) = tokio::join!(
        evaluate_team_alerts(db, now),
        evaluate_team_alerts(other, now)
    );
    a.expect("first reconciler");
    b.expect("second reconciler");
}

/// Opens `n` jobs, each holding a credit; returns their ids.
async fn hold(app: &TestApp, key: &str, team_id: &str, n: usize) -> Vec<String> {
    let mut jobs = Vec::with_capacity(n);
    for _ in 0..n {
        let job = app
            .key_ok_with(
                key,
                Method::POST,
                "/api/jobs/create",
                &json!({"team_id": team_id, "job_type": "alert_test"}),
            )
            .await;
        jobs.push(job["job_id"].as_str().expect("job_id").to_owned());
    }
    jobs
}

/// Completes the jobs as failed, which releases their holds.
async fn release(app: &TestApp, key: &str, jobs: &[String]) {
    for job_id in jobs {
        app.key_ok_with(
            key,
            Method::POST,
            &format!("/api/jobs/{job_id}/complete"),
            &json!({"status": "failed"}),
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

/// Asserts the request of the first `team.credits_low` event of `team_low`: signed, and the
/// stored payload's bytes.
fn assert_credits_low_sent(request: &Received, secret: &str, delivery_id: &str, payload: &Value) {
    assert!(signature_is_valid(secret, request), "bad signature");
    assert_eq!(request.header("webhook-id"), delivery_id);
    // The bytes signed and sent are the stored payload's.
    assert_eq!(
        request.body.as_ref(),
        serde_json::to_vec(payload).expect("payload").as_slice()
    );
    let event = request.json();
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
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_low_balance_alert_is_posted_once_signed_and_again_only_after_rearming(db: PgPool) {
    let mut stack = spawn_stack(db.clone()).await;
    let receiver = Receiver::healthy().await;
    let key = stack.team("team_low", 5, &[CHAT]).await;
    let url = receiver.url();
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
    let requests = receiver.received();
    assert_eq!(requests.len(), 1);
    assert_credits_low_sent(&requests[0], &secret, delivery_id, payload);

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
        eventually(PATIENCE, || async { receiver.received().len() == 2 }).await,
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
        evaluate_racing(&db, &other).await;
        assert_eq!(
            deliveries(&db, "team_race").await.len(),
            round,
            "round {round}"
        );
        assert_eq!(fired(&db, "team_race").await, (true, false));

        release(&app, &key, &jobs).await;
        evaluate_racing(&db, &other).await;
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
    let refills = app
        .admin_ok_with(
            Method::PUT,
            "/api/teams/team_budget/refills",
            &json!({"budget_duration": "1d"}),
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
