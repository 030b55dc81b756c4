//! The queue on a Redis Cluster: a local three-node cluster per test, the queue's steps on it, all
//! of a deployment's keys in one slot, and the whole data plane running a job over it.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use saasllm_shared::domain::limits::TeamLimits;
use saasllm_shared::queue::{CallQueue, QueueConsumer};
use saasllm_shared::redis_conn::RedisHandle;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::app::{assert_ledger_consistent, ok_json};
use crate::helpers::cluster::LocalCluster;
use crate::helpers::stack::{Stack, StackOptions, chat, eventually, spawn_stack_with};

const HOLD: Duration = Duration::from_secs(60);
/// How long a consumer's `take` waits for calls.
const WAIT: Duration = Duration::from_millis(200);

/// Every key on every node of the cluster, with the node that holds it.
async fn keys_by_node(cluster: &LocalCluster) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (node, mut conn) in cluster.node_connections().await.into_iter().enumerate() {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        found.extend(keys.into_iter().map(|key| (node, key)));
    }
    found
}

async fn slot_of(cluster: &LocalCluster, key: &str) -> i64 {
    let mut conn = cluster.node_connections().await.remove(0);
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("CLUSTER KEYSLOT")
}

/// Calls of team_a (one call at a time) and team_b (no limit) pushed, and the order the
/// consumer takes them in: round-robin over the teams, team_a holding its one slot after its
/// first call until it is freed; a long call keeps its slot. Leaves team_a's last call queued
/// and its second holding the slot; returns the consumer.
async fn assert_round_robin_within_the_concurrency_limit(
    queue: &CallQueue,
    a: &[Uuid],
    b: &[Uuid],
) -> QueueConsumer {
    let one_at_a_time = TeamLimits {
        max_concurrent_calls: Some(1),
        ..TeamLimits::default()
    };
    queue
        .push("team_a", &one_at_a_time, a)
        .await
        .expect("push a");
    queue
        .push("team_b", &TeamLimits::default(), b)
        .await
        .expect("push b");
    assert_eq!(queue.len().await.expect("len"), 5);
    assert_eq!(
        queue.next_in_line("team_a").await.expect("next"),
        Some(a[0])
    );

    // Round-robin over the teams; team_a holds its one slot after its first call.
    let mut consumer = queue.consumer(HOLD).await.expect("consumer");
    // One batch of up to ten: team_a's second call waits for its slot.
    let order: Vec<(Uuid, String)> = consumer
        .take(10, WAIT)
        .await
        .expect("take")
        .into_iter()
        .map(|d| (d.call_id, d.team_id))
        .collect();
    assert_eq!(
        order,
        vec![
            (a[0], "team_a".to_owned()),
            (b[0], "team_b".to_owned()),
            (b[1], "team_b".to_owned())
        ]
    );
    assert_eq!(
        consumer.take(10, WAIT).await.expect("take"),
        Vec::new(),
        "team_a is at its limit"
    );
    assert_eq!(queue.len().await.expect("len"), 2);

    // Freeing the slot lets team_a's next call through; a long call keeps its slot.
    queue
        .finish("team_a", &a[0].to_string(), 0)
        .await
        .expect("finish");
    let next = consumer
        .take(1, WAIT)
        .await
        .expect("take")
        .pop()
        .expect("dispatched");
    assert_eq!(next.call_id, a[1]);
    assert!(next.holds_slot);
    queue
        .extend_slot("team_a", &a[1].to_string(), HOLD)
        .await
        .expect("extend");
    assert_eq!(queue.len().await.expect("len"), 1);
    consumer
}

/// Synchronous admission of team_c against per-minute limits, with tokens counted at the end.
async fn assert_per_minute_admission(queue: &CallQueue) {
    let per_minute = TeamLimits {
        requests_per_minute: Some(1),
        tokens_per_minute: Some(1_000),
        ..TeamLimits::default()
    };
    queue
        .set_limits(&[("team_c".to_owned(), per_minute)])
        .await
        .expect("limits");
    let first = queue
        .admit("team_c", &per_minute, "request:1", true, HOLD)
        .await;
    assert_eq!(first.expect("admit"), None);
    queue
        .finish("team_c", "request:1", 40)
        .await
        .expect("finish");
    let second = queue
        .admit("team_c", &per_minute, "request:2", true, HOLD)
        .await;
    assert!(
        second.expect("admit").is_some(),
        "the minute's one request is used"
    );
}

