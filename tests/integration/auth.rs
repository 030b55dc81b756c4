//! Authentication and tenancy: 401 without a valid key, 403 for team keys on admin endpoints,
//! 404 (never data) across teams; every error is `{"detail": "..."}`.

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::{count, error_detail, ok_json};
use crate::helpers::{ADMIN_KEY, TestApp, spawn_app};

/// Asserts a JSON error body that holds only `detail`, and returns the detail.
async fn only_detail(response: reqwest::Result<Response>, expected: StatusCode) -> String {
    let response = response.expect("request sent");
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let status = response.status();
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(status, expected, "body: {body}");
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type}"
    );
    let object = body.as_object().expect("object body");
    assert_eq!(object.len(), 1, "only detail in {body}");
    body["detail"].as_str().expect("detail string").to_owned()
}

/// One request per kind of endpoint, built with `auth` applied.
fn sample_requests(
    app: &TestApp,
    auth: impl Fn(RequestBuilder) -> RequestBuilder,
) -> Vec<RequestBuilder> {
    vec![
        auth(app.anonymous(Method::GET, "/api/model-groups")),
        auth(app.anonymous(Method::GET, "/api/teams/team_a")),
        auth(app.anonymous(Method::GET, "/api/credits/teams/team_a/balance")),
        auth(
            app.anonymous(Method::POST, "/api/organizations/create")
                .json(&json!({"organization_id": "org_x", "name": "X"})),
        ),
        auth(
            app.anonymous(Method::POST, "/api/credits/teams/team_a/add")
                .json(&json!({"credits_amount": 5})),
        ),
    ]
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_request_without_a_key_is_401_with_a_json_detail(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_a", 10).await;

    for request in sample_requests(&app, |r| r) {
        let response = request.send().await.expect("request");
        assert_eq!(
            response
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
        let detail = only_detail(Ok(response), StatusCode::UNAUTHORIZED).await;
        assert_eq!(
            detail,
            "Missing API key: send 'Authorization: Bearer <key>' (or 'X-Admin-Key: <admin key>')"
        );
    }
    assert_eq!(count(&db, "select count(*) from organizations").await, 1);
    assert_eq!(
        count(&db, "select count(*) from credit_transactions").await,
        1
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_unknown_bearer_key_or_admin_key_is_401(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_a", 10).await;
    let unknown_team_key = format!("sk-{}", "0".repeat(64));

    for request in sample_requests(&app, |r| r.bearer_auth(&unknown_team_key)) {
        assert_eq!(
            only_detail(request.send().await, StatusCode::UNAUTHORIZED).await,
            "Invalid API key"
        );
    }
    for request in sample_requests(&app, |r| r.header("X-Admin-Key", "not-the-admin-key")) {
        assert_eq!(
            only_detail(request.send().await, StatusCode::UNAUTHORIZED).await,
            "Invalid API key"
        );
    }
    for request in sample_requests(&app, |r| r.header("X-Admin-Key", "")) {
        assert_eq!(
            only_detail(request.send().await, StatusCode::UNAUTHORIZED).await,
            "Invalid API key"
        );
    }
    assert_eq!(count(&db, "select count(*) from organizations").await, 1);
    assert_eq!(
        count(&db, "select count(*) from credit_transactions").await,
        1
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_authorization_header_that_is_not_a_bearer_token_is_401(db: PgPool) {
    let app = spawn_app(db).await;
    let key = app.team_with_key("team_a", 10).await;

    for value in [
        "Basic x".to_owned(),
        format!("Basic {ADMIN_KEY}"),
        "Bearer".to_owned(),
        "Bearer   ".to_owned(),
        key.clone(),
    ] {
        for request in sample_requests(&app, |r| r.header("Authorization", &value)) {
            let detail = only_detail(request.send().await, StatusCode::UNAUTHORIZED).await;
            assert_eq!(
                detail, "Invalid Authorization header: expected 'Authorization: Bearer <key>'",
                "Authorization: {value}"
            );
        }
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_admin_key_works_as_x_admin_key_and_as_a_bearer_token(db: PgPool) {
    let app = spawn_app(db.clone()).await;

    let via_header = ok_json(
        app.anonymous(Method::POST, "/api/organizations/create")
            .header("X-Admin-Key", ADMIN_KEY)
            .json(&json!({"organization_id": "org_header", "name": "Header"}))
            .send()
            .await,
    )
    .await;
    let via_bearer = ok_json(
        app.anonymous(Method::POST, "/api/organizations/create")
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"organization_id": "org_bearer", "name": "Bearer"}))
            .send()
            .await,
    )
    .await;
    let lowercase_scheme = ok_json(
        app.anonymous(Method::GET, "/api/organizations/org_bearer")
            .header("Authorization", format!("bearer {ADMIN_KEY}"))
            .send()
            .await,
    )
    .await;

    assert_eq!(via_header["organization_id"], "org_header");
    assert_eq!(via_bearer["organization_id"], "org_bearer");
    assert_eq!(lowercase_scheme["name"], "Bearer");
    let orgs: Vec<String> =
        sqlx::query_scalar("select organization_id from organizations order by organization_id")
            .fetch_all(&db)
            .await
            .expect("orgs");
    assert_eq!(orgs, vec!["org_bearer", "org_header"]);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_team_key_is_403_on_every_admin_only_endpoint_and_changes_nothing(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_a", 10).await;
    app.create_group("Spare", &["gpt-4o"]).await;
    let before_key_hash: Vec<u8> =
        sqlx::query_scalar("select key_hash from virtual_keys where team_id = 'team_a'")
            .fetch_one(&db)
            .await
            .expect("key");
    let requests = [
        app.with_key(&key, Method::POST, "/api/organizations/create")
            .json(&json!({"organization_id": "org_new", "name": "New"})),
        app.with_key(&key, Method::GET, "/api/organizations/org_team_a"),
        app.with_key(&key, Method::GET, "/api/organizations/org_team_a/teams"),
        app.with_key(&key, Method::POST, "/api/model-groups/create")
            .json(&json!({"group_name": "Mine", "models": [{"model_name": "gpt-4o"}]})),
        app.with_key(&key, Method::PUT, "/api/model-groups/ChatAgent/models")
            .json(&json!([{"model_name": "gpt-4o"}])),
        app.with_key(&key, Method::DELETE, "/api/model-groups/Spare"),
        app.with_key(&key, Method::POST, "/api/teams/create")
            .json(&json!({"organization_id": "org_team_a", "team_id": "team_new"})),
        app.with_key(&key, Method::PUT, "/api/teams/team_a/model-groups")
            .json(&json!(["ChatAgent", "Spare"])),
        app.with_key(&key, Method::POST, "/api/credits/teams/team_a/add")
            .json(&json!({"credits_amount": 1000})),
        app.with_key(&key, Method::POST, "/api/teams/team_a/suspend"),
        app.with_key(&key, Method::POST, "/api/teams/team_a/resume"),
        app.with_key(&key, Method::POST, "/api/teams/team_a/rotate-key"),
    ];

    for request in requests {
        let detail = only_detail(request.send().await, StatusCode::FORBIDDEN).await;
        assert_eq!(detail, "This endpoint requires the admin key");
    }

    assert_eq!(count(&db, "select count(*) from organizations").await, 1);
    assert_eq!(count(&db, "select count(*) from model_groups").await, 2);
    assert_eq!(count(&db, "select count(*) from teams").await, 1);
    assert_eq!(
        count(&db, "select count(*) from team_model_groups").await,
        1
    );
    assert_eq!(
        count(&db, "select count(*) from credit_transactions").await,
        1
    );
    assert_eq!(count(&db, "select count(*) from virtual_keys").await, 1);
    let after_key_hash: Vec<u8> = sqlx::query_scalar(
        "select key_hash from virtual_keys where team_id = 'team_a' and revoked_at is null",
    )
    .fetch_one(&db)
    .await
    .expect("key");
    assert_eq!(after_key_hash, before_key_hash);
    let status: String = sqlx::query_scalar("select status from teams where team_id = 'team_a'")
        .fetch_one(&db)
        .await
        .expect("status");
    assert_eq!(status, "active");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn another_teams_resources_are_404_and_reveal_no_data(db: PgPool) {
    let app = spawn_app(db).await;
    app.team_with_key("team_a", 777).await;
    let other_key = app.team_with_key("team_b", 10).await;
    let requests = [
        app.with_key(&other_key, Method::GET, "/api/teams/team_a"),
        app.with_key(&other_key, Method::GET, "/api/credits/teams/team_a/balance"),
        app.with_key(
            &other_key,
            Method::GET,
            "/api/credits/teams/team_a/transactions",
        ),
        app.with_key(&other_key, Method::POST, "/api/credits/teams/team_a/check"),
    ];

    for request in requests {
        let detail = only_detail(request.send().await, StatusCode::NOT_FOUND).await;
        assert_eq!(detail, "Team 'team_a' not found");
        assert!(!detail.contains("777"));
    }
    // The same key still reaches its own team.
    let own = ok_json(
        app.with_key(&other_key, Method::GET, "/api/credits/teams/team_b/balance")
            .send()
            .await,
    )
    .await;
    assert_eq!(own["credits_allocated"], 10);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_team_key_in_the_admin_header_is_still_only_a_team_key(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_a", 10).await;

    let detail = error_detail(
        app.anonymous(Method::POST, "/api/organizations/create")
            .header("X-Admin-Key", &key)
            .json(&json!({"organization_id": "org_new", "name": "New"}))
            .send()
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;

    assert_eq!(detail, "This endpoint requires the admin key");
    assert_eq!(count(&db, "select count(*) from organizations").await, 1);
}
