//! The queue under load: several workers, a deep backlog, and Redis losing its entries.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::app::{assert_ledger_consistent, ok_json};
use crate::helpers::stack::{chat, eventually, spawn_stack_without_workers};

/// Inserts `count` queued calls for one job straight into PostgreSQL and pushes their ids, as
/// the API would, but without an HTTP round trip per call.
async fn queue_calls(
    stack: &crate::helpers::stack::Stack,
    job_id: &str,
    count: usize,
) -> Vec<uuid::Uuid> {
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "insert into llm_calls (call_id, job_id, team_id, model_group_id, model_group, request)
         select gen_random_uuid(), j.job_id, j.team_id, g.model_group_id, g.group_name,
                jsonb_build_object('messages', jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'n' || n)))
         from jobs j, model_groups g, generate_series(1, $2) n
         where j.job_id = $1::uuid and g.group_name = 'ChatAgent'
         returning call_id",
    )
    .bind(job_id)
    .bind(count as i32)
    .fetch_all(&stack.app.db)
    .await
    .expect("insert calls");
    let team_id: String = sqlx::query_scalar("select team_id from jobs where job_id = $1::uuid")
        .bind(job_id)
        .fetch_one(&stack.app.db)
        .await
        .expect("team");
    stack
        .queue()
        .push(&team_id, &Default::default(), &ids)
        .await
        .expect("push");
    ids
}

