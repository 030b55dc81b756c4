//! Model groups: create, list, get, replace models, delete, resolve; admin manages, a team key sees
//! only the groups granted to its team.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::{count, error_detail, ok_json};
use crate::helpers::spawn_app;

/// The model names of a group as stored, by priority.
async fn stored_models(db: &PgPool, group_name: &str) -> Vec<(String, i32)> {
    sqlx::query_as(
        "select m.model_name, m.priority from model_group_models m join model_groups g using (model_group_id)
         where g.group_name = $1 order by m.priority",
    )
    .bind(group_name)
    .fetch_all(db)
    .await
    .expect("models")
}

fn model_names(group: &Value) -> Vec<&str> {
    group["models"]
        .as_array()
        .expect("models array")
        .iter()
        .map(|m| m["model_name"].as_str().expect("model_name"))
        .collect()
}

fn group_names(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("bare array")
        .iter()
        .map(|g| g["group_name"].as_str().expect("group_name"))
        .collect()
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn creates_a_model_group_in_the_guide_shape_with_models_ordered_by_priority(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let body = json!({
        "group_name": "ResearchAgent",
        "description": "Deep research",
        "models": [
            {"model_name": "claude-3-opus", "priority": 2},
            {"model_name": "gpt-4o", "priority": 0},
            {"model_name": "gpt-4o-mini", "priority": 1, "config": {"temperature": 0.2}},
        ],
        "metadata": {"owner": "research"},
    });

    let created = ok_json(
        app.admin(Method::POST, "/api/model-groups/create")
            .json(&body)
            .send()
            .await,
    )
    .await;
    let fetched = ok_json(
        app.admin(Method::GET, "/api/model-groups/ResearchAgent")
            .send()
            .await,
    )
    .await;

    for group in [&created, &fetched] {
        assert!(
            group["model_group_id"]
                .as_str()
                .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok())
        );
        assert_eq!(group["group_name"], "ResearchAgent");
        assert_eq!(
            group["display_name"], "ResearchAgent",
            "display_name defaults to the group name"
        );
        assert_eq!(group["description"], "Deep research");
        assert_eq!(group["status"], "active");
        assert_eq!(group["metadata"], json!({"owner": "research"}));
        assert_eq!(
            group["models"],
            json!([
                {"model_name": "gpt-4o", "priority": 0, "config": {}},
                {"model_name": "gpt-4o-mini", "priority": 1, "config": {"temperature": 0.2}},
                {"model_name": "claude-3-opus", "priority": 2, "config": {}},
            ])
        );
        assert!(group["created_at"].is_string() && group["updated_at"].is_string());
    }
    let display_name: Option<String> = sqlx::query_scalar(
        "select display_name from model_groups where group_name = 'ResearchAgent'",
    )
    .fetch_one(&db)
    .await
    .expect("row");
    assert_eq!(display_name.as_deref(), Some("ResearchAgent"));
    assert_eq!(
        stored_models(&db, "ResearchAgent").await,
        vec![
            ("gpt-4o".to_owned(), 0),
            ("gpt-4o-mini".to_owned(), 1),
            ("claude-3-opus".to_owned(), 2)
        ]
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn models_without_priority_take_their_list_position_and_display_name_is_kept(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let body = json!({
        "group_name": "ChatAgent",
        "display_name": "Chat Agent",
        "models": [{"model_name": "gpt-4o"}, {"model_name": "gpt-3.5-turbo"}],
    });

    let created = ok_json(
        app.admin(Method::POST, "/api/model-groups/create")
            .json(&body)
            .send()
            .await,
    )
    .await;

    assert_eq!(created["display_name"], "Chat Agent");
    assert_eq!(created["metadata"], json!({}));
    assert_eq!(created["models"][0]["priority"], 0);
    assert_eq!(created["models"][1]["priority"], 1);
    assert_eq!(
        stored_models(&db, "ChatAgent").await,
        vec![("gpt-4o".to_owned(), 0), ("gpt-3.5-turbo".to_owned(), 1)]
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn duplicate_group_name_is_409_and_keeps_the_first_group(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.create_group("ChatAgent", &["gpt-4o"]).await;

    let detail = error_detail(
        app.admin(Method::POST, "/api/model-groups/create")
            .json(&json!({"group_name": "ChatAgent", "models": [{"model_name": "claude-3"}]}))
            .send()
            .await,
        StatusCode::CONFLICT,
    )
    .await;

    assert_eq!(detail, "Model group 'ChatAgent' already exists");
    assert_eq!(count(&db, "select count(*) from model_groups").await, 1);
    assert_eq!(
        stored_models(&db, "ChatAgent").await,
        vec![("gpt-4o".to_owned(), 0)]
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn admin_lists_every_group_and_a_team_key_only_its_granted_groups(db: PgPool) {
    let app = spawn_app(db).await;
    app.create_org("org_a").await;
    app.create_group("ChatAgent", &["gpt-4o", "gpt-4o-mini"])
        .await;
    app.create_group("ResearchAgent", &["claude-3-opus"]).await;
    app.create_group("VisionAgent", &["gpt-4-vision"]).await;
    let team = app
        .create_team("org_a", "team_a", &["VisionAgent", "ChatAgent"], 0)
        .await;
    let key = team["virtual_key"].as_str().expect("key");

    let all = ok_json(app.admin(Method::GET, "/api/model-groups").send().await).await;
    let granted = ok_json(
        app.with_key(key, Method::GET, "/api/model-groups")
            .send()
            .await,
    )
    .await;

    assert_eq!(
        group_names(&all),
        vec!["ChatAgent", "ResearchAgent", "VisionAgent"]
    );
    assert_eq!(model_names(&all[0]), vec!["gpt-4o", "gpt-4o-mini"]);
    assert_eq!(group_names(&granted), vec!["ChatAgent", "VisionAgent"]);
    assert_eq!(model_names(&granted[1]), vec!["gpt-4-vision"]);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_team_key_gets_a_granted_group_and_404_for_any_other(db: PgPool) {
    let app = spawn_app(db).await;
    app.create_org("org_a").await;
    app.create_group("ChatAgent", &["gpt-4o", "gpt-4o-mini"])
        .await;
    app.create_group("ResearchAgent", &["claude-3-opus"]).await;
    let team = app.create_team("org_a", "team_a", &["ChatAgent"], 0).await;
    let key = team["virtual_key"].as_str().expect("key");

    let group = ok_json(
        app.with_key(key, Method::GET, "/api/model-groups/ChatAgent")
            .send()
            .await,
    )
    .await;
    let models = ok_json(
        app.with_key(key, Method::GET, "/api/model-groups/ChatAgent/models")
            .send()
            .await,
    )
    .await;
    let admin_models = ok_json(
        app.admin(Method::GET, "/api/model-groups/ResearchAgent/models")
            .send()
            .await,
    )
    .await;

    assert_eq!(group["group_name"], "ChatAgent");
    assert_eq!(model_names(&group), vec!["gpt-4o", "gpt-4o-mini"]);
    assert_eq!(models["group_name"], "ChatAgent");
    assert_eq!(model_names(&models), vec!["gpt-4o", "gpt-4o-mini"]);
    assert_eq!(model_names(&admin_models), vec!["claude-3-opus"]);
    for path in [
        "/api/model-groups/ResearchAgent",
        "/api/model-groups/ResearchAgent/models",
    ] {
        let detail = error_detail(
            app.with_key(key, Method::GET, path).send().await,
            StatusCode::NOT_FOUND,
        )
        .await;
        assert_eq!(detail, "Model group 'ResearchAgent' not found");
    }
    for path in ["/api/model-groups/Nope", "/api/model-groups/Nope/models"] {
        let detail = error_detail(
            app.admin(Method::GET, path).send().await,
            StatusCode::NOT_FOUND,
        )
        .await;
        assert_eq!(detail, "Model group 'Nope' not found");
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn replacing_the_models_changes_the_stored_list_and_what_resolve_returns(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_a", 0).await;
    let before = ok_json(
        app.with_key(&key, Method::GET, "/api/model-groups/ChatAgent/resolve")
            .send()
            .await,
    )
    .await;
    assert_eq!(before["primary_model"], "gpt-3.5-turbo");

    let replaced = ok_json(
        app.admin(Method::PUT, "/api/model-groups/ChatAgent/models")
            .json(&json!([
                {"model_name": "claude-3-haiku", "priority": 5},
                {"model_name": "gpt-4o", "priority": 1},
                {"model_name": "gpt-4o-mini", "priority": 3},
            ]))
            .send()
            .await,
    )
    .await;
    let resolved = ok_json(
        app.with_key(&key, Method::GET, "/api/model-groups/ChatAgent/resolve")
            .send()
            .await,
    )
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

    let replaced = ok_json(
        app.admin(Method::PUT, "/api/model-groups/ChatAgent/models")
            .json(&json!({"models": [{"model_name": "claude-3-haiku"}]}))
            .send()
            .await,
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

    let detail = error_detail(
        app.admin(Method::PUT, "/api/model-groups/Nope/models")
            .json(&json!([{"model_name": "gpt-4o"}]))
            .send()
            .await,
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
        let detail = error_detail(
            app.admin(Method::POST, "/api/model-groups/create")
                .json(&json!({"group_name": bad_name, "models": [{"model_name": "gpt-4o"}]}))
                .send()
                .await,
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

    let detail = error_detail(
        app.admin(Method::DELETE, "/api/model-groups/ChatAgent")
            .send()
            .await,
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

    ok_json(
        app.admin(Method::PUT, "/api/teams/team_a/model-groups")
            .json(&json!([]))
            .send()
            .await,
    )
    .await;
    let deleted = ok_json(
        app.admin(Method::DELETE, "/api/model-groups/ChatAgent")
            .send()
            .await,
    )
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
    error_detail(
        app.admin(Method::GET, "/api/model-groups/ChatAgent")
            .send()
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn deleting_an_unknown_group_is_404(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.create_group("ChatAgent", &["gpt-4o"]).await;

    let detail = error_detail(
        app.admin(Method::DELETE, "/api/model-groups/Nope")
            .send()
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;

    assert_eq!(detail, "Model group 'Nope' not found");
    assert_eq!(count(&db, "select count(*) from model_groups").await, 1);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn resolve_with_a_team_key_defaults_to_its_team_and_rejects_another_team_id(db: PgPool) {
    let app = spawn_app(db).await;
    let key = app.team_with_key("team_a", 0).await;
    app.team_with_key("team_b", 0).await;

    let implicit = ok_json(
        app.with_key(&key, Method::GET, "/api/model-groups/ChatAgent/resolve")
            .send()
            .await,
    )
    .await;
    let explicit = ok_json(
        app.with_key(
            &key,
            Method::GET,
            "/api/model-groups/ChatAgent/resolve?team_id=team_a",
        )
        .send()
        .await,
    )
    .await;
    let detail = error_detail(
        app.with_key(
            &key,
            Method::GET,
            "/api/model-groups/ChatAgent/resolve?team_id=team_b",
        )
        .send()
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;

    for resolved in [&implicit, &explicit] {
        assert_eq!(resolved["group_name"], "ChatAgent");
        assert_eq!(resolved["team_has_access"], true);
        assert_eq!(resolved["primary_model"], "gpt-3.5-turbo");
        assert_eq!(resolved["fallback_models"], json!(["gpt-4"]));
    }
    assert_eq!(
        detail,
        "team_id 'team_b' does not match the team of this API key"
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn resolve_for_a_group_the_team_lacks_is_200_without_access_or_models(db: PgPool) {
    let app = spawn_app(db).await;
    let key = app.team_with_key("team_a", 0).await;
    app.create_group("ResearchAgent", &["claude-3-opus", "gpt-4o"])
        .await;

    let by_team = ok_json(
        app.with_key(&key, Method::GET, "/api/model-groups/ResearchAgent/resolve")
            .send()
            .await,
    )
    .await;
    let by_admin = ok_json(
        app.admin(
            Method::GET,
            "/api/model-groups/ResearchAgent/resolve?team_id=team_a",
        )
        .send()
        .await,
    )
    .await;

    for resolved in [&by_team, &by_admin] {
        assert_eq!(resolved["group_name"], "ResearchAgent");
        assert_eq!(resolved["team_has_access"], false);
        assert_eq!(resolved["primary_model"], Value::Null);
        assert_eq!(resolved["fallback_models"], json!([]));
        assert_eq!(
            resolved["error"],
            "Team 'team_a' does not have access to model group 'ResearchAgent'"
        );
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn admin_resolve_needs_a_team_id_of_an_existing_team_and_an_existing_group(db: PgPool) {
    let app = spawn_app(db).await;
    app.team_with_key("team_a", 0).await;

    let resolved = ok_json(
        app.admin(
            Method::GET,
            "/api/model-groups/ChatAgent/resolve?team_id=team_a",
        )
        .send()
        .await,
    )
    .await;
    let missing_team_id = error_detail(
        app.admin(Method::GET, "/api/model-groups/ChatAgent/resolve")
            .send()
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let unknown_team = error_detail(
        app.admin(
            Method::GET,
            "/api/model-groups/ChatAgent/resolve?team_id=team_nope",
        )
        .send()
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let unknown_group = error_detail(
        app.admin(Method::GET, "/api/model-groups/Nope/resolve?team_id=team_a")
            .send()
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;

    assert_eq!(resolved["team_has_access"], true);
    assert_eq!(resolved["primary_model"], "gpt-3.5-turbo");
    assert_eq!(missing_team_id, "team_id query parameter is required");
    assert_eq!(unknown_team, "Team 'team_nope' not found");
    assert_eq!(unknown_group, "Model group 'Nope' not found");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn resolve_with_a_team_key_for_an_unknown_group_is_404(db: PgPool) {
    let app = spawn_app(db).await;
    let key = app.team_with_key("team_a", 0).await;

    let detail = error_detail(
        app.with_key(&key, Method::GET, "/api/model-groups/Nope/resolve")
            .send()
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;

    assert_eq!(detail, "Model group 'Nope' not found");
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
