//! The OpenAPI document states the bounds the server enforces, and the server accepts what the
//! document allows: integers written as `16.0`, a `null` optional body, any JSON number that
//! PostgreSQL stores (read back without error).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::{count, ok_json};
use crate::helpers::spawn_app;

fn parameter<'a>(document: &'a Value, path: &str, method: &str, name: &str) -> &'a Value {
    document["paths"][path][method]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))
}

/// A body schema's property, following one `$ref` into the components.
fn property<'a>(document: &'a Value, schema: &str, name: &str) -> &'a Value {
    &document["components"]["schemas"][schema]["properties"][name]
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_document_states_the_bounds_the_server_enforces(db: PgPool) {
    let app = spawn_app(db).await;
    let document = ok_json(app.anonymous(Method::GET, "/openapi.json").send().await).await;

    for (path, default_name) in [
        ("/api/teams/{team_id}/jobs", "limit"),
        ("/api/credits/teams/{team_id}/transactions", "limit"),
        ("/api/jobs/{job_id}/calls", "limit"),
    ] {
        let limit = &parameter(&document, path, "get", default_name)["schema"];
        assert_eq!(limit["minimum"], 1, "{path}");
        assert_eq!(limit["maximum"], 1000, "{path}");
    }
    let offset = &parameter(&document, "/api/teams/{team_id}/jobs", "get", "offset")["schema"];
    assert_eq!(offset["minimum"], 0);
    let key = &parameter(&document, "/api/jobs/create", "post", "Idempotency-Key")["schema"];
    assert_eq!(
        (key["minLength"].clone(), key["maxLength"].clone()),
        (json!(1), json!(255))
    );
    let period = &parameter(&document, "/api/teams/{team_id}/usage", "get", "period")["schema"];
    assert_eq!(period["pattern"], "^[2-9][0-9]{3}-(0[1-9]|1[0-2])$");

    let team_id = property(&document, "CreateTeam", "team_id");
    assert_eq!(team_id["pattern"], "^[A-Za-z0-9_.:-]+$");
    assert_eq!(
        (team_id["minLength"].clone(), team_id["maxLength"].clone()),
        (json!(1), json!(200))
    );
    let amount = property(&document, "AddCredits", "credits_amount");
    assert_eq!(
        (amount["minimum"].clone(), amount["maximum"].clone()),
        (json!(1), json!(1_000_000_000))
    );
    assert_eq!(
        property(&document, "CompleteJob", "status")["pattern"],
        "^(completed|failed)$"
    );
    assert_eq!(
        property(&document, "CreateModelGroup", "models")["minItems"],
        1
    );
    let responses = &document["paths"]["/api/jobs/create"]["post"]["responses"];
    assert!(
        responses.get("404").is_some(),
        "jobs/create answers 404 for a missing team"
    );
    let chat = &document["components"]["schemas"]["ChatCompletionRequest"];
    assert_eq!(chat["required"], json!(["model", "messages"]));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn integers_written_with_a_zero_fraction_are_taken_as_integers(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.create_org("org_a").await;
    app.admin_ok_with(
        Method::POST,
        "/api/model-groups/create",
        &json!({"group_name": "ChatAgent",
                          "models": [{"model_name": "gpt-4o", "priority": 3.0}]}),
    )
    .await;
    let team = app
        .admin_ok_with(
            Method::POST,
            "/api/teams/create",
            &json!({"organization_id": "org_a", "team_id": "team_a", "credits_allocated": 10.0}),
        )
        .await;
    let added = app
        .admin_ok_with(
            Method::POST,
            "/api/credits/teams/team_a/add",
            &json!({"credits_amount": 16.0}),
        )
        .await;
    let detail = app
        .admin_refused(
            Method::POST,
            "/api/credits/teams/team_a/add",
            Some(&json!({"credits_amount": 16.5})),
            StatusCode::BAD_REQUEST,
        )
        .await;

    assert_eq!(team["credits_allocated"], 10);
    assert_eq!(added["credits_remaining"], 26, "{added}");
    assert!(detail.contains("expected a whole number"), "{detail}");
    let priority: i32 = sqlx::query_scalar("select priority from model_group_models")
        .fetch_one(&db)
        .await
        .expect("priority");
    assert_eq!(priority, 3);
    assert_eq!(
        count(
            &db,
            "select credits_allocated from credit_balances where team_id = 'team_a'"
        )
        .await,
        26
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_null_body_on_the_credit_check_means_the_defaults(db: PgPool) {
    let app = spawn_app(db).await;
    app.create_org("org_a").await;
    app.create_team("org_a", "team_a", &[], 5).await;

    let checked = ok_json(
        app.admin(Method::POST, "/api/credits/teams/team_a/check")
            .header("Content-Type", "application/json")
            .body("null")
            .send()
            .await,
    )
    .await;

    assert_eq!(checked["credits_required"], 1);
    assert_eq!(checked["available"], true);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn json_numbers_at_the_edge_of_f64_are_read_back_after_postgresql_expands_them(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    // jsonb keeps 1.7976931348623157e308 as its 309 digits; parsing those back must round to
    // the same double, not overflow into an error on every later read.
    let config =
        json!({"largest": f64::MAX, "smallest": -f64::MAX, "tiny": 2.2250738585072014e-308});
    app.create_group("ChatAgent", &["gpt-4o"]).await;
    app.admin_ok_with(
        Method::PUT,
        "/api/model-groups/ChatAgent/models",
        &json!([{"model_name": "gpt-4o", "priority": 0, "config": config}]),
    )
    .await;
    app.admin_ok_with(
        Method::POST,
        "/api/organizations/create",
        &json!({"organization_id": "org_a", "name": "A", "metadata": config}),
    )
    .await;

    let group = app
        .admin_ok(Method::GET, "/api/model-groups/ChatAgent")
        .await;
    let org = app.admin_ok(Method::GET, "/api/organizations/org_a").await;

    assert_eq!(group["models"][0]["config"], config);
    assert_eq!(org["metadata"], config);
    let stored: String = sqlx::query_scalar(
        "select metadata->>'largest' from organizations where organization_id = 'org_a'",
    )
    .fetch_one(&db)
    .await
    .expect("stored");
    assert!(
        stored.starts_with("17976931348623157") && stored.len() == 309,
        "{stored}"
    );
}
