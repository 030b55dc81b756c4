//! Admin keys with roles: every admin operation of the served document has a least role, and each
//! role gets exactly what that says (the console's actions too); a revoked key is refused by
//! every process at once; the bootstrap key is an owner; a new key is shown once and never again.
//! This file holds the least roles and the console's use of them; `keys` the keys' lifecycle,
//! `edges` wrong methods, read-only POSTs and request ids.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::{TestApp, count, ok_json};
use crate::helpers::browser::Browser;
use crate::helpers::{ADMIN_KEY, spawn_app};

mod edges;
mod keys;

/// Every admin operation with the least role allowed to call it. A route added to the API with
/// the admin key among its security schemes fails `every_admin_operation_has_a_least_role`
/// until it is listed here (and in `api/src/roles.rs`, without which it needs `owner`).
const LEAST_ROLE: &[(&str, &str, &str)] = &[
    ("GET", "/metrics", "viewer"),
    ("GET", "/api/audit", "viewer"),
    ("GET", "/api/organizations", "viewer"),
    ("GET", "/api/organizations/{organization_id}", "viewer"),
    (
        "GET",
        "/api/organizations/{organization_id}/teams",
        "viewer",
    ),
    (
        "GET",
        "/api/organizations/{organization_id}/usage",
        "viewer",
    ),
    ("GET", "/api/model-groups", "viewer"),
    ("GET", "/api/model-groups/{group_name}", "viewer"),
    ("GET", "/api/model-groups/{group_name}/models", "viewer"),
    ("GET", "/api/model-groups/{group_name}/resolve", "viewer"),
    ("GET", "/api/teams", "viewer"),
    ("GET", "/api/teams/{team_id}", "viewer"),
    ("GET", "/api/teams/{team_id}/jobs", "viewer"),
    ("GET", "/api/teams/{team_id}/usage", "viewer"),
    ("GET", "/api/credits/teams/{team_id}/balance", "viewer"),
    ("GET", "/api/credits/teams/{team_id}/transactions", "viewer"),
    ("POST", "/api/credits/teams/{team_id}/check", "viewer"),
    ("GET", "/api/jobs", "viewer"),
    ("GET", "/api/jobs/{job_id}", "viewer"),
    ("GET", "/api/jobs/{job_id}/calls", "viewer"),
    ("GET", "/api/jobs/{job_id}/calls/{call_id}", "viewer"),
    ("GET", "/api/jobs/{job_id}/webhooks", "viewer"),
    ("POST", "/api/credits/teams/{team_id}/add", "billing"),
    ("PUT", "/api/teams/{team_id}/alerts", "billing"),
    ("PUT", "/api/teams/{team_id}/refills", "billing"),
    ("POST", "/api/organizations/create", "owner"),
    ("POST", "/api/model-groups/create", "owner"),
    ("PUT", "/api/model-groups/{group_name}/models", "owner"),
    ("DELETE", "/api/model-groups/{group_name}", "owner"),
    ("POST", "/api/teams/create", "owner"),
    ("PUT", "/api/teams/{team_id}/limits", "owner"),
    ("PUT", "/api/teams/{team_id}/model-groups", "owner"),
    ("POST", "/api/teams/{team_id}/suspend", "owner"),
    ("POST", "/api/teams/{team_id}/resume", "owner"),
    ("POST", "/api/teams/{team_id}/rotate-key", "owner"),
    ("POST", "/api/jobs/create", "owner"),
    ("POST", "/api/jobs/{job_id}/llm-call", "owner"),
    ("POST", "/api/jobs/{job_id}/llm-calls", "owner"),
    ("POST", "/api/jobs/{job_id}/complete", "owner"),
    ("POST", "/api/jobs/{job_id}/cancel", "owner"),
    ("GET", "/api/admin-keys", "owner"),
    ("POST", "/api/admin-keys/create", "owner"),
    ("POST", "/api/admin-keys/{admin_key_id}/revoke", "owner"),
];

const ROLES: [&str; 3] = ["viewer", "billing", "owner"];

fn rank(role: &str) -> usize {
    ROLES
        .iter()
        .position(|r| *r == role)
        .unwrap_or_else(|| panic!("unknown role {role}"))
}

