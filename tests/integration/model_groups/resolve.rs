//! Resolving a group for a team: a team key resolves for its own team, the admin names one; a group
//! the team lacks resolves without access or models.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::spawn_app;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn resolve_with_a_team_key_defaults_to_its_team_and_rejects_another_team_id(db: PgPool) {
    let app = spawn_app(db).await;
    let key = app.team_with_key("team_a", 0).await;
    app.team_with_key("team_b", 0).await;

    let implicit = app
        .key_ok(&key, Method::GET, "/api/model-groups/ChatAgent/resolve")
        .await;
    let explicit = app
        .key_ok(
            &key,
            Method::GET,
            "/api/model-groups/ChatAgent/resolve?team_id=team_a",
        )
        .await;
    let detail = app
        .key_refused(
            &key,
            Method::GET,
            "/api/model-groups/ChatAgent/resolve?team_id=team_b",
            None,
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

    let by_team = app
        .key_ok(&key, Method::GET, "/api/model-groups/ResearchAgent/resolve")
        .await;
    let by_admin = app
        .admin_ok(
            Method::GET,
            "/api/model-groups/ResearchAgent/resolve?team_id=team_a",
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

    let resolved = app
        .admin_ok(
            Method::GET,
            "/api/model-groups/ChatAgent/resolve?team_id=team_a",
        )
        .await;
    let missing_team_id = app
        .admin_refused(
            Method::GET,
            "/api/model-groups/ChatAgent/resolve",
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    let unknown_team = app
        .admin_refused(
            Method::GET,
            "/api/model-groups/ChatAgent/resolve?team_id=team_nope",
            None,
            StatusCode::NOT_FOUND,
        )
        .await;
    let unknown_group = app
        .admin_refused(
            Method::GET,
            "/api/model-groups/Nope/resolve?team_id=team_a",
            None,
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

    let detail = app
        .key_refused(
            &key,
            Method::GET,
            "/api/model-groups/Nope/resolve",
            None,
            StatusCode::NOT_FOUND,
        )
        .await;

    assert_eq!(detail, "Model group 'Nope' not found");
}
