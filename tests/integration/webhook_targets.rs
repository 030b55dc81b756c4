//! Webhook targets: a callback URL may point only at public addresses (unless the deployment
//! allows private targets), refused at creation when the URL shows it and at delivery, without
//! connecting, when the address does; and the delivery log names failures in generic words.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::helpers::app::ok_json;
use crate::helpers::fixtures::webhooks::{PATIENCE, attempts_of, closed_port_url};
use crate::helpers::spawn_app;
use crate::helpers::stack::{
    Stack, StackOptions, eventually, spawn_stack, spawn_stack_with, test_worker_options,
};

const CHAT: (&str, &[&str]) = ("ChatAgent", &["gpt-3.5-turbo", "gpt-4"]);
/// A public receiver; creation does not resolve it, and the tests never settle a job sent there.
const PUBLIC_URL: &str = "https://hooks.example.com/saasllm";

async fn delivery_status(db: &PgPool, job_id: &str) -> Option<String> {
    sqlx::query_scalar("select status from webhook_deliveries where job_id = $1::uuid")
        .bind(job_id)
        .fetch_optional(db)
        .await
        .expect("delivery")
}

async fn deliveries_listed(stack: &Stack, key: &str, job_id: &str) -> (Value, String) {
    let response = stack
        .app
        .with_key(key, Method::GET, &format!("/api/jobs/{job_id}/webhooks"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    (serde_json::from_str(&text).expect("JSON"), text)
}

/// Whether anything connected to `listener` (it is checked without waiting).
async fn was_connected_to(listener: &TcpListener) -> bool {
    tokio::time::timeout(Duration::from_millis(100), listener.accept())
        .await
        .is_ok()
}

/// Creates a job of `team_id` whose events go to `url`; returns its id.
async fn job_calling_back(stack: &Stack, key: &str, team_id: &str, url: &str) -> String {
    let body = json!({"team_id": team_id, "job_type": "x", "callback_url": url});
    let job = stack
        .app
        .key_ok_with(key, Method::POST, "/api/jobs/create", &body)
        .await;
    job["job_id"].as_str().expect("job_id").to_owned()
}

/// A team `team_id` with a settled job whose events go to a port where nothing listens, once
/// its delivery has been attempted `attempts` times: (key, job id).
async fn settled_job_calling_a_closed_port(
    stack: &Stack,
    team_id: &str,
    attempts: usize,
) -> (String, String) {
    let key = stack.team(team_id, 5, &[CHAT]).await;
    let job_id = job_calling_back(stack, &key, team_id, &closed_port_url().await).await;
    ok_json(Ok(stack.complete(&key, &job_id, "completed").await)).await;
    assert!(
        eventually(PATIENCE, || async {
            attempts_of(&stack.app.db, &job_id).await.len() >= attempts
        })
        .await
    );
    (key, job_id)
}

/// Callback URLs that creation refuses, each with the words its refusal must contain.
fn callback_urls_aimed_inside() -> Vec<(&'static str, &'static str)> {
    let addresses = [
        "http://127.0.0.1:6379/",
        "http://127.1/hook",
        "http://0x7f000001/hook",
        "http://2130706433/hook",
        "http://0177.0.0.1/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::1]:8080/hook",
        "http://0.0.0.0/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/hook",
        "http://172.16.0.1/hook",
        "http://192.168.1.1/hook",
        "http://100.64.0.1/hook",
        "http://198.18.0.1/hook",
        "http://224.0.0.1/hook",
        "http://255.255.255.255/hook",
        "http://192.0.2.1/hook",
        "http://[fd00::1]/hook",
        "http://[fc00::1]/hook",
        "http://[fe80::1]/hook",
        "http://[64:ff9b::a9fe:a9fe]/hook",
    ];
    let names = [
        "http://localhost:8080/hook",
        "http://localhost./hook",
        "https://api.localhost/hook",
        "http://metadata/computeMetadata/v1/",
        "http://metadata.google.internal/computeMetadata/v1/",
    ];
    addresses
        .iter()
        .map(|url| (*url, "non-public address"))
        .chain(names.iter().map(|url| (*url, "local or internal host")))
        .chain([
            (
                "http://user:pass@hooks.example.com/hook",
                "user name or password",
            ),
            (
                "https://hooks.example.com@169.254.169.254/",
                "user name or password",
            ),
        ])
        .collect()
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn callback_urls_aimed_inside_the_network_are_refused_at_creation_and_hold_no_credit(
    db: PgPool,
) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_ssrf", 5).await;
    for (url, expected) in callback_urls_aimed_inside() {
        let body = json!({"team_id": "team_ssrf", "job_type": "x", "callback_url": url});
        let detail = app.job_refused(&key, &body).await;
        assert!(
            detail.starts_with("callback_url ") && detail.contains(expected),
            "{url}: {detail}"
        );
    }
    let (jobs, reserved): (i64, i64) = sqlx::query_as(
        "select (select count(*) from jobs),
                (select credits_reserved::bigint from credit_balances where team_id = 'team_ssrf')",
    )
    .fetch_one(&db)
    .await
    .expect("counts");
    assert_eq!(
        (jobs, reserved),
        (0, 0),
        "a refused job must hold no credit"
    );

    // A public host, on any port, is accepted without being resolved.
    let body = json!({"team_id": "team_ssrf", "job_type": "x", "callback_url": "https://hooks.example.com:8443/saasllm"});
    app.key_ok_with(&key, Method::POST, "/api/jobs/create", &body)
        .await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_delivery_to_a_non_public_address_fails_at_once_without_connecting(db: PgPool) {
    let options = StackOptions {
        worker_options: saasllm_worker::WorkerOptions {
            webhook_allow_private_targets: false,
            ..test_worker_options()
        },
        ..StackOptions::default()
    };
    let stack = spawn_stack_with(db.clone(), options).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let key = stack.team("team_inside", 5, &[CHAT]).await;
    let mut jobs = Vec::new();
    for target in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://localhost:{port}/hook"),
    ] {
        let job_id = job_calling_back(&stack, &key, "team_inside", PUBLIC_URL).await;
        // A URL that never passed the creation check (written before it existed, or by hand).
        sqlx::query("update jobs set callback_url = $2 where job_id = $1::uuid")
            .bind(&job_id)
            .bind(&target)
            .execute(&db)
            .await
            .expect("point the callback inside");
        ok_json(Ok(stack.complete(&key, &job_id, "completed").await)).await;
        jobs.push(job_id);
    }

    for job_id in &jobs {
        assert!(
            eventually(PATIENCE, || async {
                delivery_status(&db, job_id).await.as_deref() == Some("failed")
            })
            .await,
            "{job_id} not failed"
        );
        assert_eq!(
            attempts_of(&db, job_id).await,
            vec![(1, None, Some("target address not allowed".to_owned()))],
            "refused once and not retried"
        );
        let (listed, _) = deliveries_listed(&stack, &key, job_id).await;
        let delivery = &listed["deliveries"][0];
        assert_eq!(delivery["status"], "failed");
        assert_eq!(delivery["last_error"], "target address not allowed");
        assert!(delivery["next_attempt_at"].is_null());
    }
    assert!(
        !was_connected_to(&listener).await,
        "a delivery reached the listener"
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_refused_connection_is_logged_as_connection_failed_without_os_details(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;

    let (key, job_id) = settled_job_calling_a_closed_port(&stack, "team_closed", 2).await;

    let attempts = attempts_of(&db, &job_id).await;
    assert!(
        attempts
            .iter()
            .all(|(_, status, error)| status.is_none()
                && error.as_deref() == Some("connection failed")),
        "{attempts:?}"
    );
    // Still retried: a receiver that is down may come back.
    assert_eq!(
        delivery_status(&db, &job_id).await.as_deref(),
        Some("pending")
    );
    let (listed, text) = deliveries_listed(&stack, &key, &job_id).await;
    assert_eq!(listed["deliveries"][0]["last_error"], "connection failed");
    for detail in ["os error", "refused", "tcp connect"] {
        assert!(!text.to_lowercase().contains(detail), "{detail} in {text}");
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn errors_recorded_with_os_details_are_cut_back_to_their_generic_part(db: PgPool) {
    let mut stack = spawn_stack(db.clone()).await;
    let (key, job_id) = settled_job_calling_a_closed_port(&stack, "team_old", 3).await;
    // No further attempt overwrites what the test writes.
    stack.stop_workers().await;
    // The errors as earlier versions recorded them.
    sqlx::query(
        "update webhook_delivery_attempts a set error = case a.attempt_number
             when 1 then 'connection failed: Connection refused (os error 111)'
             when 2 then 'no answer within 10 s'
             else 'request failed: error decoding response body' end
         from webhook_deliveries d
         where d.delivery_id = a.delivery_id and d.job_id = $1::uuid and a.attempt_number <= 3",
    )
    .bind(&job_id)
    .execute(&db)
    .await
    .expect("old errors");
    sqlx::query("update webhook_deliveries set last_error = 'connection failed: Connection refused (os error 111)' where job_id = $1::uuid")
        .bind(&job_id)
        .execute(&db)
        .await
        .expect("old last error");

    sqlx::raw_sql(include_str!(
        "../../migrations/20261202140000_generic_webhook_errors.sql"
    ))
    .execute(&db)
    .await
    .expect("migration");

    let attempts = attempts_of(&db, &job_id).await;
    let errors: Vec<Option<&str>> = attempts.iter().take(3).map(|a| a.2.as_deref()).collect();
    assert_eq!(
        errors,
        vec![
            Some("connection failed"),
            Some("timed out"),
            Some("request failed")
        ]
    );
    let (listed, _) = deliveries_listed(&stack, &key, &job_id).await;
    assert_eq!(listed["deliveries"][0]["last_error"], "connection failed");
}
