//! Retries: a failing receiver gets the same signed event until it answers 2xx, a dead or silent
//! receiver delays no other job's delivery, and a delivery failing past the retry window is
//! marked failed.

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{
    CHAT, create_job_with_callback, delivery_of, id_of, job_calling_back, listed_deliveries,
    settle, wait_for_status,
};
use crate::helpers::fixtures::webhooks::{
    PATIENCE, Receiver, attempts_of, closed_port_url, signature_is_valid,
};
use crate::helpers::stack::{
    StackOptions, eventually, spawn_stack, spawn_stack_with, test_worker_options,
};

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_receiver_failing_three_times_gets_the_event_on_the_fourth_attempt(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let receiver = Receiver::start(3, None).await;
    let key = stack.team("team_retry", 5, &[CHAT]).await;
    let job = create_job_with_callback(
        &stack,
        &key,
        "team_retry",
        serde_json::json!({"callback_url": receiver.url()}),
    )
    .await;
    let job_id = id_of(&job);

    settle(&stack, &key, &job_id, "completed").await;

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
    let dead_job = job_calling_back(&stack, &key, "team_mixed", &closed_port_url().await).await;
    let silent_job = job_calling_back(&stack, &key, "team_mixed", &silent.url()).await;
    settle(&stack, &key, &dead_job, "completed").await;
    settle(&stack, &key, &silent_job, "completed").await;
    assert!(
        eventually(PATIENCE, || async {
            !silent.received().is_empty() && attempts_of(&db, &dead_job).await.len() >= 2
        })
        .await,
        "the silent receiver was not reached or the dead one not retried"
    );

    let healthy_job = job_calling_back(&stack, &key, "team_mixed", &healthy.url()).await;
    settle(&stack, &key, &healthy_job, "completed").await;

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
async fn a_delivery_failing_past_the_retry_window_is_marked_failed(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let receiver = Receiver::start(usize::MAX, None).await;
    let key = stack.team("team_gone", 5, &[CHAT]).await;
    let job_id = job_calling_back(&stack, &key, "team_gone", &receiver.url()).await;
    settle(&stack, &key, &job_id, "completed").await;
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
    let listed = listed_deliveries(&stack, &key, &job_id).await;
    assert_eq!(listed["deliveries"][0]["status"], "failed");
    assert_eq!(listed["deliveries"][0]["last_http_status"], 500);
    assert!(listed["deliveries"][0]["next_attempt_at"].is_null());
}
