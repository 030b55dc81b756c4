//! `GET /openapi.json` documents every route the API serves (and nothing it does not), with its
//! auth and error responses; `/docs` serves the interactive docs from the binary.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::spawn_app;

/// The routes the API serves, listed by hand so that a route added without documentation (or
/// documentation without a route) fails here.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("POST", "/api/organizations/create"),
    ("GET", "/api/organizations/{organization_id}"),
    ("GET", "/api/organizations/{organization_id}/teams"),
    ("GET", "/api/organizations/{organization_id}/usage"),
    ("POST", "/api/model-groups/create"),
    ("GET", "/api/model-groups"),
    ("GET", "/api/model-groups/{group_name}"),
    ("DELETE", "/api/model-groups/{group_name}"),
    ("GET", "/api/model-groups/{group_name}/models"),
    ("PUT", "/api/model-groups/{group_name}/models"),
    ("GET", "/api/model-groups/{group_name}/resolve"),
    ("POST", "/api/teams/create"),
    ("GET", "/api/teams/{team_id}"),
    ("PUT", "/api/teams/{team_id}/model-groups"),
    ("POST", "/api/teams/{team_id}/suspend"),
    ("POST", "/api/teams/{team_id}/resume"),
    ("POST", "/api/teams/{team_id}/rotate-key"),
    ("PUT", "/api/teams/{team_id}/limits"),
    ("PUT", "/api/teams/{team_id}/alerts"),
    ("PUT", "/api/teams/{team_id}/refills"),
    ("GET", "/api/teams/{team_id}/jobs"),
    ("GET", "/api/teams/{team_id}/usage"),
    ("GET", "/api/credits/teams/{team_id}/balance"),
    ("POST", "/api/credits/teams/{team_id}/add"),
    ("POST", "/api/credits/teams/{team_id}/check"),
    ("GET", "/api/credits/teams/{team_id}/transactions"),
    ("POST", "/api/jobs/create"),
    ("GET", "/api/jobs/{job_id}"),
    ("POST", "/api/jobs/{job_id}/complete"),
    ("POST", "/api/jobs/{job_id}/llm-call"),
    ("POST", "/api/jobs/{job_id}/llm-calls"),
    ("GET", "/api/jobs/{job_id}/calls"),
    ("POST", "/api/jobs/{job_id}/cancel"),
    ("GET", "/api/jobs/{job_id}/calls/{call_id}"),
    ("GET", "/api/jobs/{job_id}/webhooks"),
    ("POST", "/api/admin-keys/create"),
    ("GET", "/api/admin-keys"),
    ("POST", "/api/admin-keys/{admin_key_id}/revoke"),
    ("GET", "/api/audit"),
    ("GET", "/api/organizations"),
    ("GET", "/api/teams"),
    ("GET", "/api/jobs"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("POST", "/v1/embeddings"),
    ("GET", "/v1/files"),
    ("POST", "/v1/files"),
    ("GET", "/v1/files/{file_id}"),
    ("DELETE", "/v1/files/{file_id}"),
    ("GET", "/v1/files/{file_id}/content"),
    ("GET", "/v1/batches"),
    ("POST", "/v1/batches"),
    ("GET", "/v1/batches/{batch_id}"),
    ("POST", "/v1/batches/{batch_id}/cancel"),
];

fn documented_operations(document: &Value) -> Vec<(String, String)> {
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations.sort();
    operations
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_document_lists_exactly_the_served_routes(db: PgPool) {
    let app = spawn_app(db).await;
    let response = app
        .anonymous(Method::GET, "/openapi.json")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.expect("json");

    assert!(
        document["openapi"]
            .as_str()
            .expect("version")
            .starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    expected.sort();
    assert_eq!(documented_operations(&document), expected);

    // Every documented operation is served: with sample path values it reaches a handler (an
    // auth error, a 404 for the missing object, a 400...), never the router's fallback.
    for (method, path) in documented_operations(&document) {
        let concrete = path
            .replace("{job_id}", "0193c0de-0000-7000-8000-000000000000")
            .replace("{call_id}", "0193c0de-0000-7000-8000-000000000001")
            .replace(['{', '}'], "");
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let response = app
            .anonymous(method.clone(), &concrete)
            .json(&json!({}))
            .send()
            .await
            .expect("request");
        let status = response.status();
        let body = response.text().await.expect("body");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !body.contains("No route for"),
            "{method} {path} is documented but not served: {status} {body}"
        );
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn operations_document_their_auth_and_errors(db: PgPool) {
    let app = spawn_app(db).await;
    let document: Value = app.openapi_document().await;
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["admin_key"]["type"], "apiKey");
    assert_eq!(schemes["admin_key"]["name"], "X-Admin-Key");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    let error_ref = json!({"$ref": "#/components/schemas/ErrorBody"});
    let mut operation_ids = std::collections::HashSet::new();

    for (method, path) in documented_operations(&document) {
        let operation = &document["paths"][&path][method.to_lowercase()];
        let responses = operation["responses"].as_object().expect("responses");
        let operation_id = operation["operationId"].as_str().expect("operationId");
        assert!(
            operation_ids.insert(operation_id.to_owned()),
            "duplicate {operation_id}"
        );
        let open = ["/health"].contains(&path.as_str());
        assert_eq!(
            operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty()),
            !open,
            "{method} {path}: security"
        );
        if open {
            continue;
        }
        for status in ["400", "401", "403", "500", "503"] {
            assert!(responses.contains_key(status), "{method} {path}: {status}");
        }
        if path.contains('{') {
            assert!(responses.contains_key("404"), "{method} {path}: 404");
        }
        if path.starts_with("/api/") {
            assert_eq!(
                responses["401"]["content"]["application/json"]["schema"], error_ref,
                "{method} {path}: errors are {{detail}}"
            );
        }
    }
    let create_job = &document["paths"]["/api/jobs/create"]["post"];
    assert!(create_job["responses"]["402"].is_object());
    assert_eq!(
        create_job["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CreateJob"
    );
    let complete = &document["paths"]["/api/jobs/{job_id}/complete"]["post"];
    assert!(complete["responses"]["409"].is_object());
    assert!(
        complete["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header")
    );
    assert!(
        document["components"]["schemas"]["TeamUsageReport"]["properties"]["daily"].is_object()
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn docs_are_served_from_the_binary(db: PgPool) {
    let app = spawn_app(db).await;
    let page = app
        .anonymous(Method::GET, "/docs/")
        .send()
        .await
        .expect("request");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("html");
    assert!(html.contains("swagger-ui-bundle.js"), "{html}");

    let initializer = app
        .anonymous(Method::GET, "/docs/swagger-initializer.js")
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("js");
    assert!(initializer.contains("/openapi.json"), "{initializer}");
    let bundle = app
        .anonymous(Method::GET, "/docs/swagger-ui-bundle.js")
        .send()
        .await
        .expect("request");
    assert_eq!(bundle.status(), StatusCode::OK);
    assert!(bundle.bytes().await.expect("bundle").len() > 100_000);
}
