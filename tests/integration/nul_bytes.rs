//! NUL characters (which PostgreSQL cannot store in text or jsonb) and dates outside what it can
//! hold: every one is a 400 naming the field, never a 500, and nothing is written.

mod dates;

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::error_detail;
use crate::helpers::{TestApp, spawn_app};

/// Row counts of every table of the public schema, to show a request wrote nothing.
async fn table_counts(db: &PgPool) -> Vec<(String, i64)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "select tablename::text from pg_catalog.pg_tables where schemaname = 'public' order by 1",
    )
    .fetch_all(db)
    .await
    .expect("tables");
    let mut counts = Vec::new();
    for table in tables {
        let rows: i64 = sqlx::query_scalar(&format!("select count(*) from public.{table:?}"))
            .fetch_one(db)
            .await
            .expect("count");
        counts.push((table, rows));
    }
    counts
}

/// Every string of `value` and every object key, as (JSON path as the API names it, the
/// document with a NUL put into that one place).
fn nul_variants(value: &Value) -> Vec<(String, Value)> {
    let mut variants = Vec::new();
    collect(value, "", &mut |path, poisoned| {
        variants.push((path, poisoned))
    });
    variants
}

/// Walks `value` (at `path`); for each place a NUL can go, calls `found` with the path and a
/// copy of `value` poisoned there. Parents rebuild their own copy around each child's.
fn collect(value: &Value, path: &str, found: &mut dyn FnMut(String, Value)) {
    match value {
        Value::String(text) => found(path.to_owned(), json!(format!("{text}\u{0}x"))),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect(item, &format!("{path}[{i}]"), &mut |p, poisoned| {
                    let mut copy = items.clone();
                    copy[i] = poisoned;
                    found(p, Value::Array(copy));
                });
            }
        }
        Value::Object(fields) => {
            let mut with_key = fields.clone();
            with_key.insert("bad\u{0}key".into(), json!(1));
            let key_path = match path {
                "" => "A field name".to_owned(),
                _ => format!("{path} key"),
            };
            found(key_path, Value::Object(with_key));
            for (key, item) in fields {
                let child = match path {
                    "" => key.clone(),
                    _ => format!("{path}.{key}"),
                };
                collect(item, &child, &mut |p, poisoned| {
                    let mut copy = fields.clone();
                    copy.insert(key.clone(), poisoned);
                    found(p, Value::Object(copy));
                });
            }
        }
        _ => {}
    }
}

/// The field as the API names it: a path inside a top-level array starts with `body`.
fn named(path: &str) -> String {
    match path.chars().next() {
        None | Some('[') => format!("body{path}"),
        Some(_) => path.to_owned(),
    }
}

// One body per documented operation: long only because of its table.
/// A body for every documented operation that takes one: (method, path template, concrete
/// path, body), each body using every kind of string the operation accepts.
fn bodies(job_id: &str) -> Vec<(Method, &'static str, String, Value)> {
    let call = json!({
        "model_group": "ChatAgent",
        "messages": [{"role": "user", "content": "Analyze this"}],
        "purpose": "initial_analysis",
        "custom_id": "doc-1",
        "stop": ["END"],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
    });
    vec![
        (
            Method::POST,
            "/api/organizations/create",
            "/api/organizations/create".into(),
            json!({"organization_id": "org_new", "name": "New", "metadata": {"tier": "premium", "tags": ["a"]}}),
        ),
        (
            Method::POST,
            "/api/model-groups/create",
            "/api/model-groups/create".into(),
            json!({"group_name": "NewGroup", "display_name": "New", "description": "General",
                "models": [{"model_name": "gpt-4o", "priority": 0}], "metadata": {"owner": "ops"}}),
        ),
        (
            Method::PUT,
            "/api/model-groups/{group_name}/models",
            "/api/model-groups/ChatAgent/models".into(),
            json!([{"model_name": "gpt-4o-mini", "priority": 0}]),
        ),
        (
            Method::POST,
            "/api/teams/create",
            "/api/teams/create".into(),
            json!({"organization_id": "org_a", "team_id": "team_new", "team_alias": "New Team",
                "model_groups": ["ChatAgent"], "credits_allocated": 5, "metadata": {"department": "eng"}}),
        ),
        (
            Method::PUT,
            "/api/teams/{team_id}/model-groups",
            "/api/teams/team_a/model-groups".into(),
            json!(["ChatAgent"]),
        ),
        (
            Method::PUT,
            "/api/teams/{team_id}/limits",
            "/api/teams/team_a/limits".into(),
            json!({"max_concurrent_calls": 8}),
        ),
        (
            Method::PUT,
            "/api/teams/{team_id}/alerts",
            "/api/teams/team_a/alerts".into(),
            json!({"url": "https://hooks.example.com/alerts", "credits_below": 3,
                "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
        ),
        (
            Method::PUT,
            "/api/teams/{team_id}/refills",
            "/api/teams/team_a/refills".into(),
            json!({"credit_grant": {"credits": 10, "period": "1mo"}, "budget_duration": "30d"}),
        ),
        (
            Method::POST,
            "/api/credits/teams/{team_id}/add",
            "/api/credits/teams/team_a/add".into(),
            json!({"credits_amount": 5, "reason": "Monthly refill", "metadata": {"invoice": "inv-1"}}),
        ),
        (
            Method::POST,
            "/api/credits/teams/{team_id}/check",
            "/api/credits/teams/team_a/check".into(),
            json!({"credits_required": 1}),
        ),
        (
            Method::POST,
            "/api/jobs/create",
            "/api/jobs/create".into(),
            json!({"team_id": "team_a", "user_id": "user_1", "job_type": "document_analysis",
                "metadata": {"document": {"id": "doc_456"}}, "callback_url": "https://hooks.example.com/x",
                "callback_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
        ),
        (
            Method::POST,
            "/api/jobs/{job_id}/llm-call",
            format!("/api/jobs/{job_id}/llm-call"),
            call.clone(),
        ),
        (
            Method::POST,
            "/api/jobs/{job_id}/llm-calls",
            format!("/api/jobs/{job_id}/llm-calls"),
            json!({"calls": [call]}),
        ),
        (
            Method::POST,
            "/api/jobs/{job_id}/complete",
            format!("/api/jobs/{job_id}/complete"),
            json!({"status": "completed", "metadata": {"result": "success"}, "error_message": "none"}),
        ),
        (
            Method::POST,
            "/api/admin-keys/create",
            "/api/admin-keys/create".into(),
            json!({"name": "ops", "role": "viewer"}),
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            "/v1/chat/completions".into(),
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}], "user": "u1"}),
        ),
        (
            Method::POST,
            "/v1/embeddings",
            "/v1/embeddings".into(),
            json!({"model": "gpt-4o", "input": ["Hello"], "user": "u1"}),
        ),
        (
            Method::POST,
            "/v1/batches",
            "/v1/batches".into(),
            json!({"input_file_id": "file-0193", "endpoint": "/v1/embeddings", "completion_window": "24h",
                   "metadata": {"pipeline": "nightly"}}),
        ),
    ]
}

