//! Teams: create (key shown once), get with credits, grant model groups, suspend, resume, rotate key,
//! and keys stored only as hashes.

mod keys;

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::app::{assert_ledger_consistent, count};
use crate::helpers::{TestApp, spawn_app};

/// The team's grants as stored, in grant order.
async fn stored_grants(db: &PgPool, team_id: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select g.group_name from team_model_groups t join model_groups g using (model_group_id)
         where t.team_id = $1 order by t.position",
    )
    .bind(team_id)
    .fetch_all(db)
    .await
    .expect("grants")
}

/// Counts the rows every team creation writes, for "nothing was written" checks.
async fn team_rows(db: &PgPool) -> [i64; 5] {
    [
        count(db, "select count(*) from teams").await,
        count(db, "select count(*) from team_model_groups").await,
        count(db, "select count(*) from credit_balances").await,
        count(db, "select count(*) from credit_transactions").await,
        count(db, "select count(*) from virtual_keys").await,
    ]
}

/// Two groups that share `gpt-4o`, and an organization.
async fn org_and_overlapping_groups(app: &TestApp) {
    app.create_org("org_a").await;
    app.create_group("ChatAgent", &["gpt-4o-mini", "gpt-4o"])
        .await;
    app.create_group("ResearchAgent", &["gpt-4o", "claude-3-opus"])
        .await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn creating_a_team_returns_its_key_once_and_the_union_of_its_groups_models(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    org_and_overlapping_groups(&app).await;
    let body = json!({
        "organization_id": "org_a",
        "team_id": "team_eng",
        "team_alias": "Engineering",
        "model_groups": ["ChatAgent", "ResearchAgent", "ChatAgent"],
        "credits_allocated": 100,
        "metadata": {"cost_center": "42"},
    });

    let created = app
        .admin_ok_with(Method::POST, "/api/teams/create", &body)
        .await;

    let key = created["virtual_key"].as_str().expect("virtual_key");
    assert!(key.starts_with("sk-") && key.len() == 67, "{key}");
    assert!(key.starts_with(created["key_prefix"].as_str().expect("key_prefix")));
    assert_eq!(created["team_id"], "team_eng");
    assert_eq!(created["organization_id"], "org_a");
    assert_eq!(created["team_alias"], "Engineering");
    assert_eq!(created["status"], "active");
    assert_eq!(
        created["model_groups"],
        json!(["ChatAgent", "ResearchAgent"])
    );
    assert_eq!(
        created["allowed_models"],
        json!(["gpt-4o-mini", "gpt-4o", "claude-3-opus"])
    );
    assert_eq!(created["credits_allocated"], 100);
    assert_eq!(created["credits_remaining"], 100);
    assert_eq!(created["metadata"], json!({"cost_center": "42"}));

    assert_eq!(
        stored_grants(&db, "team_eng").await,
        vec!["ChatAgent", "ResearchAgent"]
    );
    assert_eq!(team_rows(&db).await, [1, 2, 1, 1, 1]);
    assert_ledger_consistent(&db, "team_eng").await;
    let fetched = app
        .admin(Method::GET, "/api/teams/team_eng")
        .send()
        .await
        .expect("request");
    let text = fetched.text().await.expect("body");
    assert!(!text.contains(key), "the key is shown only once: {text}");
    let own = app
        .with_key(key, Method::GET, "/api/teams/team_eng")
        .send()
        .await
        .expect("request");
    assert_eq!(
        own.status(),
        StatusCode::OK,
        "the returned key authenticates the team"
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn duplicate_team_id_is_409_and_keeps_the_first_team(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    org_and_overlapping_groups(&app).await;
    app.create_org("org_b").await;
    app.create_team("org_a", "team_a", &["ChatAgent"], 10).await;

    let detail = app.admin_refused(Method::POST, "/api/teams/create", Some(&json!({"organization_id": "org_b", "team_id": "team_a", "model_groups": ["ResearchAgent"], "credits_allocated": 99})), StatusCode::CONFLICT).await;

    assert_eq!(detail, "Team 'team_a' already exists");
    assert_eq!(team_rows(&db).await, [1, 1, 1, 1, 1]);
    let (org, allocated): (String, i64) = sqlx::query_as(
        "select t.organization_id, b.credits_allocated from teams t join credit_balances b using (team_id)
         where team_id = 'team_a'",
    )
    .fetch_one(&db)
    .await
    .expect("team");
    assert_eq!((org.as_str(), allocated), ("org_a", 10));
    assert_eq!(stored_grants(&db, "team_a").await, vec!["ChatAgent"]);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn team_of_an_unknown_organization_is_404_and_writes_nothing(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.create_group("ChatAgent", &["gpt-4o"]).await;

    let detail = app.admin_refused(Method::POST, "/api/teams/create", Some(&json!({"organization_id": "org_nope", "team_id": "team_a", "model_groups": ["ChatAgent"], "credits_allocated": 5})), StatusCode::NOT_FOUND).await;

    assert_eq!(detail, "Organization 'org_nope' not found");
    assert_eq!(team_rows(&db).await, [0, 0, 0, 0, 0]);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn team_with_an_unknown_model_group_is_404_and_writes_nothing(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    org_and_overlapping_groups(&app).await;

    let detail = app
        .admin_refused(
            Method::POST,
            "/api/teams/create",
            Some(&json!({
                "organization_id": "org_a",
                "team_id": "team_a",
                "model_groups": ["ChatAgent", "NoSuchGroup"],
                "credits_allocated": 5,
            })),
            StatusCode::NOT_FOUND,
        )
        .await;

    assert_eq!(detail, "Model group 'NoSuchGroup' not found");
    assert_eq!(team_rows(&db).await, [0, 0, 0, 0, 0]);
    app.admin_refused(
        Method::GET,
        "/api/teams/team_a",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn get_team_nests_the_credit_counters_for_the_admin_and_the_team_itself(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    org_and_overlapping_groups(&app).await;
    let created = app
        .create_team("org_a", "team_a", &["ResearchAgent", "ChatAgent"], 100)
        .await;
    let key = created["virtual_key"].as_str().expect("key");
    // Distinct counters so that each derived figure is checked: 30 used, 5 held by open jobs.
    sqlx::query("update credit_balances set credits_used = 30, credits_reserved = 5 where team_id = 'team_a'")
        .execute(&db)
        .await
        .expect("arrange counters");

    let by_admin = app.admin_ok(Method::GET, "/api/teams/team_a").await;
    let by_team = app.key_ok(key, Method::GET, "/api/teams/team_a").await;

    for team in [&by_admin, &by_team] {
        assert_eq!(team["team_id"], "team_a");
        assert_eq!(team["organization_id"], "org_a");
        assert_eq!(team["status"], "active");
        assert_eq!(team["model_groups"], json!(["ResearchAgent", "ChatAgent"]));
        assert_eq!(
            team["allowed_models"],
            json!(["gpt-4o", "claude-3-opus", "gpt-4o-mini"])
        );
        assert_eq!(team["key_prefix"], created["key_prefix"]);
        assert_eq!(team["credits"]["credits_allocated"], 100);
        assert_eq!(team["credits"]["credits_used"], 30);
        assert_eq!(team["credits"]["credits_remaining"], 70);
        assert_eq!(team["credits"]["credits_reserved"], 5);
        assert_eq!(team["credits"]["credits_available"], 65);
        assert!(team.get("virtual_key").is_none());
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn another_teams_key_gets_404_for_a_team(db: PgPool) {
    let app = spawn_app(db).await;
    app.team_with_key("team_a", 10).await;
    let other_key = app.team_with_key("team_b", 10).await;

    let detail = app
        .key_refused(
            &other_key,
            Method::GET,
            "/api/teams/team_a",
            None,
            StatusCode::NOT_FOUND,
        )
        .await;
    let unknown = app
        .key_refused(
            &other_key,
            Method::GET,
            "/api/teams/team_nope",
            None,
            StatusCode::NOT_FOUND,
        )
        .await;

    assert_eq!(detail, "Team 'team_a' not found");
    assert_eq!(
        unknown, "Team 'team_nope' not found",
        "another team looks exactly like a missing one"
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn replacing_model_groups_changes_grants_and_allowed_models(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    org_and_overlapping_groups(&app).await;
    app.create_group("VisionAgent", &["gpt-4-vision"]).await;
    let created = app.create_team("org_a", "team_a", &["ChatAgent"], 0).await;
    let key = created["virtual_key"].as_str().expect("key");

    let replaced = app
        .admin_ok_with(
            Method::PUT,
            "/api/teams/team_a/model-groups",
            &json!(["VisionAgent", "ResearchAgent"]),
        )
        .await;
    let fetched = app.admin_ok(Method::GET, "/api/teams/team_a").await;
    let old_group = app
        .key_ok(key, Method::GET, "/api/model-groups/ChatAgent/resolve")
        .await;

    assert_eq!(replaced["team_id"], "team_a");
    assert_eq!(
        replaced["model_groups"],
        json!(["VisionAgent", "ResearchAgent"])
    );
    assert_eq!(
        replaced["allowed_models"],
        json!(["gpt-4-vision", "gpt-4o", "claude-3-opus"])
    );
    assert_eq!(
        stored_grants(&db, "team_a").await,
        vec!["VisionAgent", "ResearchAgent"]
    );
    assert_eq!(fetched["model_groups"], replaced["model_groups"]);
    assert_eq!(fetched["allowed_models"], replaced["allowed_models"]);
    assert_eq!(old_group["team_has_access"], false);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn replacing_model_groups_with_an_unknown_group_is_404_and_keeps_the_grants(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    org_and_overlapping_groups(&app).await;
    app.create_team("org_a", "team_a", &["ChatAgent"], 0).await;

    let detail = app
        .admin_refused(
            Method::PUT,
            "/api/teams/team_a/model-groups",
            Some(&json!(["ResearchAgent", "NoSuchGroup"])),
            StatusCode::NOT_FOUND,
        )
        .await;
    let unknown_team = app
        .admin_refused(
            Method::PUT,
            "/api/teams/team_nope/model-groups",
            Some(&json!(["ChatAgent"])),
            StatusCode::NOT_FOUND,
        )
        .await;

    assert_eq!(detail, "Model group 'NoSuchGroup' not found");
    assert_eq!(unknown_team, "Team 'team_nope' not found");
    assert_eq!(stored_grants(&db, "team_a").await, vec!["ChatAgent"]);
    let fetched = app.admin_ok(Method::GET, "/api/teams/team_a").await;
    assert_eq!(fetched["allowed_models"], json!(["gpt-4o-mini", "gpt-4o"]));
}
