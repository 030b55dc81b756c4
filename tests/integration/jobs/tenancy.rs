//! Tenancy: another team's key gets 404 on every route of a job; a team lists its own jobs,
//! newest first, filtered by status.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use super::CHAT;
use crate::helpers::app::{error_detail, ok_json};
use crate::helpers::stack::{chat, spawn_stack};

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn another_teams_key_gets_404_on_every_job_route(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let owner = stack.team("team_owner", 5, &[CHAT]).await;
    let stranger = stack.team("team_stranger", 5, &[CHAT]).await;
    let job_id = stack.create_job(&owner, "team_owner").await;
    let call = ok_json(Ok(stack
        .llm_call(&owner, &job_id, chat("ChatAgent", "mine"))
        .await))
    .await;
    let call_id = call["call_id"].as_str().expect("call_id");

    let routes = [
        (Method::GET, format!("/api/jobs/{job_id}"), None),
        (
            Method::GET,
            format!("/api/jobs/{job_id}/calls/{call_id}"),
            None,
        ),
        (
            Method::POST,
            format!("/api/jobs/{job_id}/llm-call"),
            Some(chat("ChatAgent", "theirs")),
        ),
        (
            Method::POST,
            format!("/api/jobs/{job_id}/complete"),
            Some(json!({"status": "completed"})),
        ),
        (Method::GET, "/api/teams/team_owner/jobs".to_owned(), None),
    ];
    for (method, path, body) in routes {
        let mut request = stack.app.with_key(&stranger, method, &path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let detail = error_detail(request.send().await, StatusCode::NOT_FOUND).await;
        assert!(!detail.contains("mine"), "{detail}");
    }
    let forbidden = error_detail(
        stack
            .app
            .with_key(&stranger, Method::POST, "/api/jobs/create")
            .json(&json!({"team_id": "team_owner", "job_type": "x"}))
            .send()
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert!(forbidden.contains("does not match"), "{forbidden}");
    let job = stack.get_job(&owner, &job_id).await;
    assert_eq!(job["status"], "in_progress");
    assert_eq!(job["progress"]["total"], 1);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn lists_a_teams_jobs_newest_first_with_a_status_filter(db: PgPool) {
    let stack = spawn_stack(db).await;
    let key = stack.team("team_l", 10, &[CHAT]).await;
    let first = stack.create_job(&key, "team_l").await;
    let second = stack.create_job(&key, "team_l").await;
    ok_json(Ok(stack.complete(&key, &first, "failed").await)).await;

    let all = ok_json(
        stack
            .app
            .with_key(&key, Method::GET, "/api/teams/team_l/jobs")
            .send()
            .await,
    )
    .await;
    let failed = ok_json(
        stack
            .app
            .with_key(
                &key,
                Method::GET,
                "/api/teams/team_l/jobs?status=failed&limit=5",
            )
            .send()
            .await,
    )
    .await;
    let bad = error_detail(
        stack
            .app
            .with_key(&key, Method::GET, "/api/teams/team_l/jobs?status=done")
            .send()
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;

    assert_eq!(all["total"], 2);
    assert_eq!(all["jobs"][0]["job_id"], second.as_str());
    assert_eq!(failed["total"], 1);
    assert_eq!(failed["jobs"][0]["job_id"], first.as_str());
    assert!(bad.contains("Invalid status 'done'"), "{bad}");
}
