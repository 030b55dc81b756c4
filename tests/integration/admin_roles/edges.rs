//! Edges of the role check and of the audit trail's request ids: a method a route does not take
//! is the router's 405 for every role (a 403 would suggest a higher role could); the OpenAI routes
//! tell any admin key what to send instead; a read-only POST by a viewer is not a change; and a
//! request id that cannot be logged as sent is replaced by one the response, logs and audit
//! row share.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use super::admin_key;
use crate::helpers::app::{count, error_detail};
use crate::helpers::spawn_app;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn wrong_methods_are_405_and_openai_routes_explain_themselves_to_any_role(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let (_, viewer) = admin_key(&app, "watcher", "viewer").await;
    for (method, path) in [
        (Method::GET, "/api/teams/team_a/alerts"),
        (Method::PATCH, "/api/teams/team_a"),
        (Method::GET, "/api/admin-keys/create"),
    ] {
        error_detail(
            app.with_key(&viewer, method.clone(), path).send().await,
            StatusCode::METHOD_NOT_ALLOWED,
        )
        .await;
        error_detail(
            app.admin(method, path).send().await,
            StatusCode::METHOD_NOT_ALLOWED,
        )
        .await;
    }
    // OpenAI's error shape, saying what the route takes rather than naming a role.
    let refused = app
        .with_key(&viewer, Method::GET, "/v1/models")
        .send()
        .await
        .expect("request sent");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = refused.json().await.expect("JSON body");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("team's virtual key"), "{body}");
    // Refused before anything else: still a 403 for a viewer on an owner's route.
    let detail = error_detail(
        app.with_key(&viewer, Method::POST, "/api/teams/create")
            .json(&json!({}))
            .send()
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert!(detail.contains("requires the owner role"), "{detail}");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_unusable_request_id_is_replaced_by_one_the_response_and_the_audit_row_share(
    db: PgPool,
) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("ids", 1).await;
    let long = "x".repeat(129);
    for sent in ["caf\u{e9}", long.as_str(), "two words"] {
        let response = app
            .admin(Method::POST, "/api/credits/teams/ids/add")
            .header("X-Request-Id", sent.as_bytes())
            .json(&json!({"credits_amount": 1, "reason": "top-up"}))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), StatusCode::OK);
        let echoed = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("an ASCII request id")
            .to_owned();
        assert_ne!(echoed.as_bytes(), sent.as_bytes());
        let stored: Option<String> = sqlx::query_scalar(
            "select request_id from audit_log where action = 'credits.add' order by audit_id desc limit 1",
        )
        .fetch_one(&db)
        .await
        .expect("audit row");
        assert_eq!(stored.as_deref(), Some(echoed.as_str()));
    }
    // A usable one is kept as sent.
    let response = app
        .admin(Method::POST, "/api/credits/teams/ids/add")
        .header("X-Request-Id", "deploy-42")
        .json(&json!({"credits_amount": 1, "reason": "top-up"}))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.headers()["x-request-id"], "deploy-42");
    assert_eq!(
        count(
            &db,
            "select count(*) from audit_log where request_id = 'deploy-42'"
        )
        .await,
        1
    );
}
