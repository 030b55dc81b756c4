//! Changing groups: replacing their models, refusing invalid model lists and names, deleting a
//! group no team is assigned, and refusing all of it to team keys.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use super::{model_names, stored_models};
use crate::helpers::app::{count, error_detail};
use crate::helpers::spawn_app;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn replacing_the_models_changes_the_stored_list_and_what_resolve_returns(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_a", 0).await;
    let before = app
        .key_ok(&key, Method::GET, "/api/model-groups/ChatAgent/resolve")
        .await;
    assert_eq!(before["primary_model"], "gpt-3.5-turbo");

    let replaced = app
        .admin_ok_with(
            Method::PUT,
            "/api/model-groups/ChatAgent/models",
            &json!([
                {"model_name": "claude-3-haiku", "priority": 5},
                {"model_name": "gpt-4o", "priority": 1},
                {"model_name": "gpt-4o-mini", "priority": 3},
            ]),
        )
        .await;
    let resolved = app
        .key_ok(&key, Method::GET, "/api/model-groups/ChatAgent/resolve")
        .await;

    assert_eq!(replaced["group_name"], "ChatAgent");
    assert_eq!(
        model_names(&replaced),
        vec!["gpt-4o", "gpt-4o-mini", "claude-3-haiku"]
    );
    assert_eq!(
        stored_models(&db, "ChatAgent").await,
        vec![
            ("gpt-4o".to_owned(), 1),
            ("gpt-4o-mini".to_owned(), 3),
            ("claude-3-haiku".to_owned(), 5)
        ]
    );
    assert_eq!(resolved["group_name"], "ChatAgent");
    assert_eq!(resolved["team_has_access"], true);
    assert_eq!(resolved["primary_model"], "gpt-4o");
    assert_eq!(
        resolved["fallback_models"],
        json!(["gpt-4o-mini", "claude-3-haiku"])
    );
    assert!(resolved.get("error").is_none());
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn replacing_the_models_accepts_an_object_with_a_models_field(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.create_group("ChatAgent", &["gpt-4o", "gpt-4o-mini"])
        .await;

    let replaced = app
        .admin_ok_with(
            Method::PUT,
            "/api/model-groups/ChatAgent/models",
            &json!({"models": [{"model_name": "claude-3-haiku"}]}),
        )
        .await;

    assert_eq!(model_names(&replaced), vec!["claude-3-haiku"]);
    assert_eq!(
        stored_models(&db, "ChatAgent").await,
        vec![("claude-3-haiku".to_owned(), 0)]
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn replacing_the_models_of_an_unknown_group_is_404(db: PgPool) {
    let app = spawn_app(db.clone()).await;

    let detail = app
        .admin_refused(
            Method::PUT,
            "/api/model-groups/Nope/models",
            Some(&json!([{"model_name": "gpt-4o"}])),
            StatusCode::NOT_FOUND,
        )
        .await;

    assert_eq!(detail, "Model group 'Nope' not found");
    assert_eq!(
        count(&db, "select count(*) from model_group_models").await,
        0
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn invalid_model_lists_and_group_names_are_400_and_change_nothing(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.create_group("ChatAgent", &["gpt-4o", "gpt-4o-mini"])
        .await;
    let cases = [
        (json!([]), "models must list at least one model"),
        (
            json!([{"model_name": "gpt-4o", "priority": 0}, {"model_name": "gpt-4o", "priority": 1}]),
            "model 'gpt-4o' is listed twice",
        ),
        (
            json!([{"model_name": "gpt-4o", "priority": 0}, {"model_name": "claude-3", "priority": 0}]),
            "priority 0 is used twice",
        ),
        (
            json!([{"model_name": "  "}]),
            "model_name must be between 1 and 200 characters",
        ),
        (
            json!([{"model_name": "gpt-4o", "priority": -1}]),
            "priority of 'gpt-4o' must be between 0 and 10000",
        ),
        (
            json!([{"model_name": "gpt-4o", "config": [1]}]),
            "config of 'gpt-4o' must be a JSON object",
        ),
    ];

    for (models, expected) in &cases {
        let create = app
            .admin(Method::POST, "/api/model-groups/create")
            .json(&json!({"group_name": "NewGroup", "models": models}))
            .send()
            .await;
        assert_eq!(
            error_detail(create, StatusCode::BAD_REQUEST).await,
            *expected,
            "create with {models}"
        );
        let replace = app
            .admin(Method::PUT, "/api/model-groups/ChatAgent/models")
            .json(models)
            .send()
            .await;
        assert_eq!(
            error_detail(replace, StatusCode::BAD_REQUEST).await,
            *expected,
            "replace with {models}"
        );
    }
    for bad_name in ["", "has space", "slash/name", "ümlaut"] {
        let detail = app
            .admin_refused(
                Method::POST,
                "/api/model-groups/create",
                Some(&json!({"group_name": bad_name, "models": [{"model_name": "gpt-4o"}]})),
                StatusCode::BAD_REQUEST,
            )
            .await;
        assert!(detail.starts_with("group_name "), "{bad_name:?}: {detail}");
    }

    assert_eq!(count(&db, "select count(*) from model_groups").await, 1);
    assert_eq!(
        stored_models(&db, "ChatAgent").await,
        vec![("gpt-4o".to_owned(), 0), ("gpt-4o-mini".to_owned(), 1)]
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_group_assigned_to_a_team_is_409_on_delete_until_it_is_unassigned(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.create_org("org_a").await;
    app.create_group("ChatAgent", &["gpt-4o", "gpt-4o-mini"])
        .await;
    app.create_team("org_a", "team_a", &["ChatAgent"], 0).await;

    let detail = app
        .admin_refused(
            Method::DELETE,
            "/api/model-groups/ChatAgent",
            None,
            StatusCode::CONFLICT,
        )
        .await;
    assert_eq!(
        detail,
        "Model group 'ChatAgent' is assigned to team(s) team_a; remove it from them first"
    );
    assert_eq!(count(&db, "select count(*) from model_groups").await, 1);
    assert_eq!(
        count(&db, "select count(*) from model_group_models").await,
        2
    );

    app.admin_ok_with(Method::PUT, "/api/teams/team_a/model-groups", &json!([]))
        .await;
    let deleted = app
        .admin_ok(Method::DELETE, "/api/model-groups/ChatAgent")
        .await;

    assert_eq!(deleted["group_name"], "ChatAgent");
    assert_eq!(
        deleted["message"],
        "Model group 'ChatAgent' deleted successfully"
    );
    assert_eq!(count(&db, "select count(*) from model_groups").await, 0);
    assert_eq!(
        count(&db, "select count(*) from model_group_models").await,
        0
    );
    app.admin_refused(
        Method::GET,
        "/api/model-groups/ChatAgent",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn deleting_an_unknown_group_is_404(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.create_group("ChatAgent", &["gpt-4o"]).await;

    let detail = app
        .admin_refused(
            Method::DELETE,
            "/api/model-groups/Nope",
            None,
            StatusCode::NOT_FOUND,
        )
        .await;

    assert_eq!(detail, "Model group 'Nope' not found");
    assert_eq!(count(&db, "select count(*) from model_groups").await, 1);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn team_keys_cannot_create_replace_or_delete_groups(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_a", 0).await;
    app.create_group("Unassigned", &["gpt-4o"]).await;

    let attempts = [
        app.with_key(&key, Method::POST, "/api/model-groups/create")
            .json(&json!({"group_name": "Mine", "models": [{"model_name": "gpt-4o"}]})),
        app.with_key(&key, Method::PUT, "/api/model-groups/ChatAgent/models")
            .json(&json!([{"model_name": "gpt-4o"}])),
        app.with_key(&key, Method::DELETE, "/api/model-groups/Unassigned"),
    ];
    for attempt in attempts {
        let detail = error_detail(attempt.send().await, StatusCode::FORBIDDEN).await;
        assert_eq!(detail, "This endpoint requires the admin key");
    }

    let groups: Vec<String> =
        sqlx::query_scalar("select group_name from model_groups order by group_name")
            .fetch_all(&db)
            .await
            .expect("groups");
    assert_eq!(groups, vec!["ChatAgent", "Unassigned"]);
    assert_eq!(
        stored_models(&db, "ChatAgent").await,
        vec![("gpt-3.5-turbo".to_owned(), 0), ("gpt-4".to_owned(), 1)]
    );
}
