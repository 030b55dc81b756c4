//! Model groups: create, list, get, replace models, delete, resolve; admin manages, a team key sees
//! only the groups granted to its team.

mod changes;
mod resolve;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::count;
use crate::helpers::spawn_app;

/// The model names of a group as stored, by priority.
pub(super) async fn stored_models(db: &PgPool, group_name: &str) -> Vec<(String, i32)> {
    sqlx::query_as(
        "select m.model_name, m.priority from model_group_models m join model_groups g using (model_group_id)
         where g.group_name = $1 order by m.priority",
    )
    .bind(group_name)
    .fetch_all(db)
    .await
    .expect("models")
}

pub(super) fn model_names(group: &Value) -> Vec<&str> {
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

    let created = app
        .admin_ok_with(Method::POST, "/api/model-groups/create", &body)
        .await;
    let fetched = app
        .admin_ok(Method::GET, "/api/model-groups/ResearchAgent")
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

    let created = app
        .admin_ok_with(Method::POST, "/api/model-groups/create", &body)
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

    let detail = app
        .admin_refused(
            Method::POST,
            "/api/model-groups/create",
            Some(&json!({"group_name": "ChatAgent", "models": [{"model_name": "claude-3"}]})),
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

    let all = app.admin_ok(Method::GET, "/api/model-groups").await;
    let granted = app.key_ok(key, Method::GET, "/api/model-groups").await;

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

    let group = app
        .key_ok(key, Method::GET, "/api/model-groups/ChatAgent")
        .await;
    let models = app
        .key_ok(key, Method::GET, "/api/model-groups/ChatAgent/models")
        .await;
    let admin_models = app
        .admin_ok(Method::GET, "/api/model-groups/ResearchAgent/models")
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
        let detail = app
            .key_refused(key, Method::GET, path, None, StatusCode::NOT_FOUND)
            .await;
        assert_eq!(detail, "Model group 'ResearchAgent' not found");
    }
    for path in ["/api/model-groups/Nope", "/api/model-groups/Nope/models"] {
        let detail = app
            .admin_refused(Method::GET, path, None, StatusCode::NOT_FOUND)
            .await;
        assert_eq!(detail, "Model group 'Nope' not found");
    }
}