/// Takes team_a's last call (`last`), then shows that a consumer waiting on the empty line is
/// woken by a push (its blocking pop on the cluster); leaves one call of team_b waiting.
async fn assert_a_push_wakes_a_waiting_consumer(
    queue: &CallQueue,
    redis: &RedisHandle,
    mut consumer: QueueConsumer,
    a: &[Uuid],
) {
    queue
        .finish("team_a", &a[1].to_string(), 0)
        .await
        .expect("finish");
    let last = consumer
        .take(1, WAIT)
        .await
        .expect("take")
        .pop()
        .expect("dispatched");
    assert_eq!(last.call_id, a[2]);
    let mut conn = redis.connection().await.expect("connection");
    let _: i64 = redis::cmd("DEL")
        .arg("{cluster-queue}:calls:wake")
        .query_async(&mut conn)
        .await
        .expect("no wake-ups left over");
    let late = Uuid::new_v4();
    let waiting = tokio::spawn(async move { consumer.take(4, Duration::from_secs(10)).await });
    queue
        .push("team_b", &TeamLimits::default(), &[late])
        .await
        .expect("push");
    let woken = waiting
        .await
        .expect("task")
        .expect("take")
        .pop()
        .expect("dispatched");
    assert_eq!(woken.call_id, late);
    // The batch took the line empty, which also dropped the teams from the ring; a call left
    // waiting brings the ring and the active set back, so that every kind of key exists.
    queue
        .push("team_b", &TeamLimits::default(), &[Uuid::new_v4()])
        .await
        .expect("push");
}

/// Asserts that every kind of key of the queue `cluster-queue` exists, and that all its keys
/// are in the slot of `{cluster-queue}`, on one node.
async fn assert_every_key_in_one_slot(cluster: &LocalCluster) {
    let keys = keys_by_node(cluster).await;
    let names: BTreeSet<&str> = keys.iter().map(|(_, key)| key.as_str()).collect();
    for expected in [
        "{cluster-queue}:limits",
        "{cluster-queue}:calls:teams",
        "{cluster-queue}:calls:active",
        "{cluster-queue}:inflight:team_a",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        names
            .iter()
            .any(|key| key.starts_with("{cluster-queue}:rate:team_c:")),
        "no per-minute counters in {names:?}"
    );
    let slot = slot_of(cluster, "{cluster-queue}").await;
    for (_, key) in &keys {
        assert!(key.starts_with("{cluster-queue}:"), "{key}");
        assert_eq!(
            slot_of(cluster, key).await,
            slot,
            "{key} is in another slot"
        );
    }
    let nodes: BTreeSet<usize> = keys.iter().map(|(node, _)| *node).collect();
    assert_eq!(nodes.len(), 1, "the keys are spread over nodes {nodes:?}");
}

#[tokio::test]
async fn the_queue_runs_on_a_cluster_with_all_its_keys_in_one_slot() {
    let cluster = LocalCluster::start().await;
    let redis = RedisHandle::new(&cluster.redis_config("cluster-queue")).expect("settings");
    let queue = CallQueue::new(redis.clone());
    let a: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let b: Vec<Uuid> = (0..2).map(|_| Uuid::new_v4()).collect();

    let consumer = assert_round_robin_within_the_concurrency_limit(&queue, &a, &b).await;
    assert_per_minute_admission(&queue).await;
    assert_a_push_wakes_a_waiting_consumer(&queue, &redis, consumer, &a).await;

    assert_every_key_in_one_slot(&cluster).await;
    assert!(redis.ping(Duration::from_secs(5)).await.is_ok());
}

