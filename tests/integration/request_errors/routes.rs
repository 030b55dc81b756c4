//! Requests for no route, with a method a route does not take, or with bad pagination.

use reqwest::{Method, StatusCode};
use sqlx::PgPool;

use super::arrange;
use crate::helpers::app::{count, error_detail};
use crate::helpers::spawn_app;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_unknown_route_is_404_json(db: PgPool) {
    let app = spawn_app(db).await;

    for (method, path) in [
        (Method::GET, "/api/nope"),
        (Method::POST, "/api/team"),
        (Method::GET, "/api/teams/team_a/unknown"),
        (Method::GET, "/nope"),
    ] {
        let detail = app
            .admin_refused(method.clone(), path, None, StatusCode::NOT_FOUND)
            .await;
        assert_eq!(detail, format!("No route for {method} {path}"));
    }
    let anonymous = error_detail(
        app.anonymous(Method::GET, "/api/nope").send().await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(anonymous, "No route for GET /api/nope");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_wrong_method_is_405_json(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    arrange(&app).await;

    for (method, path) in [
        (Method::GET, "/api/organizations/create"),
        (Method::DELETE, "/api/teams/team_a"),
        (Method::POST, "/api/model-groups"),
        (Method::GET, "/api/credits/teams/team_a/add"),
        (Method::POST, "/api/teams/team_a/model-groups"),
        (Method::PATCH, "/api/model-groups/ChatAgent/models"),
    ] {
        let detail = app
            .admin_refused(method.clone(), path, None, StatusCode::METHOD_NOT_ALLOWED)
            .await;
        assert_eq!(detail, format!("Method {method} is not allowed on {path}"));
    }
    assert_eq!(count(&db, "select count(*) from teams").await, 1);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn bad_pagination_is_400(db: PgPool) {
    let app = spawn_app(db).await;
    arrange(&app).await;
    let cases = [
        ("limit=0", "limit must be between 1 and 1000"),
        ("limit=1001", "limit must be between 1 and 1000"),
        ("limit=-5", "limit must be between 1 and 1000"),
        ("offset=-1", "offset must not be negative"),
        ("limit=abc", "Invalid query: "),
        ("offset=x", "Invalid query: "),
        ("limit=1.5", "Invalid query: "),
        ("limit=99999999999999999999", "Invalid query: "),
        ("page=2", "Invalid query: "),
    ];

    for (query, expected) in cases {
        let detail = app
            .admin_refused(
                Method::GET,
                &format!("/api/credits/teams/team_a/transactions?{query}"),
                None,
                StatusCode::BAD_REQUEST,
            )
            .await;
        assert!(detail.starts_with(expected), "{query}: {detail}");
    }
}