/// Creates an admin key with the bootstrap key; its id and the key.
pub async fn admin_key(app: &TestApp, name: &str, role: &str) -> (String, String) {
    let response = app
        .admin(Method::POST, "/api/admin-keys/create")
        .json(&json!({"name": name, "role": role}))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("JSON body");
    (
        body["admin_key_id"].as_str().expect("id").to_owned(),
        body["admin_key"].as_str().expect("key").to_owned(),
    )
}

/// The admin operations of the served document: those taking the admin key.
async fn admin_operations(app: &TestApp) -> Vec<(String, String)> {
    let document = ok_json(app.anonymous(Method::GET, "/openapi.json").send().await).await;
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let takes_admin_key = operation["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("admin_key").is_some()));
            if takes_admin_key {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations.sort();
    operations
}

fn least_role(method: &str, path: &str) -> Option<&'static str> {
    LEAST_ROLE
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map(|(_, _, role)| *role)
}

/// The path with values that name nothing stored, so an allowed request changes nothing.
fn concrete(path: &str) -> String {
    path.replace("{job_id}", "0193c0de-0000-7000-8000-000000000000")
        .replace("{call_id}", "0193c0de-0000-7000-8000-000000000001")
        .replace("{admin_key_id}", "0193c0de-0000-7000-8000-000000000002")
        .replace(['{', '}'], "")
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn every_admin_operation_has_a_least_role_and_each_role_gets_what_it_says(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let operations = admin_operations(&app).await;
    assert!(operations.len() > 30, "{operations:?}");
    let unlisted: Vec<_> = operations
        .iter()
        .filter(|(m, p)| least_role(m, p).is_none())
        .collect();
    assert!(
        unlisted.is_empty(),
        "admin operations without a least role: {unlisted:?}"
    );
    let mut keys = Vec::new();
    for role in ROLES {
        keys.push((role, admin_key(&app, &format!("{role}-key"), role).await.1));
    }

    for (method, path) in &operations {
        let required = least_role(method, path).expect("listed");
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        for (role, key) in &keys {
            let response = app
                .with_key(key, method.clone(), &concrete(path))
                .json(&json!({}))
                .send()
                .await
                .expect("request sent");
            let status = response.status();
            let body = response.text().await.expect("body");
            if rank(role) >= rank(required) {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{role} on {method} {path}: {status} {body}"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{role} on {method} {path}");
                let detail: Value = serde_json::from_str(&body).expect("JSON error");
                assert_eq!(
                    detail["detail"],
                    format!("This action requires the {required} role; this admin key is {role}"),
                    "{method} {path}"
                );
            }
        }
    }
    // HEAD is a GET for the roles.
    let head = app
        .with_key(&keys[0].1, Method::HEAD, "/api/model-groups")
        .send()
        .await
        .expect("request sent");
    assert_eq!(head.status(), StatusCode::OK);
    // Nothing was changed: every allowed request named nothing that exists.
    assert_eq!(
        count(
            &db,
            "select count(*) from audit_log where action <> 'admin_key.create'"
        )
        .await,
        0
    );
    assert_eq!(count(&db, "select count(*) from organizations").await, 0);
    assert_eq!(count(&db, "select count(*) from admin_keys").await, 3);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_console_applies_the_roles_and_ends_a_revoked_keys_session(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let (id, key) = admin_key(&app, "watcher", "viewer").await;
    let browser = Browser::signed_in(&app, &key).await;
    let page = browser.get("/console/organizations").await;
    assert_eq!(page.status, StatusCode::OK);
    let answer = browser
        .post(
            "/console/organizations",
            &[
                ("csrf", &page.csrf()),
                ("organization_id", "org_x"),
                ("name", "X"),
            ],
        )
        .await;
    assert!(
        answer
            .body
            .contains("This action requires the owner role; this admin key is viewer"),
        "{}",
        answer.body
    );
    assert_eq!(count(&db, "select count(*) from organizations").await, 0);

    ok_json(
        app.admin(Method::POST, &format!("/api/admin-keys/{id}/revoke"))
            .send()
            .await,
    )
    .await;
    let after = browser.get("/console/organizations").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert_eq!(
        after.location.as_deref(),
        Some("/console/sign-in?reason=key")
    );
    // The bootstrap key still signs in.
    Browser::signed_in(&app, ADMIN_KEY).await;
}