/// Asserts that every concurrency slot the calls of `team_cluster` took is given back, on the
/// cluster, and that the deployment's keys all carry its hash tag and sit on one node.
async fn assert_slots_freed_and_keys_in_one_slot(
    stack: &Stack,
    cluster: &LocalCluster,
    queue_name: &str,
) {
    let conn = stack.redis.connection().await.expect("redis");
    let inflight = format!("{{{queue_name}}}:inflight:team_cluster");
    let freed = eventually(Duration::from_secs(10), || {
        let (mut conn, inflight) = (conn.clone(), inflight.clone());
        async move {
            let held: redis::RedisResult<i64> = redis::cmd("ZCARD")
                .arg(&inflight)
                .query_async(&mut conn)
                .await;
            held.is_ok_and(|held| held == 0)
        }
    })
    .await;
    assert!(freed, "concurrency slots still held");
    let keys = keys_by_node(cluster).await;
    let prefix = format!("{{{queue_name}}}:");
    assert!(
        keys.iter().all(|(_, key)| key.starts_with(&prefix)),
        "{keys:?}"
    );
    let nodes: BTreeSet<usize> = keys.iter().map(|(node, _)| *node).collect();
    assert_eq!(nodes.len(), 1, "the keys are spread over nodes {nodes:?}");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_api_and_a_worker_on_a_cluster_run_a_job_to_its_settlement(db: PgPool) {
    let cluster = LocalCluster::start().await;
    let queue_name = format!("test-{}", Uuid::new_v4());
    let mut stack = spawn_stack_with(
        db.clone(),
        StackOptions {
            redis: cluster.redis_config(&queue_name),
            ..StackOptions::default()
        },
    )
    .await;
    let key = stack
        .team("team_cluster", 5, &[("ChatAgent", &["gpt-4o"])])
        .await;
    let limits = stack.app.limit_concurrent_calls("team_cluster", 2).await;
    assert_eq!(limits["limits"]["max_concurrent_calls"], 2);
    let health = ok_json(stack.app.anonymous(Method::GET, "/health").send().await).await;
    assert_eq!(health["checks"]["redis"]["status"], "ok");
    let job_id = stack.create_job(&key, "team_cluster").await;

    // The synchronous call first: while queued calls hold both slots it would be refused (429).
    let sync = ok_json(Ok(stack
        .llm_call(&key, &job_id, chat("ChatAgent", "right now"))
        .await))
    .await;
    assert_eq!(sync["response"]["content"], "echo: right now");
    for n in 0..3 {
        let mut body = chat("ChatAgent", &format!("queued {n}"));
        body["async"] = json!(true);
        let accepted = stack.llm_call(&key, &job_id, body).await;
        assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    }

    let all_done = eventually(Duration::from_secs(20), || async {
        let done: i64 = sqlx::query_scalar(
            "select count(*) from llm_calls where job_id = $1::uuid and status = 'succeeded'",
        )
        .bind(&job_id)
        .fetch_one(&db)
        .await
        .expect("count");
        done == 4
    })
    .await;
    assert!(all_done, "the queued calls did not all run");
    let completion = ok_json(Ok(stack.complete(&key, &job_id, "completed").await)).await;
    assert_eq!(completion["costs"]["successful_calls"], 4);
    assert_eq!(completion["costs"]["credit_applied"], true);
    assert_eq!(completion["costs"]["credits_remaining"], 4);

    let (status, charged): (String, i64) = sqlx::query_as(
        "select j.status, (select count(*) from credit_transactions t
                           where t.team_id = j.team_id and t.transaction_type = 'deduction')
         from jobs j where j.job_id = $1::uuid",
    )
    .bind(&job_id)
    .fetch_one(&db)
    .await
    .expect("job");
    assert_eq!((status.as_str(), charged), ("completed", 1));
    assert_eq!(stack.llm.total_requests(), 4);
    assert_ledger_consistent(&db, "team_cluster").await;
    assert_slots_freed_and_keys_in_one_slot(&stack, &cluster, &queue_name).await;
    stack.stop_workers().await;
}
