//! Each kind of admin change leaves one row naming its actor, its target, the request id and
//! the object before and after it, and never a secret.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::Trail;
use crate::admin_roles::admin_key;
use crate::helpers::app::{assert_not_stored, ok_json};
use crate::helpers::spawn_app;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn organization_and_model_group_changes_leave_one_row_each_with_their_snapshots(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let (owner_id, owner) = admin_key(&app, "ops-owner", "owner").await;
    let as_owner = |method: Method, path: &str| app.with_key(&owner, method, path);
    let mut trail = Trail::start(&app).await;

    let (_, row) = trail
        .logged(
            as_owner(Method::POST, "/api/organizations/create")
                .json(&json!({"organization_id": "org_a", "name": "A"})),
            "req-org",
            "organization.create",
            ("organization", "org_a"),
        )
        .await;
    assert_eq!(
        row["actor"],
        json!({"id": owner_id, "name": "ops-owner", "role": "owner"})
    );
    assert_eq!(row["before"], Value::Null);
    assert_eq!(row["after"]["name"], "A");

    let (_, row) = trail
        .logged(
            as_owner(Method::POST, "/api/model-groups/create")
                .json(&json!({"group_name": "Chat", "models": [{"model_name": "gpt-4o"}]})),
            "req-group",
            "model_group.create",
            ("model_group", "Chat"),
        )
        .await;
    assert_eq!(row["after"]["models"][0]["model_name"], "gpt-4o");

    let (_, row) = trail
        .logged(
            as_owner(Method::PUT, "/api/model-groups/Chat/models")
                .json(&json!([{"model_name": "gpt-4o-mini"}, {"model_name": "gpt-4o"}])),
            "req-models",
            "model_group.replace_models",
            ("model_group", "Chat"),
        )
        .await;
    assert_eq!(row["before"]["models"].as_array().map(Vec::len), Some(1));
    assert_eq!(row["after"]["models"][0]["model_name"], "gpt-4o-mini");

    trail
        .logged(
            as_owner(Method::POST, "/api/model-groups/create")
                .json(&json!({"group_name": "Old", "models": [{"model_name": "gpt-3.5-turbo"}]})),
            "req-old",
            "model_group.create",
            ("model_group", "Old"),
        )
        .await;
    let (_, row) = trail
        .logged(
            as_owner(Method::DELETE, "/api/model-groups/Old"),
            "req-delete",
            "model_group.delete",
            ("model_group", "Old"),
        )
        .await;
    assert_eq!(row["before"]["models"][0]["model_name"], "gpt-3.5-turbo");
    assert_eq!(row["after"], Value::Null);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn team_changes_leave_one_row_each_and_no_key_is_kept(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let (_, owner) = admin_key(&app, "ops-owner", "owner").await;
    let as_owner = |method: Method, path: &str| app.with_key(&owner, method, path);
    app.create_org("org_a").await;
    app.create_group("Chat", &["gpt-4o"]).await;
    let mut trail = Trail::start(&app).await;
    let team_target = ("team", "team_a");

    let (team, row) = trail
        .logged(
            as_owner(Method::POST, "/api/teams/create").json(&json!({
                "organization_id": "org_a", "team_id": "team_a", "model_groups": ["Chat"], "credits_allocated": 5
            })),
            "req-team",
            "team.create",
            team_target,
        )
        .await;
    assert_eq!(row["after"]["credits_allocated"], 5);
    assert_eq!(row["after"]["model_groups"], json!(["Chat"]));
    assert_eq!(row["after"]["key_prefix"], team["key_prefix"]);

    let (_, row) = trail
        .logged(
            as_owner(Method::PUT, "/api/teams/team_a/limits")
                .json(&json!({"max_concurrent_calls": 4})),
            "req-limits",
            "team.set_limits",
            team_target,
        )
        .await;
    assert_eq!(row["before"]["max_concurrent_calls"], Value::Null);
    assert_eq!(row["after"]["max_concurrent_calls"], 4);

    let (_, row) = trail
        .logged(
            as_owner(Method::PUT, "/api/teams/team_a/model-groups").json(&json!([])),
            "req-grants",
            "team.set_model_groups",
            team_target,
        )
        .await;
    assert_eq!(row["before"], json!({"model_groups": ["Chat"]}));
    assert_eq!(row["after"], json!({"model_groups": []}));

    // No secret is kept in the log (or anywhere).
    for secret in [team["virtual_key"].as_str().expect("key"), owner.as_str()] {
        assert_not_stored(&db, secret).await;
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn suspending_resuming_and_rotating_leave_one_row_each_and_no_key_is_kept(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let (_, owner) = admin_key(&app, "ops-owner", "owner").await;
    let as_owner = |method: Method, path: &str| app.with_key(&owner, method, path);
    app.create_org("org_a").await;
    app.create_group("Chat", &["gpt-4o"]).await;
    let team = app.create_team("org_a", "team_a", &["Chat"], 5).await;
    let mut trail = Trail::start(&app).await;
    let team_target = ("team", "team_a");

    for (verb, before, after) in [
        ("suspend", "active", "suspended"),
        ("resume", "suspended", "active"),
    ] {
        let (_, row) = trail
            .logged(
                as_owner(Method::POST, &format!("/api/teams/team_a/{verb}")),
                &format!("req-{verb}"),
                &format!("team.{verb}"),
                team_target,
            )
            .await;
        assert_eq!(row["before"], json!({"status": before}));
        assert_eq!(row["after"], json!({"status": after}));
    }

    let (rotated, row) = trail
        .logged(
            as_owner(Method::POST, "/api/teams/team_a/rotate-key"),
            "req-rotate",
            "team.rotate_key",
            team_target,
        )
        .await;
    assert_eq!(row["before"]["key_prefix"], team["key_prefix"]);
    assert_eq!(row["after"]["key_prefix"], rotated["key_prefix"]);

    // No secret is kept in the log (or anywhere).
    for secret in [
        team["virtual_key"].as_str().expect("key"),
        rotated["virtual_key"].as_str().expect("key"),
        owner.as_str(),
    ] {
        assert_not_stored(&db, secret).await;
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_credit_addition_leaves_one_row_naming_its_ledger_row(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let (billing_id, billing) = admin_key(&app, "ops-billing", "billing").await;
    app.team_with_key("team_a", 5).await;
    let mut trail = Trail::start(&app).await;

    let (added, row) = trail
        .logged(
            app.with_key(&billing, Method::POST, "/api/credits/teams/team_a/add")
                .json(&json!({"credits_amount": 7})),
            "req-credits",
            "credits.add",
            ("team", "team_a"),
        )
        .await;
    assert_eq!(row["actor"]["id"], billing_id);
    assert_eq!(row["actor"]["role"], "billing");
    assert_eq!(
        row["before"],
        json!({"credits_allocated": 5, "credits_remaining": 5})
    );
    assert_eq!(row["after"]["credits_allocated"], 12);
    // The ledger row it names was written with it.
    let transaction_id = added["transaction"]["transaction_id"]
        .as_str()
        .expect("transaction id");
    let ledger_rows: i64 = sqlx::query_scalar(
        "select count(*) from credit_transactions where transaction_id = $1::uuid",
    )
    .bind(transaction_id)
    .fetch_one(&db)
    .await
    .expect("ledger rows");
    assert_eq!(ledger_rows, 1);
    assert_eq!(row["after"]["transaction_id"], transaction_id);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn admin_key_changes_leave_one_row_each_and_no_key_is_kept(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let (_, owner) = admin_key(&app, "ops-owner", "owner").await;
    let as_owner = |method: Method, path: &str| app.with_key(&owner, method, path);
    let mut trail = Trail::start(&app).await;

    let created = super::change(
        as_owner(Method::POST, "/api/admin-keys/create")
            .json(&json!({"name": "temp", "role": "viewer"})),
        "req-key",
    )
    .await;
    let temp_id = created["admin_key_id"].as_str().expect("id");
    let row = trail.one_new_row().await;
    super::assert_row(&row, "admin_key.create", ("admin_key", temp_id), "req-key");
    assert_eq!(row["after"]["role"], "viewer");

    let (_, row) = trail
        .logged(
            as_owner(Method::POST, &format!("/api/admin-keys/{temp_id}/revoke")),
            "req-revoke",
            "admin_key.revoke",
            ("admin_key", temp_id),
        )
        .await;
    assert_eq!(row["before"]["revoked_at"], Value::Null);
    assert!(row["after"]["revoked_at"].is_string(), "{row}");

    // No secret is kept in the log (or anywhere).
    for secret in [created["admin_key"].as_str().expect("key"), owner.as_str()] {
        assert_not_stored(&db, secret).await;
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_request_without_an_id_is_logged_under_the_id_the_api_assigned(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let response = app
        .admin(Method::POST, "/api/organizations/create")
        .json(&json!({"organization_id": "org_a", "name": "A"}))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
    let assigned = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("an assigned request id")
        .to_owned();
    let page = ok_json(app.admin(Method::GET, "/api/audit").send().await).await;
    assert_eq!(page["entries"][0]["request_id"], assigned.as_str());
    assert_eq!(
        page["entries"][0]["actor"],
        json!({"id": "bootstrap", "name": "bootstrap", "role": "owner"})
    );
}
