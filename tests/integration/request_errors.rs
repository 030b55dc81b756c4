//! Bad requests: every one is a 4xx with a JSON `detail`, never a 500, and writes nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::{count, error_detail};
use crate::helpers::{TestApp, spawn_app};

/// Rows of every table a create endpoint writes, for "nothing was written" checks.
async fn written_rows(db: &PgPool) -> [i64; 6] {
    [
        count(db, "select count(*) from organizations").await,
        count(db, "select count(*) from model_groups").await,
        count(db, "select count(*) from model_group_models").await,
        count(db, "select count(*) from teams").await,
        count(db, "select count(*) from team_model_groups").await,
        count(db, "select count(*) from credit_transactions").await,
    ]
}

/// An organization `org_a`, a group `ChatAgent` and a team `team_a` with 10 credits.
async fn arranged(app: &TestApp) {
    app.create_org("org_a").await;
    app.create_group("ChatAgent", &["gpt-4o"]).await;
    app.create_team("org_a", "team_a", &["ChatAgent"], 10).await;
}

/// (method, path) of every endpoint that takes a JSON body.
const BODY_ENDPOINTS: [(Method, &str); 7] = [
    (Method::POST, "/api/credits/teams/team_a/check"),
    (Method::POST, "/api/organizations/create"),
    (Method::POST, "/api/model-groups/create"),
    (Method::PUT, "/api/model-groups/ChatAgent/models"),
    (Method::POST, "/api/teams/create"),
    (Method::PUT, "/api/teams/team_a/model-groups"),
    (Method::POST, "/api/credits/teams/team_a/add"),
];

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn malformed_json_is_400_with_a_malformed_json_detail(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    arranged(&app).await;
    let before = written_rows(&db).await;

    for (method, path) in &BODY_ENDPOINTS {
        // Truncated documents of the shape the endpoint expects, and ones broken from the first byte.
        let shaped = if path.ends_with("/model-groups") {
            ["[\"ChatAgent\", ", "[", "[,]"]
        } else {
            ["{\"", "{", "{,}"]
        };
        for body in shaped
            .into_iter()
            .chain(["not json", "}", "'single quotes'"])
        {
            let detail = error_detail(
                app.admin(method.clone(), path)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await,
                StatusCode::BAD_REQUEST,
            )
            .await;
            assert!(
                detail.starts_with("Malformed JSON: "),
                "{method} {path} {body:?}: {detail}"
            );
        }
    }
    assert_eq!(written_rows(&db).await, before);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_empty_body_where_one_is_required_is_400(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    arranged(&app).await;
    let before = written_rows(&db).await;

    // `check` alone treats an empty body as the default request.
    for (method, path) in &BODY_ENDPOINTS[1..] {
        let detail = error_detail(
            app.admin(method.clone(), path).send().await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(
            detail, "Request body is empty; a JSON body is required",
            "{method} {path}"
        );
    }
    assert_eq!(written_rows(&db).await, before);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn fields_of_the_wrong_type_are_400(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    arranged(&app).await;
    let before = written_rows(&db).await;
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
        let detail = error_detail(
            app.admin(method.clone(), path).json(body).send().await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(
            detail.starts_with("Invalid request body: "),
            "{method} {path} {body}: {detail}"
        );
    }
    assert_eq!(written_rows(&db).await, before);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_missing_required_field_is_400_naming_the_field(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    arranged(&app).await;
    let before = written_rows(&db).await;
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

    for (path, body, field) in &cases {
        let detail = error_detail(
            app.admin(Method::POST, path).json(body).send().await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(
            detail.starts_with(&format!("Invalid request body: missing field `{field}`")),
            "{path} {body}: {detail}"
        );
    }
    assert_eq!(written_rows(&db).await, before);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_unknown_field_on_a_create_body_is_400_naming_it(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    arranged(&app).await;
    let before = written_rows(&db).await;
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

    for (path, body, field) in &cases {
        let detail = error_detail(
            app.admin(Method::POST, path).json(body).send().await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(
            detail.starts_with(&format!("Invalid request body: unknown field `{field}`")),
            "{path} {body}: {detail}"
        );
    }
    assert_eq!(written_rows(&db).await, before);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_oversize_body_is_413_with_a_json_detail(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    arranged(&app).await;
    let before = written_rows(&db).await;
    // Valid JSON of about 100 KiB, so that only its size is wrong.
    let big = json!({"organization_id": "org_big", "name": "Big", "metadata": {"blob": "x".repeat(100 * 1024)}});
    let big = serde_json::to_vec(&big).expect("json");

    for (method, path) in &BODY_ENDPOINTS {
        let detail = error_detail(
            app.admin(method.clone(), path)
                .header("Content-Type", "application/json")
                .body(big.clone())
                .send()
                .await,
            StatusCode::PAYLOAD_TOO_LARGE,
        )
        .await;
        assert_eq!(
            detail, "Request body is larger than the limit of 65536 bytes",
            "{method} {path}"
        );
    }
    assert_eq!(written_rows(&db).await, before);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_unknown_route_is_404_json(db: PgPool) {
    let app = spawn_app(db).await;

    for (method, path) in [
        (Method::GET, "/api/nope"),
        (Method::POST, "/api/team"),
        (Method::GET, "/api/teams/team_a/unknown"),
        (Method::GET, "/nope"),
    ] {
        let detail = error_detail(
            app.admin(method.clone(), path).send().await,
            StatusCode::NOT_FOUND,
        )
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
    arranged(&app).await;

    for (method, path) in [
        (Method::GET, "/api/organizations/create"),
        (Method::DELETE, "/api/teams/team_a"),
        (Method::POST, "/api/model-groups"),
        (Method::GET, "/api/credits/teams/team_a/add"),
        (Method::POST, "/api/teams/team_a/model-groups"),
        (Method::PATCH, "/api/model-groups/ChatAgent/models"),
    ] {
        let detail = error_detail(
            app.admin(method.clone(), path).send().await,
            StatusCode::METHOD_NOT_ALLOWED,
        )
        .await;
        assert_eq!(detail, format!("Method {method} is not allowed on {path}"));
    }
    assert_eq!(count(&db, "select count(*) from teams").await, 1);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn bad_pagination_is_400(db: PgPool) {
    let app = spawn_app(db).await;
    arranged(&app).await;
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
        let detail = error_detail(
            app.admin(
                Method::GET,
                &format!("/api/credits/teams/team_a/transactions?{query}"),
            )
            .send()
            .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(detail.starts_with(expected), "{query}: {detail}");
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn metadata_that_is_not_an_object_is_400(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    arranged(&app).await;
    let before = written_rows(&db).await;

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
            let detail = error_detail(
                app.admin(Method::POST, path).json(body).send().await,
                StatusCode::BAD_REQUEST,
            )
            .await;
            assert_eq!(detail, "metadata must be a JSON object", "{path} {body}");
        }
    }
    assert_eq!(written_rows(&db).await, before);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn path_identifiers_with_unsafe_characters_are_400_on_create(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    arranged(&app).await;
    let before = written_rows(&db).await;
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

    for (path, body, field) in &cases {
        let detail = error_detail(
            app.admin(Method::POST, path).json(body).send().await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(
            detail.starts_with(&format!("{field} ")),
            "{path} {body}: {detail}"
        );
    }
    assert_eq!(written_rows(&db).await, before);
}
