//! Usage reports count a settled job from the call totals kept on its row, and a job whose
//! call finished after it settled from its calls: the report is the sum of the calls either way.

use chrono::{Duration, Utc};
use saasllm_shared::db::calls::{self, Insertion, NewCall};
use saasllm_shared::db::{jobs, usage};
use saasllm_shared::domain::status::JobStatus;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::app::{job_holding_credit, team_with_chat_group};
use crate::helpers::call_rows::succeeded_result;

async fn call_in(db: &PgPool, job_id: Uuid, group: Uuid, custom_id: &str) -> calls::ClaimedCall {
    let request = json!({"messages": [{"role": "user", "content": "hello"}]});
    let new = NewCall {
        job_id,
        team_id: "team_totals",
        model_group_id: group,
        model_group: "ChatAgent",
        purpose: None,
        request: &request,
        request_id: None,
        custom_id: Some(custom_id),
        notify_on_finish: false,
    };
    let Insertion::Inserted(call_id) = calls::insert_into_open_job(db, &new).await.expect("insert")
    else {
        panic!("call not inserted");
    };
    calls::claim(db, call_id, "worker-totals", 60.0)
        .await
        .expect("claim")
        .expect("claimed")
}

async fn finish(db: &PgPool, call: &calls::ClaimedCall, cost: i64, tokens: i64) {
    let result = succeeded_result(tokens, 0, cost);
    assert!(calls::finish(db, call, &[], &result).await.expect("finish"));
}

async fn kept_totals(db: &PgPool, job_id: Uuid) -> (Option<i64>, Option<i64>) {
    sqlx::query_as("select calls_cost_micro_usd, calls_tokens from jobs where job_id = $1")
        .bind(job_id)
        .fetch_one(db)
        .await
        .expect("job")
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn settled_jobs_keep_their_totals_and_late_calls_are_still_counted(db: PgPool) {
    let group = team_with_chat_group(&db, "team_totals").await;
    let completed = job_holding_credit(&db, "team_totals", "t").await;
    for (i, (cost, tokens)) in [(300, 30), (400, 40)].into_iter().enumerate() {
        let call = call_in(&db, completed.job_id, group, &format!("c{i}")).await;
        finish(&db, &call, cost, tokens).await;
    }
    jobs::mark_completing(
        &db,
        completed.job_id,
        JobStatus::Completed,
        &json!({}),
        None,
    )
    .await
    .expect("completing");
    jobs::settle(&db, completed.job_id).await.expect("settle");
    let cancelled = job_holding_credit(&db, "team_totals", "t").await;
    let running = call_in(&db, cancelled.job_id, group, "late").await;
    jobs::cancel(&db, cancelled.job_id).await.expect("cancel");

    assert_eq!(
        kept_totals(&db, completed.job_id).await,
        (Some(700), Some(70))
    );
    assert_eq!(
        kept_totals(&db, cancelled.job_id).await,
        (None, None),
        "a call was still running"
    );
    // The running call of the cancelled job finishes after its job settled.
    finish(&db, &running, 5_000, 500).await;

    let teams = ["team_totals".to_owned()];
    let (from, to) = (
        Utc::now() - Duration::hours(1),
        Utc::now() + Duration::hours(1),
    );
    let days = usage::by_day(&db, &teams, from, to).await.expect("by day");
    let by_type = usage::by_team_and_type(&db, &teams, from, to)
        .await
        .expect("by type");
    assert_eq!(days.len(), 1);
    assert_eq!(
        (
            days[0].jobs,
            days[0].completed,
            days[0].cost_micro_usd,
            days[0].tokens
        ),
        (2, 1, 5_700, 570)
    );
    assert_eq!(
        (
            by_type[0].jobs,
            by_type[0].cost_micro_usd,
            by_type[0].tokens
        ),
        (2, 5_700, 570)
    );
    let summed: (i64, i64) = sqlx::query_as(
        "select sum(cost_micro_usd)::int8, sum(total_tokens)::int8 from llm_calls where team_id = 'team_totals'",
    )
    .fetch_one(&db)
    .await
    .expect("sums");
    assert_eq!(summed, (5_700, 570), "the report is the calls' own sum");
}