/// The /v1 routes that pass the request to the upstream untouched: only the model name, which
/// is stored with the spend record, must be free of NUL there.
const PASSTHROUGH: [&str; 2] = ["/v1/chat/completions", "/v1/embeddings"];

/// The documented operations that take a request body.
async fn documented_body_operations(app: &TestApp) -> BTreeSet<(String, String)> {
    let document = app.openapi_document().await;
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            // A multipart upload (`POST /v1/files`) has no JSON to poison; its fields are
            // checked in tests/integration/openai_files.rs.
            if operation
                .pointer("/requestBody/content/application~1json")
                .is_some()
            {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_nul_in_any_string_or_key_of_any_body_is_400_naming_the_field(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.create_org("org_a").await;
    app.create_group("ChatAgent", &["gpt-4o"]).await;
    let team = app.create_team("org_a", "team_a", &["ChatAgent"], 10).await;
    let key = team["virtual_key"].as_str().expect("key").to_owned();
    let job = app
        .with_key(&key, Method::POST, "/api/jobs/create")
        .json(&json!({"team_id": "team_a", "job_type": "analysis"}))
        .send()
        .await
        .expect("request");
    let job: Value = job.json().await.expect("job");
    let job_id = job["job_id"].as_str().expect("job_id").to_owned();
    let cases = bodies(&job_id);
    let covered: BTreeSet<(String, String)> = cases
        .iter()
        .map(|(m, template, _, _)| (m.to_string(), template.to_string()))
        .collect();
    assert_eq!(covered, documented_body_operations(&app).await);
    let before = table_counts(&db).await;

    let mut checked = 0;
    for (method, _, path, body) in &cases {
        // /v1 takes only a team key; the admin key is refused there before the body is read.
        let openai = path.starts_with("/v1/");
        for (field, poisoned) in nul_variants(body) {
            if PASSTHROUGH.contains(&path.as_str()) && field != "model" {
                continue;
            }
            let request = match openai {
                true => app.with_key(&key, method.clone(), path),
                false => app.admin(method.clone(), path),
            };
            let response = request.json(&poisoned).send().await;
            let expected = format!("{} must not contain NUL characters", named(&field));
            if openai {
                let response = response.expect("request sent");
                assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path} {field}");
                let error: Value = response.json().await.expect("JSON");
                assert_eq!(error["error"]["message"], expected, "{path} {field}");
                assert_eq!(error["error"]["type"], "invalid_request_error");
            } else {
                let detail = error_detail(response, StatusCode::BAD_REQUEST).await;
                assert_eq!(detail, expected, "{method} {path} {poisoned}");
            }
            checked += 1;
        }
    }

    assert!(checked > 55, "only {checked} variants");
    assert_eq!(table_counts(&db).await, before);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_nul_in_a_path_or_query_parameter_is_400_naming_it(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.create_org("org_a").await;
    app.create_group("ChatAgent", &["gpt-4o"]).await;
    app.create_team("org_a", "team_a", &["ChatAgent"], 10).await;
    let before = table_counts(&db).await;

    for (method, path, field) in [
        (Method::GET, "/api/teams/team%00a", "team_id"),
        (Method::POST, "/api/teams/team%00a/suspend", "team_id"),
        (Method::GET, "/api/credits/teams/%00/balance", "team_id"),
        (Method::GET, "/api/organizations/org%00a", "organization_id"),
        (
            Method::GET,
            "/api/model-groups/Chat%00Agent/models",
            "group_name",
        ),
        (
            Method::DELETE,
            "/api/model-groups/Chat%00Agent",
            "group_name",
        ),
        (Method::GET, "/api/jobs/%00", "job_id"),
        (Method::GET, "/api/teams/team_a/jobs?status=%00", "status"),
        (
            Method::GET,
            "/api/model-groups/ChatAgent/resolve?team_id=team%00a",
            "team_id",
        ),
        (
            Method::GET,
            "/api/teams/team_a/usage?period=2025%0010",
            "period",
        ),
        (
            Method::GET,
            "/api/teams/team_a/jobs?%00=1",
            "A query parameter name",
        ),
    ] {
        let detail = app
            .admin_refused(method.clone(), path, None, StatusCode::BAD_REQUEST)
            .await;
        assert_eq!(
            detail,
            format!("{field} must not contain NUL characters"),
            "{path}"
        );
    }
    assert_eq!(table_counts(&db).await, before);
}
