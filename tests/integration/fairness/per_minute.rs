//! Per-minute limits: requests per minute make queued calls wait for the next minute and
//! synchronous ones get a 429 with `Retry-After`; tokens per minute refuse further requests in a
//! used minute, until the limit is removed.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{bulk, set_limits};
use crate::helpers::app::{count, error_detail};
use crate::helpers::fixtures::requests::submit_calls;
use crate::helpers::stack::{Stack, chat, eventually, spawn_stack};

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
    submit_calls(&stack.app, &key, &job, &bulk(&group, 12)).await;
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