async fn unfinished(db: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from llm_calls where status in ('queued', 'running')")
        .fetch_one(db)
        .await
        .expect("count")
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn two_workers_run_a_thousand_calls_each_exactly_once(db: PgPool) {
    let mut stack = spawn_stack_without_workers(db.clone()).await;
    let key = stack.team("team_q", 5, &[("ChatAgent", &["gpt-4o"])]).await;
    let job_id = stack.create_job(&key, "team_q").await;
    let ids = queue_calls(&stack, &job_id, 1_000).await;
    // Duplicate messages for a tenth of them: the claim must drop the copies.
    stack
        .queue()
        .push("team_q", &Default::default(), &ids[..100])
        .await
        .expect("push duplicates");

    stack.start_worker();
    stack.start_worker();
    let drained = eventually(Duration::from_secs(60), || async {
        unfinished(&db).await == 0
    })
    .await;

    assert!(drained, "calls left unfinished");
    assert!(stack.workers_alive());
    let (succeeded, leases): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where status = 'succeeded'), count(*) filter (where lease_token = 1) from llm_calls",
    )
    .fetch_one(&db)
    .await
    .expect("counts");
    assert_eq!(succeeded, 1_000);
    assert_eq!(leases, 1_000, "every call was claimed exactly once");
    let attempts: i64 = sqlx::query_scalar("select count(*) from llm_call_attempts")
        .fetch_one(&db)
        .await
        .expect("attempts");
    assert_eq!(attempts, 1_000);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for request in stack.llm.requests() {
        let text = request.body["messages"][0]["content"]
            .as_str()
            .expect("content")
            .to_owned();
        *seen.entry(text).or_default() += 1;
    }
    assert_eq!(seen.len(), 1_000);
    assert!(
        seen.values().all(|n| *n == 1),
        "the upstream saw a call twice"
    );
    let workers: i64 = sqlx::query_scalar("select count(distinct worker_id) from llm_calls")
        .fetch_one(&db)
        .await
        .expect("workers");
    assert_eq!(workers, 2, "both workers took part");
    stack.stop_workers().await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_backlog_of_twenty_thousand_calls_drains_with_one_worker(db: PgPool) {
    let mut stack = spawn_stack_without_workers(db.clone()).await;
    let key = stack
        .team("team_backlog", 5, &[("ChatAgent", &["gpt-4o"])])
        .await;
    let job_id = stack.create_job(&key, "team_backlog").await;
    stack.llm.set_recording(false);
    queue_calls(&stack, &job_id, 20_000).await;

    stack.start_worker();
    let drained = eventually(Duration::from_secs(240), || async {
        unfinished(&db).await == 0
    })
    .await;

    assert!(drained, "backlog did not drain");
    assert!(stack.workers_alive(), "a worker exited");
    let succeeded: i64 =
        sqlx::query_scalar("select count(*) from llm_calls where status = 'succeeded'")
            .fetch_one(&db)
            .await
            .expect("count");
    assert_eq!(succeeded, 20_000);
    assert_eq!(stack.llm.total_requests(), 20_000);
    let completion = ok_json(Ok(stack.complete(&key, &job_id, "completed").await)).await;
    assert_eq!(completion["costs"]["credit_applied"], true);
    assert_ledger_consistent(&db, "team_backlog").await;
    stack.stop_workers().await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn calls_lost_from_redis_are_found_again_by_the_reconciler(db: PgPool) {
    let mut stack = spawn_stack_without_workers(db.clone()).await;
    let key = stack
        .team("team_lost", 5, &[("ChatAgent", &["gpt-4o"])])
        .await;
    let job_id = stack.create_job(&key, "team_lost").await;
    let mut body = chat("ChatAgent", "do not lose me");
    body["async"] = json!(true);
    for _ in 0..5 {
        assert_eq!(
            stack.llm_call(&key, &job_id, body.clone()).await.status(),
            202
        );
    }
    // Redis forgets everything, as after a restart without persistence.
    let forgotten = forget_queue(&stack.redis).await;
    assert!(forgotten > 0, "the queue's keys were not found");

    stack.start_worker();
    let drained = eventually(Duration::from_secs(20), || async {
        unfinished(&db).await == 0
    })
    .await;

    assert!(drained, "lost calls were not recovered");
    assert_eq!(stack.llm.total_requests(), 5);
    let job = stack.get_job(&key, &job_id).await;
    assert_eq!(job["progress"]["succeeded"], 5);
    stack.stop_workers().await;
}

/// Deletes every key of the stack's queue; how many there were.
async fn forget_queue(redis: &saasllm_shared::redis_conn::RedisHandle) -> usize {
    let prefix = saasllm_shared::queue::CallQueue::new(redis.clone())
        .key_prefix()
        .to_owned();
    let mut conn = redis.connection().await.expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    for key in &keys {
        let _: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("DEL");
    }
    keys.len()
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn calls_waiting_in_line_are_not_taken_for_lost(db: PgPool) {
    let mut stack = spawn_stack_without_workers(db.clone()).await;
    let key = stack
        .team("team_in_line", 5, &[("ChatAgent", &["gpt-4o"])])
        .await;
    let job_id = stack.create_job(&key, "team_in_line").await;
    let ids = queue_calls(&stack, &job_id, 10).await;
    // A backlog that has waited a minute, whose next call started its insert a moment after the
    // call behind it (concurrent requests reach Redis slightly out of `enqueued_at` order).
    sqlx::query(
        "update llm_calls set enqueued_at = now() - case when call_id = $2 then interval '59.9 seconds'
                                                        else interval '60 seconds' end
         where job_id = $1::uuid",
    )
    .bind(&job_id)
    .bind(ids[0])
    .execute(&db)
    .await
    .expect("age the backlog");
    let queue = stack.queue();
    assert_eq!(
        queue.next_in_line("team_in_line").await.expect("lindex"),
        Some(ids[0])
    );

    let settings = saasllm_worker::ReconcilerSettings {
        interval: Duration::from_secs(1),
        grace: Duration::from_secs(3),
    };
    saasllm_worker::reconcile_pass(&db, &queue, settings)
        .await
        .expect("pass");

    assert_eq!(
        queue.len().await.expect("llen"),
        10,
        "calls still in line were pushed again"
    );
    stack.stop_workers().await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_redis_outage_stops_only_the_reconciler_steps_that_need_redis(db: PgPool) {
    let app = crate::helpers::app::spawn_app(db.clone()).await;
    let key = app.team_with_key("team_outage", 5).await;
    let job = ok_json(
        app.with_key(&key, Method::POST, "/api/jobs/create")
            .header("Idempotency-Key", "old-create")
            .json(&json!({"team_id": "team_outage", "job_type": "overdue"}))
            .send()
            .await,
    )
    .await;
    sqlx::query("update jobs set expires_at = now() - interval '1 second'")
        .execute(&db)
        .await
        .expect("make the job overdue");
    sqlx::query("update idempotency_records set created_at = now() - interval '3 days'")
        .execute(&db)
        .await
        .expect("age the stored response");
    // Nothing listens on port 1: every Redis command fails at once.
    let dead_redis = saasllm_shared::redis_conn::RedisHandle::new(
        &saasllm_shared::config::RedisConfig::standalone("redis://127.0.0.1:1", "outage"),
    )
    .expect("valid url");
    let queue = saasllm_shared::queue::CallQueue::new(dead_redis);
    let settings = saasllm_worker::ReconcilerSettings {
        interval: Duration::from_secs(1),
        grace: Duration::from_secs(3),
    };

    let outcome = saasllm_worker::reconcile_pass(&db, &queue, settings).await;

    let error = outcome.expect_err("the Redis step fails").to_string();
    assert!(error.contains("re-queue"), "{error}");
    let status: String = sqlx::query_scalar("select status from jobs where job_id = $1::uuid")
        .bind(job["job_id"].as_str().expect("job_id"))
        .fetch_one(&db)
        .await
        .expect("job");
    assert_eq!(status, "expired");
    let held: i64 = sqlx::query_scalar(
        "select credits_reserved from credit_balances where team_id = 'team_outage'",
    )
    .fetch_one(&db)
    .await
    .expect("balance");
    assert_eq!(held, 0);
    let stored: i64 = sqlx::query_scalar("select count(*) from idempotency_records")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(stored, 0);
    assert_ledger_consistent(&db, "team_outage").await;
}
