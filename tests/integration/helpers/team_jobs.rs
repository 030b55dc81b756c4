//! A team with an open job, set up through the API of a whole stack, and what its calls left.

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::app::error_detail;
use crate::helpers::stack::Stack;

/// A team `team_id` with `credits` and these groups (created if missing), and one open job of
/// it: the team's key and the job's id.
pub async fn team_with_job(
    stack: &Stack,
    team_id: &str,
    credits: i64,
    groups: &[(&str, &[&str])],
) -> (String, String) {
    let key = stack.team(team_id, credits, groups).await;
    let job_id = stack.create_job(&key, team_id).await;
    (key, job_id)
}

/// Sends a call the API must refuse with `status`; returns the error's detail.
pub async fn refused_call(
    stack: &Stack,
    key: &str,
    job_id: &str,
    body: Value,
    status: StatusCode,
) -> String {
    error_detail(Ok(stack.llm_call(key, job_id, body).await), status).await
}

/// The status of the job's one call.
pub async fn call_status_of_job(db: &PgPool, job_id: &str) -> String {
    sqlx::query_scalar("select status from llm_calls where job_id = $1::uuid")
        .bind(job_id)
        .fetch_one(db)
        .await
        .expect("status")
}
