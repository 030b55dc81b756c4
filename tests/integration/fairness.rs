//! Fair sharing of the worker fleet: teams are served round-robin, so one team's backlog does
//! not hold up another team's call; and per-team limits (concurrency, requests and tokens per
//! minute) hold at the upstream, with 429 + `Retry-After` on the synchronous paths and queued
//! work waiting.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::{count, error_detail, ok_json};
use crate::helpers::stack::{Stack, chat, eventually, spawn_stack};

fn bulk(group: &str, count: usize) -> Value {
    let calls: Vec<Value> = (0..count)
        .map(|i| json!({"custom_id": format!("c{i}"), "model_group": group, "messages": [{"role": "user", "content": format!("n{i}")}]}))
        .collect();
    json!({ "calls": calls })
}

async fn submit(stack: &Stack, key: &str, job_id: &str, body: &Value) {
    let response = stack
        .app
        .with_key(key, Method::POST, &format!("/api/jobs/{job_id}/llm-calls"))
        .json(body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

async fn set_limits(stack: &Stack, team_id: &str, limits: Value) -> Value {
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

/// The minute the per-minute limits count in: the limiter's windows follow Redis's clock.
async fn limiter_minute(stack: &Stack) -> u64 {
    let mut conn = stack.redis.connection().await.expect("redis");
    let (seconds, _): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut conn)
        .await
        .expect("TIME");
    seconds / 60
}

/// Runs `attempt` (numbered from 0) until one run begins and ends within one minute of the
/// limiter's clock, and returns what that run observed. A run that straddles a boundary is
/// discarded; the next one starts just after that boundary, so it cannot straddle another, as a
/// run takes seconds. Each attempt must use a team and model of its own.
async fn within_one_limiter_minute<T, F, Fut>(stack: &Stack, mut attempt: F) -> T
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for number in 0..2 {
        let minute = limiter_minute(stack).await;
        let observed = attempt(number).await;
        if limiter_minute(stack).await == minute {
            return observed;
        }
    }
    panic!("two attempts straddled a minute boundary");
}

/// A team with one group over a model of its own, so its upstream requests can be counted
/// apart from a discarded attempt's.
async fn limited_team(stack: &Stack, team_id: &str, model: &str, limits: Value) -> String {
    let group = format!("Group_{team_id}");
    let key = stack.team(team_id, 20, &[(&group, &[model])]).await;
    set_limits(stack, team_id, limits).await;
    key
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
    submit(&stack, &key_a, &job_a, &bulk("BacklogAgent", 20_000)).await;
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
    submit(&stack, &key, &job, &bulk("SlowAgent", 12)).await;
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
    let burst = (0..8).map(|i| {
        stack
            .app
            .with_key(&key, Method::POST, "/v1/chat/completions")
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

/// What a team with `requests_per_minute: 5` sees in its first minute after queuing 12 calls
/// and then trying a synchronous one.
struct FirstMinuteOfFive {
    team_id: String,
    model: String,
    upstream: usize,
    queued: i64,
    refused: reqwest::Response,
    stored: i64,
}

async fn first_minute_of_five(stack: &Stack, attempt: usize) -> FirstMinuteOfFive {
    let team_id = format!("team_rpm{attempt}");
    let model = format!("rpm-model-{attempt}");
    let key = limited_team(stack, &team_id, &model, json!({"requests_per_minute": 5})).await;
    let group = format!("Group_{team_id}");
    let job = stack.create_job(&key, &team_id).await;
    submit(stack, &key, &job, &bulk(&group, 12)).await;
    let succeeded = format!(
        "select count(*) from llm_calls where team_id = '{team_id}' and status = 'succeeded'"
    );
    let five = eventually(Duration::from_secs(10), || async {
        count(&stack.app.db, &succeeded).await >= 5
    })
    .await;
    assert!(five, "the first five calls did not run");
    // An absence check: a sixth call let through would reach the upstream within this time.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let upstream = stack.llm.count_for_model(&model);
    let queued = count(
        &stack.app.db,
        &format!(
            "select count(*) from llm_calls where team_id = '{team_id}' and status = 'queued'"
        ),
    )
    .await;
    let refused = stack.llm_call(&key, &job, chat(&group, "now")).await;
    let stored = count(
        &stack.app.db,
        &format!("select count(*) from llm_calls where team_id = '{team_id}'"),
    )
    .await;
    FirstMinuteOfFive {
        team_id,
        model,
        upstream,
        queued,
        refused,
        stored,
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn requests_per_minute_make_queued_calls_wait_and_sync_calls_429(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let first =
        within_one_limiter_minute(&stack, |attempt| first_minute_of_five(&stack, attempt)).await;
    assert_eq!(
        first.upstream, 5,
        "more than the limit reached the upstream"
    );
    assert_eq!(first.queued, 7, "the others wait in the queue");

    // A synchronous call is told when to come back.
    assert_eq!(first.refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = first.refused.headers()["retry-after"]
        .to_str()
        .expect("header")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let detail = error_detail(Ok(first.refused), StatusCode::TOO_MANY_REQUESTS).await;
    assert!(detail.contains("requests_per_minute 5"), "{detail}");
    assert_eq!(first.stored, 12, "the refused call was not stored");

    // The next minute lets five more through, not more.
    let succeeded = format!(
        "select count(*) from llm_calls where team_id = '{}' and status = 'succeeded'",
        first.team_id
    );
    let ten = eventually(Duration::from_secs(75), || async {
        count(&db, &succeeded).await == 10
    })
    .await;
    assert!(ten, "queued calls did not resume in the next minute");
    // An absence check again: an eleventh call let through would show within this time.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(stack.llm.count_for_model(&first.model), 10);
}

/// What a team with `tokens_per_minute: 1` is answered in a minute it has already used.
struct UsedMinute {
    team_id: String,
    key: String,
    job: String,
    first: StatusCode,
    refused: reqwest::Response,
    openai: StatusCode,
    upstream: usize,
}

async fn used_minute(stack: &Stack, attempt: usize) -> UsedMinute {
    let team_id = format!("team_tpm{attempt}");
    let model = format!("tpm-model-{attempt}");
    let key = limited_team(stack, &team_id, &model, json!({"tokens_per_minute": 1})).await;
    let group = format!("Group_{team_id}");
    let job = stack.create_job(&key, &team_id).await;
    let first = stack
        .llm_call(&key, &job, chat(&group, "hello"))
        .await
        .status();
    let refused = stack.llm_call(&key, &job, chat(&group, "again")).await;
    let openai = stack
        .app
        .with_key(&key, Method::POST, "/v1/chat/completions")
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .expect("request")
        .status();
    let upstream = stack.llm.count_for_model(&model);
    UsedMinute {
        team_id,
        key,
        job,
        first,
        refused,
        openai,
        upstream,
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn tokens_per_minute_refuse_further_requests_once_used(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let used = within_one_limiter_minute(&stack, |attempt| used_minute(&stack, attempt)).await;
    assert_eq!(
        used.first,
        StatusCode::OK,
        "the minute's first request runs"
    );
    error_detail(Ok(used.refused), StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(used.openai, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(used.upstream, 1);

    // Removing the limit takes effect at once.
    set_limits(&stack, &used.team_id, json!({"tokens_per_minute": null})).await;
    let group = format!("Group_{}", used.team_id);
    let freed = stack
        .llm_call(&used.key, &used.job, chat(&group, "free"))
        .await;
    assert_eq!(freed.status(), StatusCode::OK);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn limits_are_set_by_the_admin_only_and_validated(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_lim", 5, &[("ChatAgent", &["gpt-4o"])])
        .await;
    let put = |body: Value| {
        stack
            .app
            .admin(Method::PUT, "/api/teams/team_lim/limits")
            .json(&body)
            .send()
    };
    for body in [
        json!({"max_concurrent_calls": 0}),
        json!({"requests_per_minute": -5}),
        json!({"tokens_per_minute": 2_000_000_000_i64}),
        json!({"concurrency": 3}),
    ] {
        error_detail(put(body).await, StatusCode::BAD_REQUEST).await;
    }
    let by_team = stack
        .app
        .with_key(&key, Method::PUT, "/api/teams/team_lim/limits")
        .json(&json!({"max_concurrent_calls": 100}))
        .send()
        .await;
    error_detail(by_team, StatusCode::FORBIDDEN).await;
    let unknown = stack
        .app
        .admin(Method::PUT, "/api/teams/nobody/limits")
        .json(&json!({}))
        .send()
        .await;
    error_detail(unknown, StatusCode::NOT_FOUND).await;

    set_limits(
        &stack,
        "team_lim",
        json!({"max_concurrent_calls": 4, "requests_per_minute": 100, "tokens_per_minute": 5000}),
    )
    .await;
    let team = ok_json(
        stack
            .app
            .with_key(&key, Method::GET, "/api/teams/team_lim")
            .send()
            .await,
    )
    .await;
    assert_eq!(
        team["limits"],
        json!({"max_concurrent_calls": 4, "requests_per_minute": 100, "tokens_per_minute": 5000})
    );
    let stored: (Option<i32>, Option<i32>, Option<i32>) = sqlx::query_as(
        "select max_concurrent_calls, requests_per_minute, tokens_per_minute from teams where team_id = 'team_lim'",
    )
    .fetch_one(&db)
    .await
    .expect("limits");
    assert_eq!(stored, (Some(4), Some(100), Some(5000)));
    set_limits(&stack, "team_lim", json!({})).await;
    let team = ok_json(
        stack
            .app
            .with_key(&key, Method::GET, "/api/teams/team_lim")
            .send()
            .await,
    )
    .await;
    assert_eq!(
        team["limits"],
        json!({"max_concurrent_calls": null, "requests_per_minute": null, "tokens_per_minute": null})
    );
}
