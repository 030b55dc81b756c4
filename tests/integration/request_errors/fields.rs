//! Bodies of the right syntax with wrong fields: of the wrong type, missing, unknown, metadata
//! that is not an object, identifiers with unsafe characters.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::Arranged;

// Long only because of its table of cases.
#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn fields_of_the_wrong_type_are_400(db: PgPool) {
    let arranged = Arranged::new(&db).await;
    let app = &arranged.app;
    let cases = [
        (
            "/api/organizations/create",
            Method::POST,
            json!({"organization_id": 5, "name": "Five"}),
        ),
        (
            "/api/model-groups/create",
            Method::POST,
            json!({"group_name": "G", "models": "gpt-4o"}),
        ),
        (
            "/api/model-groups/create",
            Method::POST,
            json!({"group_name": "G", "models": [{"model_name": "m", "priority": "first"}]}),
        ),
        (
            "/api/model-groups/create",
            Method::POST,
            json!({"group_name": "G", "models": [{"model_name": "m", "priority": 3_000_000_000_i64}]}),
        ),
        (
            "/api/model-groups/ChatAgent/models",
            Method::PUT,
            json!({"models": {"model_name": "m"}}),
        ),
        (
            "/api/model-groups/ChatAgent/models",
            Method::PUT,
            json!("gpt-4o"),
        ),
        (
            "/api/teams/create",
            Method::POST,
            json!({"organization_id": "org_a", "team_id": "t", "credits_allocated": "10"}),
        ),
        (
            "/api/teams/create",
            Method::POST,
            json!({"organization_id": "org_a", "team_id": "t", "credits_allocated": 1e20}),
        ),
        (
            "/api/teams/create",
            Method::POST,
            json!({"organization_id": "org_a", "team_id": "t", "model_groups": "ChatAgent"}),
        ),
        (
            "/api/teams/team_a/model-groups",
            Method::PUT,
            json!({"model_groups": ["ChatAgent"]}),
        ),
        ("/api/teams/team_a/model-groups", Method::PUT, json!([1, 2])),
        (
            "/api/credits/teams/team_a/add",
            Method::POST,
            json!({"credits_amount": true}),
        ),
        (
            "/api/credits/teams/team_a/check",
            Method::POST,
            json!({"credits_required": "lots"}),
        ),
        (
            "/api/credits/teams/team_a/check",
            Method::POST,
            json!({"credits_required": 1.5}),
        ),
    ];

    for (path, method, body) in &cases {
        let detail = app
            .admin_refused(method.clone(), path, Some(body), StatusCode::BAD_REQUEST)
            .await;
        assert!(
            detail.starts_with("Invalid request body: "),
            "{method} {path} {body}: {detail}"
        );
    }
    arranged.assert_nothing_written().await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_missing_required_field_is_400_naming_the_field(db: PgPool) {
    let arranged = Arranged::new(&db).await;
    let cases = [
        (
            "/api/organizations/create",
            json!({"name": "No id"}),
            "organization_id",
        ),
        (
            "/api/organizations/create",
            json!({"organization_id": "org_b"}),
            "name",
        ),
        (
            "/api/model-groups/create",
            json!({"models": [{"model_name": "gpt-4o"}]}),
            "group_name",
        ),
        (
            "/api/model-groups/create",
            json!({"group_name": "G"}),
            "models",
        ),
        (
            "/api/model-groups/create",
            json!({"group_name": "G", "models": [{"priority": 0}]}),
            "model_name",
        ),
        (
            "/api/teams/create",
            json!({"team_id": "team_b"}),
            "organization_id",
        ),
        (
            "/api/teams/create",
            json!({"organization_id": "org_a"}),
            "team_id",
        ),
        ("/api/credits/teams/team_a/add", json!({}), "credits_amount"),
    ];

    arranged
        .assert_refused_writing_nothing(&cases, |field| {
            format!("Invalid request body: missing field `{field}`")
        })
        .await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_unknown_field_on_a_create_body_is_400_naming_it(db: PgPool) {
    let arranged = Arranged::new(&db).await;
    let cases = [
        (
            "/api/organizations/create",
            json!({"organization_id": "org_b", "name": "B", "plan": "pro"}),
            "plan",
        ),
        (
            "/api/model-groups/create",
            json!({"group_name": "G", "models": [{"model_name": "gpt-4o"}], "fallback": true}),
            "fallback",
        ),
        (
            "/api/model-groups/create",
            json!({"group_name": "G", "models": [{"model_name": "gpt-4o", "weight": 2}]}),
            "weight",
        ),
        (
            "/api/teams/create",
            json!({"organization_id": "org_a", "team_id": "team_b", "credits": 5}),
            "credits",
        ),
        (
            "/api/credits/teams/team_a/add",
            json!({"credits_amount": 5, "note": "x"}),
            "note",
        ),
        (
            "/api/credits/teams/team_a/check",
            json!({"credits": 5}),
            "credits",
        ),
    ];

    arranged
        .assert_refused_writing_nothing(&cases, |field| {
            format!("Invalid request body: unknown field `{field}`")
        })
        .await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn metadata_that_is_not_an_object_is_400(db: PgPool) {
    let arranged = Arranged::new(&db).await;
    let app = &arranged.app;

    for metadata in [json!([1, 2]), json!("tier=premium"), json!(5), json!(true)] {
        let bodies: [(&str, Value); 4] = [
            (
                "/api/organizations/create",
                json!({"organization_id": "org_b", "name": "B", "metadata": metadata}),
            ),
            (
                "/api/model-groups/create",
                json!({"group_name": "G", "models": [{"model_name": "gpt-4o"}], "metadata": metadata}),
            ),
            (
                "/api/teams/create",
                json!({"organization_id": "org_a", "team_id": "team_b", "metadata": metadata}),
            ),
            (
                "/api/credits/teams/team_a/add",
                json!({"credits_amount": 5, "metadata": metadata}),
            ),
        ];
        for (path, body) in &bodies {
            let detail = app
                .admin_refused(Method::POST, path, Some(body), StatusCode::BAD_REQUEST)
                .await;
            assert_eq!(detail, "metadata must be a JSON object", "{path} {body}");
        }
    }
    arranged.assert_nothing_written().await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn path_identifiers_with_unsafe_characters_are_400_on_create(db: PgPool) {
    let arranged = Arranged::new(&db).await;
    let long = "x".repeat(201);
    let cases = [
        (
            "/api/organizations/create",
            json!({"organization_id": "org b", "name": "B"}),
            "organization_id",
        ),
        (
            "/api/organizations/create",
            json!({"organization_id": "", "name": "B"}),
            "organization_id",
        ),
        (
            "/api/organizations/create",
            json!({"organization_id": "org_b", "name": "   "}),
            "name",
        ),
        (
            "/api/teams/create",
            json!({"organization_id": "org_a", "team_id": "team/b"}),
            "team_id",
        ),
        (
            "/api/teams/create",
            json!({"organization_id": "org_a", "team_id": long}),
            "team_id",
        ),
        (
            "/api/teams/create",
            json!({"organization_id": "org_a", "team_id": "team_b", "credits_allocated": -1}),
            "credits_allocated",
        ),
    ];

    arranged
        .assert_refused_writing_nothing(&cases, |field| format!("{field} "))
        .await;
}
