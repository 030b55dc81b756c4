//! Claims, lease extensions and a job's open status steps are heap-only-tuple (HOT) updates:
//! they change no column that an index of their table keys on or filters by, so they write no
//! index entry. PostgreSQL counts the updates of the current transaction, HOT ones apart, in
//! `pg_stat_xact_user_tables`.

use saasllm_shared::db::calls;
use saasllm_shared::db::jobs;
use saasllm_shared::domain::status::JobStatus;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::helpers::app::{job_holding_credit, team_with_chat_group};
use crate::helpers::call_rows::{chat_agent_call, hello_request, insert_call, succeeded_result};

/// Updates of `table` in the current transaction: (all, HOT).
async fn updates_in_transaction(conn: &mut PgConnection, table: &str) -> (i64, i64) {
    sqlx::query_as(
        "select n_tup_upd, n_tup_hot_upd from pg_stat_xact_user_tables
         where schemaname = 'public' and relname = $1",
    )
    .bind(table)
    .fetch_one(conn)
    .await
    .expect("table statistics")
}

/// Asserts what the committed steps left: the call succeeded, its lease released, claimed once by
/// `worker-hot`; the job completing.
async fn assert_call_finished_and_job_completing(db: &PgPool, call_id: Uuid, job_id: Uuid) {
    let (status, lease_token, worker, lease, finished): (String, i64, Option<String>, Option<bool>, bool) =
        sqlx::query_as(
            "select status, lease_token, worker_id, lease_expires_at is not null, finished_at is not null
             from llm_calls where call_id = $1",
        )
        .bind(call_id)
        .fetch_one(db)
        .await
        .expect("call row");
    assert_eq!(
        (
            status.as_str(),
            lease_token,
            worker.as_deref(),
            lease,
            finished
        ),
        ("succeeded", 1, Some("worker-hot"), Some(false), true)
    );
    let job_status: String = sqlx::query_scalar("select status from jobs where job_id = $1")
        .bind(job_id)
        .fetch_one(db)
        .await
        .expect("job row");
    assert_eq!(job_status, "completing");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn claim_lease_extension_and_open_job_steps_write_no_index_entry(db: PgPool) {
    let model_group_id = team_with_chat_group(&db, "team_hot").await;
    let mut tx = db.begin().await.expect("begin");
    let job = job_holding_credit(&mut *tx, "team_hot", "hot").await;
    let request = hello_request();
    let call = chat_agent_call(
        job.job_id,
        "team_hot",
        model_group_id,
        &request,
        Some("first"),
    );
    let call_id = insert_call(&mut *tx, &call).await;

    let claimed = calls::claim(&mut *tx, call_id, "worker-hot", 30.0)
        .await
        .expect("claim")
        .expect("claimed");
    assert!(
        calls::extend_lease(&mut *tx, call_id, claimed.lease_token, 600.0)
            .await
            .expect("extend")
    );
    let completing = jobs::mark_completing(
        &mut *tx,
        job.job_id,
        JobStatus::Completed,
        &json!({"note": "done"}),
        None,
    )
    .await
    .expect("mark completing");
    assert!(completing.is_some(), "job was open");

    assert_eq!(
        updates_in_transaction(&mut tx, "llm_calls").await,
        (2, 2),
        "claim and lease extension: (updates, HOT updates)"
    );
    assert_eq!(
        updates_in_transaction(&mut tx, "jobs").await,
        (2, 2),
        "pending -> in_progress -> completing: (updates, HOT updates)"
    );

    // The finish sets `finished_at`, which the index of unfinished calls filters by: it must
    // leave that index, so it is no HOT update (and the counters do tell them apart).
    let result = succeeded_result(1, 1, 10);
    assert!(
        calls::finish(&mut *tx, &claimed, &[], &result)
            .await
            .expect("finish")
    );
    assert_eq!(updates_in_transaction(&mut tx, "llm_calls").await, (3, 2));
    tx.commit().await.expect("commit");

    assert_call_finished_and_job_completing(&db, call_id, job.job_id).await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_call_has_a_finish_time_exactly_when_finished(db: PgPool) {
    let model_group_id = team_with_chat_group(&db, "team_fin").await;
    let job = job_holding_credit(&db, "team_fin", "hot").await;
    let request = hello_request();
    let call = chat_agent_call(job.job_id, "team_fin", model_group_id, &request, None);
    let call_id = insert_call(&db, &call).await;

    // A queued call with a finish time would be missing from the index of unfinished calls,
    // and so from every reconciler pass; a finished one without would stay in it.
    for change in [
        "update llm_calls set finished_at = now() where call_id = $1",
        "update llm_calls set status = 'failed' where call_id = $1",
    ] {
        let refused = sqlx::query(change).bind(call_id).execute(&db).await;
        let constraint = refused
            .expect_err(change)
            .as_database_error()
            .and_then(|e| e.constraint().map(str::to_owned));
        assert_eq!(constraint.as_deref(), Some("llm_calls_finished_at_check"));
    }
    let (status, finished): (String, bool) =
        sqlx::query_as("select status, finished_at is not null from llm_calls where call_id = $1")
            .bind(call_id)
            .fetch_one(&db)
            .await
            .expect("call row");
    assert_eq!((status.as_str(), finished), ("queued", false));
}
