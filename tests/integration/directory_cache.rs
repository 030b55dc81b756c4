//! Each API process caches keys, teams and grants; a change made through one process, or
//! straight in the database, reaches every process within a second (PostgreSQL notifications),
//! and the process that made it answers from the new state at once.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use saasllm_api::budget::SliceSettings;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::app::{TestApp, ok_json};
use crate::helpers::peer::PeerApi;
use crate::helpers::stack::{eventually, spawn_stack};

/// The bound the product promises for a change to reach every process.
const PROPAGATION: Duration = Duration::from_secs(1);

async fn models_status(app: &TestApp, key: &str) -> StatusCode {
    app.with_key(key, Method::GET, "/v1/models")
        .send()
        .await
        .expect("request")
        .status()
}

async fn chat_status(app: &TestApp, key: &str, model: &str) -> StatusCode {
    app.with_key(key, Method::POST, "/v1/chat/completions")
        .json(&json!({"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request")
        .status()
}

/// Polls `check` until it holds; how long that took, or `None` past `PROPAGATION` (plus slack
/// for a loaded machine, reported so the bound itself is asserted by the caller).
async fn time_until<F, Fut>(check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    eventually(PROPAGATION * 3, check)
        .await
        .then(|| started.elapsed())
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_rotated_key_is_refused_by_both_processes_within_a_second(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let peer = PeerApi::start(&db, stack.llm.base_url(), SliceSettings::default()).await;
    let old_key = stack
        .team("team_r", 10, &[("ChatAgent", &["gpt-4o"])])
        .await;
    // Both processes have the key cached.
    assert_eq!(models_status(&stack.app, &old_key).await, StatusCode::OK);
    assert_eq!(models_status(&peer.app, &old_key).await, StatusCode::OK);

    let rotated = ok_json(
        stack
            .app
            .admin(Method::POST, "/api/teams/team_r/rotate-key")
            .send()
            .await,
    )
    .await;
    let new_key = rotated["virtual_key"].as_str().expect("new key").to_owned();

    // The process that rotated it refuses the old key at once.
    assert_eq!(
        models_status(&stack.app, &old_key).await,
        StatusCode::UNAUTHORIZED
    );
    let took = time_until(|| async {
        models_status(&peer.app, &old_key).await == StatusCode::UNAUTHORIZED
    })
    .await
    .expect("the other process never refused the rotated key");
    assert!(took <= PROPAGATION, "refused only after {took:?}");
    assert_eq!(models_status(&peer.app, &new_key).await, StatusCode::OK);
    assert_eq!(models_status(&stack.app, &new_key).await, StatusCode::OK);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn suspension_grants_and_prices_reach_the_other_process_within_a_second(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let peer = PeerApi::start(&db, stack.llm.base_url(), SliceSettings::default()).await;
    let key = stack
        .team(
            "team_g",
            10,
            &[("Writer", &["gpt-4o"]), ("Reader", &["gpt-4o-mini"])],
        )
        .await;
    assert_eq!(chat_status(&peer.app, &key, "gpt-4o").await, StatusCode::OK);
    assert_eq!(
        chat_status(&peer.app, &key, "gpt-4o-mini").await,
        StatusCode::OK
    );

    // Suspended, then resumed, through the first process.
    ok_json(
        stack
            .app
            .admin(Method::POST, "/api/teams/team_g/suspend")
            .send()
            .await,
    )
    .await;
    let took =
        time_until(|| async { models_status(&peer.app, &key).await == StatusCode::FORBIDDEN })
            .await
            .expect("the suspension never reached the other process");
    assert!(took <= PROPAGATION, "suspension seen after {took:?}");
    ok_json(
        stack
            .app
            .admin(Method::POST, "/api/teams/team_g/resume")
            .send()
            .await,
    )
    .await;
    let took = time_until(|| async { models_status(&peer.app, &key).await == StatusCode::OK })
        .await
        .expect("the resumption never reached the other process");
    assert!(took <= PROPAGATION, "resumption seen after {took:?}");

    // A grant taken away.
    ok_json(
        stack
            .app
            .admin(Method::PUT, "/api/teams/team_g/model-groups")
            .json(&json!(["Writer"]))
            .send()
            .await,
    )
    .await;
    let took = time_until(|| async {
        chat_status(&peer.app, &key, "gpt-4o-mini").await == StatusCode::FORBIDDEN
    })
    .await
    .expect("the removed grant never reached the other process");
    assert!(took <= PROPAGATION, "grant change seen after {took:?}");

    // A price raised so far that the request's estimate passes the $1.00 budget.
    ok_json(
        stack
            .app
            .admin(Method::PUT, "/api/model-groups/Writer/models")
            .json(&json!([{"model_name": "gpt-4o", "priority": 0, "config": {"input_cost_per_million": 0, "output_cost_per_million": 100000}}]))
            .send()
            .await,
    )
    .await;
    let took = time_until(|| async {
        chat_status(&peer.app, &key, "gpt-4o").await == StatusCode::PAYMENT_REQUIRED
    })
    .await
    .expect("the price change never reached the other process");
    assert!(took <= PROPAGATION, "price change seen after {took:?}");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_key_revoked_in_the_database_is_refused_within_a_second(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let peer = PeerApi::start(&db, stack.llm.base_url(), SliceSettings::default()).await;
    let key = stack
        .team("team_sql", 10, &[("ChatAgent", &["gpt-4o"])])
        .await;
    assert_eq!(models_status(&stack.app, &key).await, StatusCode::OK);
    assert_eq!(models_status(&peer.app, &key).await, StatusCode::OK);

    // An operator's statement, through no API process at all.
    sqlx::query("update virtual_keys set revoked_at = now() where team_id = 'team_sql'")
        .execute(&db)
        .await
        .expect("revoke");

    for app in [&stack.app, &peer.app] {
        let took =
            time_until(|| async { models_status(app, &key).await == StatusCode::UNAUTHORIZED })
                .await
                .expect("the revocation never reached a process");
        assert!(took <= PROPAGATION, "revocation seen after {took:?}");
    }
}
