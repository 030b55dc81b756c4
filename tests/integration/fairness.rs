//! Fair sharing of the worker fleet: teams are served round-robin, so one team's backlog does
//! not hold up another team's call; and per-team limits (concurrency, requests and tokens per
//! minute) hold at the upstream, with 429 + `Retry-After` on the synchronous paths and queued
//! work waiting. This file holds round-robin and concurrency; `per_minute` the per-minute
//! limits, `settings` how the limits are set.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::{count, ok_json};
use crate::helpers::fixtures::requests::submit_calls;
use crate::helpers::stack::{Stack, chat, eventually, spawn_stack};

mod per_minute;
mod settings;

pub(super) fn bulk(group: &str, count: usize) -> Value {
    let calls: Vec<Value> = (0..count)
        .map(|i| json!({"custom_id": format!("c{i}"), "model_group": group, "messages": [{"role": "user", "content": format!("n{i}")}]}))
        .collect();
    json!({ "calls": calls })
}

pub(super) async fn set_limits(stack: &Stack, team_id: &str, limits: Value) -> Value {
    ok_json(
        stack
            .app
            .admin(Method::PUT, &format!("/api/teams/{team_id}/limits"))
            .json(&limits)
            .send()
            .await,
    )
    .await
}

/// The bound: once team B's call is queued, the dispatcher gives it the next free worker slot
/// but one, so B waits at most for one call already in flight (200 ms here), never for A's
/// backlog. The test counts A's calls that started between B's insert and B's start: the slots
/// freed while B's request went from its insert to the queue, plus at most one; it asserts at
/// most 32 (two per slot) where first-in-first-out would give ~20,000.
#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_huge_backlog_of_one_team_does_not_delay_another_teams_call(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key_a = stack
        .team("team_big", 5, &[("BacklogAgent", &["slow-200-gpt"])])
        .await;
    let key_b = stack
        .team("team_small", 5, &[("ChatAgent", &["gpt-4o"])])
        .await;
    let job_a = stack.create_job(&key_a, "team_big").await;
    submit_calls(&stack.app, &key_a, &job_a, &bulk("BacklogAgent", 20_000)).await;
    let started = eventually(Duration::from_secs(30), || async {
        count(
            &db,
            "select count(*) from llm_calls where team_id = 'team_big' and status = 'succeeded'",
        )
        .await
            >= 100
    })
    .await;
    assert!(started, "team A's backlog is not running");

    let job_b = stack.create_job(&key_b, "team_small").await;
    let sent = Instant::now();
    let answer = stack
        .llm_call(&key_b, &job_b, chat("ChatAgent", "me too"))
        .await;
    let latency = sent.elapsed();
    assert_eq!(answer.status(), StatusCode::OK);
    let answer: Value = answer.json().await.expect("json");
    let call_b = answer["call_id"].as_str().expect("call_id").to_owned();

    let overtaken: i64 = sqlx::query_scalar(
        "select count(*) from llm_calls a, llm_calls b
         where b.call_id = $1::uuid and a.team_id = 'team_big'
           and a.started_at > b.created_at and a.started_at < b.started_at",
    )
    .bind(&call_b)
    .fetch_one(&db)
    .await
    .expect("count");
    let backlog = count(
        &db,
        "select count(*) from llm_calls where team_id = 'team_big' and status = 'queued'",
    )
    .await;
    eprintln!(
        "team B's call: {latency:?} end to end, {overtaken} of A's calls started before it, A's backlog {backlog}"
    );
    assert!(
        backlog > 10_000,
        "A's backlog was not there to overtake ({backlog})"
    );
    assert!(overtaken <= 32, "{overtaken} of A's calls went before B's");
    // Far above the bound (one 200 ms call), far below A's backlog (over 4 minutes).
    assert!(latency < Duration::from_secs(5), "B waited {latency:?}");

    // End A's backlog: cancelling drops its queued calls.
    ok_json(
        stack
            .app
            .with_key(&key_a, Method::POST, &format!("/api/jobs/{job_a}/cancel"))
            .send()
            .await,
    )
    .await;
}

/// Eight requests at once on the OpenAI-compatible path: how many ran and how many were
/// refused with a 429 telling when to retry.
async fn burst_of_eight(stack: &Stack, key: &str) -> (usize, usize) {
    let burst = (0..8).map(|i| {
        stack
            .app
            .with_key(key, Method::POST, "/v1/chat/completions")
            .json(&json!({"model": "slow-1500-gpt", "messages": [{"role": "user", "content": format!("b{i}")}]}))
            .send()
    });
    let responses = futures::future::join_all(burst).await;
    let mut ok = 0;
    let mut limited = 0;
    for response in responses {
        let response = response.expect("request");
        match response.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                let retry_after: u64 = response.headers()["retry-after"]
                    .to_str()
                    .expect("header")
                    .parse()
                    .expect("seconds");
                assert!((1..=60).contains(&retry_after));
                let body: Value = response.json().await.expect("json");
                assert_eq!(body["error"]["code"], "rate_limit_exceeded");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    (ok, limited)
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn concurrency_limit_holds_for_queued_calls_and_the_openai_path(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team(
            "team_conc",
            20,
            &[
                ("SlowAgent", &["slow-300-gpt"]),
                ("SlowerAgent", &["slow-1500-gpt"]),
            ],
        )
        .await;
    let limits = set_limits(&stack, "team_conc", json!({"max_concurrent_calls": 3})).await;
    assert_eq!(limits["limits"]["max_concurrent_calls"], 3);
    assert!(limits["limits"]["requests_per_minute"].is_null());

    // Queued calls: never more than 3 at the upstream at once; all of them run.
    let job = stack.create_job(&key, "team_conc").await;
    submit_calls(&stack.app, &key, &job, &bulk("SlowAgent", 12)).await;
    let done = eventually(Duration::from_secs(30), || async {
        count(
            &db,
            "select count(*) from llm_calls where status = 'succeeded'",
        )
        .await
            == 12
    })
    .await;
    assert!(done, "queued calls did not all run");
    assert_eq!(
        stack.llm.max_concurrent(),
        3,
        "the limit was not used or not held"
    );

    // The OpenAI-compatible path: a burst of 8 with a limit of 2 -> 2 run, the rest get 429
    // (the upstream takes 1.5 s, so the burst is over long before a slot frees).
    set_limits(&stack, "team_conc", json!({"max_concurrent_calls": 2})).await;
    stack.llm.reset();
    let (ok, limited) = burst_of_eight(&stack, &key).await;
    assert_eq!(ok, 2, "{ok} ran, {limited} limited");
    assert_eq!(limited, 6);
    assert!(stack.llm.max_concurrent() <= 2);

    // Slots are given back: the next request runs.
    let after = stack
        .app
        .with_key(&key, Method::POST, "/v1/chat/completions")
        .json(&json!({"model": "slow-300-gpt", "messages": [{"role": "user", "content": "later"}]}))
        .send()
        .await
        .expect("request");
    assert_eq!(after.status(), StatusCode::OK);
}
