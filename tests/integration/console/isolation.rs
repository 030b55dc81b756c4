//! CSRF: a form without the token or from another origin changes nothing. Isolation: a team's
//! session sees only its own team and none of the operator pages or actions.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::app::{TestApp, count, ok_json};
use crate::helpers::browser::Browser;
use crate::helpers::{ADMIN_KEY, spawn_app};

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn forms_without_the_csrf_token_or_from_another_origin_change_nothing(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_victim", 10).await;
    let browser = Browser::signed_in(&app, ADMIN_KEY).await;
    let csrf = browser.get("/console/teams/team_victim").await.csrf();

    let missing = browser
        .post("/console/teams/team_victim/suspend", &[])
        .await;
    let wrong = browser
        .post(
            "/console/teams/team_victim/suspend",
            &[("csrf", &"0".repeat(64))],
        )
        .await;
    let cross_site = browser
        .post_from(
            "http://evil.example",
            "/console/teams/team_victim/suspend",
            &[("csrf", &csrf)],
        )
        .await;
    let credits = browser
        .post(
            "/console/teams/team_victim/add-credits",
            &[("credits", "1000")],
        )
        .await;

    for answer in [&missing, &wrong, &cross_site, &credits] {
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    }
    assert!(missing.body.contains("CSRF token is missing or wrong"));
    assert!(cross_site.body.contains("Cross-origin"));
    let team = ok_json(
        app.admin(Method::GET, "/api/teams/team_victim")
            .send()
            .await,
    )
    .await;
    assert_eq!(team["status"], "active");
    assert_eq!(team["credits"]["credits_allocated"], 10);
    assert_eq!(
        count(
            &db,
            "select count(*) from credit_transactions where team_id = 'team_victim'"
        )
        .await,
        1,
        "only the allocation"
    );

    // The same form with the token does what it says.
    let done = browser
        .post("/console/teams/team_victim/suspend", &[("csrf", &csrf)])
        .await;
    assert_eq!(done.status, StatusCode::OK);
    assert!(done.body.contains("Team suspended"), "{}", done.body);
}

/// Teams `team_own` and `team_other` with 5 credits and one open job each (of type
/// `type_of_<team>`): the own team's key and the two job ids, own first.
async fn two_teams_with_a_job_each(app: &TestApp) -> (String, [String; 2]) {
    let own_key = app.team_with_key("team_own", 5).await;
    let other_key = app.team_with_key("team_other", 5).await;
    let mut job_ids = Vec::new();
    for (team, key) in [("team_own", &own_key), ("team_other", &other_key)] {
        let job = ok_json(
            app.with_key(key, Method::POST, "/api/jobs/create")
                .json(&json!({"team_id": team, "job_type": format!("type_of_{team}")}))
                .send()
                .await,
        )
        .await;
        job_ids.push(job["job_id"].as_str().expect("id").to_owned());
    }
    (own_key, job_ids.try_into().expect("two jobs"))
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_team_sees_only_itself_and_none_of_the_operator_pages(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let (own_key, job_ids) = two_teams_with_a_job_each(&app).await;
    let browser = Browser::signed_in(&app, &own_key).await;

    let overview = browser.get("/console").await;
    assert!(overview.body.contains("Team team_own"), "{}", overview.body);
    assert!(
        !overview.body.contains("Calls queued"),
        "no fleet figures for a team"
    );
    assert!(
        overview
            .body
            .contains(r#"<div class="label">Credits available</div><div class="value">4</div>"#),
        "one of 5 credits is held by the open job: {}",
        overview.body
    );
    let jobs = browser.get("/console/jobs?team_id=team_other").await;
    assert!(jobs.body.contains(&job_ids[0]) && jobs.body.contains("type_of_team_own"));
    assert!(!jobs.body.contains(&job_ids[1]) && !jobs.body.contains("team_other"));
    let usage = browser.get("/console/usage.csv?team_id=team_other").await;
    assert_eq!(usage.status, StatusCode::OK);
    assert!(
        usage.body.lines().nth(1).is_some_and(|l| l.contains(",1,")),
        "own job only: {}",
        usage.body
    );
    for path in [
        format!("/console/jobs/{}", job_ids[1]),
        "/console/teams".to_owned(),
        "/console/teams/team_other".to_owned(),
        "/console/teams/team_own/ledger".to_owned(),
        "/console/organizations".to_owned(),
        "/console/webhooks".to_owned(),
        "/console/model-groups/ChatAgent".to_owned(),
    ] {
        let answer = browser.get(&path).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            answer.body
        );
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_team_can_post_no_operator_form_nor_cancel_another_teams_job(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let (own_key, job_ids) = two_teams_with_a_job_each(&app).await;
    let browser = Browser::signed_in(&app, &own_key).await;

    let csrf = browser.get("/console").await.csrf();
    for (path, fields) in [
        (
            "/console/teams/team_other/suspend",
            vec![("csrf", csrf.as_str())],
        ),
        (
            "/console/teams/team_own/add-credits",
            vec![("csrf", csrf.as_str()), ("credits", "100")],
        ),
        (
            "/console/organizations",
            vec![
                ("csrf", csrf.as_str()),
                ("organization_id", "x"),
                ("name", "x"),
            ],
        ),
    ] {
        let answer = browser.post(path, &fields).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
    }
    let cancel = browser
        .post(
            &format!("/console/jobs/{}/cancel", job_ids[1]),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(cancel.status, StatusCode::NOT_FOUND);
    let statuses: Vec<String> = sqlx::query_scalar("select status from jobs order by team_id")
        .fetch_all(&db)
        .await
        .expect("jobs");
    assert_eq!(statuses, ["pending", "pending"], "nothing was cancelled");
    assert_eq!(
        count(
            &db,
            "select count(*) from organizations where organization_id = 'x'"
        )
        .await,
        0
    );
    let allocated: i64 = sqlx::query_scalar(
        "select credits_allocated from credit_balances where team_id = 'team_own'",
    )
    .fetch_one(&db)
    .await
    .expect("balance");
    assert_eq!(allocated, 5);
}
