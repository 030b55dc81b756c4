//! Organizations: create, get, list teams; admin only.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::app::error_detail;
use crate::helpers::spawn_app;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn creates_and_gets_an_organization_in_the_guide_shape(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let body = json!({"organization_id": "org_your_company", "name": "Your Company", "metadata": {"tier": "premium"}});

    let created = app
        .admin_ok_with(Method::POST, "/api/organizations/create", &body)
        .await;
    let fetched = app
        .admin_ok(Method::GET, "/api/organizations/org_your_company")
        .await;

    for org in [&created, &fetched] {
        assert_eq!(org["organization_id"], "org_your_company");
        assert_eq!(org["name"], "Your Company");
        assert_eq!(org["status"], "active");
        assert_eq!(org["metadata"], json!({"tier": "premium"}));
        assert!(org["created_at"].is_string() && org["updated_at"].is_string());
    }
    let stored: String = sqlx::query_scalar(
        "select name from organizations where organization_id = 'org_your_company'",
    )
    .fetch_one(&db)
    .await
    .expect("row");
    assert_eq!(stored, "Your Company");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn duplicate_organization_is_409(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.create_org("org_a").await;

    let detail = app
        .admin_refused(
            Method::POST,
            "/api/organizations/create",
            Some(&json!({"organization_id": "org_a", "name": "Again"})),
            StatusCode::CONFLICT,
        )
        .await;

    assert_eq!(detail, "Organization 'org_a' already exists");
    let count: i64 = sqlx::query_scalar("select count(*) from organizations")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(count, 1);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn unknown_organization_is_404(db: PgPool) {
    let app = spawn_app(db).await;

    for path in [
        "/api/organizations/org_nope",
        "/api/organizations/org_nope/teams",
    ] {
        let detail = app
            .admin_refused(Method::GET, path, None, StatusCode::NOT_FOUND)
            .await;
        assert_eq!(detail, "Organization 'org_nope' not found");
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn lists_the_teams_of_an_organization_with_their_credits(db: PgPool) {
    let app = spawn_app(db).await;
    app.create_org("org_a").await;
    app.create_org("org_b").await;
    app.create_group("ChatAgent", &["gpt-4o"]).await;
    app.create_team("org_a", "team_1", &["ChatAgent"], 10).await;
    app.create_team("org_a", "team_2", &[], 0).await;
    app.create_team("org_b", "team_3", &[], 5).await;

    let listed = app
        .admin_ok(Method::GET, "/api/organizations/org_a/teams")
        .await;

    assert_eq!(listed["organization_id"], "org_a");
    assert_eq!(listed["team_count"], 2);
    assert_eq!(listed["teams"][0]["team_id"], "team_1");
    assert_eq!(listed["teams"][0]["credits_remaining"], 10);
    assert_eq!(listed["teams"][0]["model_groups"], json!(["ChatAgent"]));
    assert_eq!(listed["teams"][1]["team_id"], "team_2");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn organization_endpoints_require_the_admin_key(db: PgPool) {
    let app = spawn_app(db).await;
    let key = app.team_with_key("team_x", 1).await;
    let body = json!({"organization_id": "org_new", "name": "New"});

    error_detail(
        app.anonymous(Method::POST, "/api/organizations/create")
            .json(&body)
            .send()
            .await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let detail = app
        .key_refused(
            &key,
            Method::POST,
            "/api/organizations/create",
            Some(&body),
            StatusCode::FORBIDDEN,
        )
        .await;
    assert_eq!(detail, "This endpoint requires the admin key");
    app.key_refused(
        &key,
        Method::GET,
        "/api/organizations/org_team_x",
        None,
        StatusCode::FORBIDDEN,
    )
    .await;
}
