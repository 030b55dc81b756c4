//! A team's key: refused while the team is suspended, replaced by rotation, and stored only as
//! its SHA-256 hash.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::app::{assert_not_stored, count};
use crate::helpers::spawn_app;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_suspended_teams_key_is_403_on_every_call_until_the_team_is_resumed(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_a", 10).await;
    let team_calls = [
        (Method::GET, "/api/teams/team_a"),
        (Method::GET, "/api/credits/teams/team_a/balance"),
        (Method::GET, "/api/credits/teams/team_a/transactions"),
        (Method::POST, "/api/credits/teams/team_a/check"),
        (Method::GET, "/api/model-groups"),
        (Method::GET, "/api/model-groups/ChatAgent"),
        (Method::GET, "/api/model-groups/ChatAgent/resolve"),
    ];

    let suspended = app
        .admin_ok(Method::POST, "/api/teams/team_a/suspend")
        .await;
    assert_eq!(suspended["team_id"], "team_a");
    assert_eq!(suspended["status"], "suspended");
    let status: String = sqlx::query_scalar("select status from teams where team_id = 'team_a'")
        .fetch_one(&db)
        .await
        .expect("status");
    assert_eq!(status, "suspended");
    for (method, path) in &team_calls {
        let detail = app
            .key_refused(&key, method.clone(), path, None, StatusCode::FORBIDDEN)
            .await;
        assert_eq!(detail, "Team 'team_a' is suspended", "{method} {path}");
    }
    let by_admin = app.admin_ok(Method::GET, "/api/teams/team_a").await;
    assert_eq!(by_admin["status"], "suspended");

    let resumed = app.admin_ok(Method::POST, "/api/teams/team_a/resume").await;
    assert_eq!(resumed["status"], "active");
    let status: String = sqlx::query_scalar("select status from teams where team_id = 'team_a'")
        .fetch_one(&db)
        .await
        .expect("status");
    assert_eq!(status, "active");
    for (method, path) in &team_calls {
        app.key_ok(&key, method.clone(), path).await;
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn suspend_resume_and_rotate_of_an_unknown_team_are_404(db: PgPool) {
    let app = spawn_app(db.clone()).await;

    for action in ["suspend", "resume", "rotate-key"] {
        let detail = app
            .admin_refused(
                Method::POST,
                &format!("/api/teams/team_nope/{action}"),
                None,
                StatusCode::NOT_FOUND,
            )
            .await;
        assert_eq!(detail, "Team 'team_nope' not found", "{action}");
    }
    assert_eq!(count(&db, "select count(*) from virtual_keys").await, 0);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn rotating_the_key_revokes_the_old_one_and_the_new_one_works(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let old_key = app.team_with_key("team_a", 10).await;

    let rotated = app
        .admin_ok(Method::POST, "/api/teams/team_a/rotate-key")
        .await;

    let new_key = rotated["virtual_key"].as_str().expect("virtual_key");
    assert!(new_key.starts_with("sk-") && new_key != old_key);
    assert!(new_key.starts_with(rotated["key_prefix"].as_str().expect("key_prefix")));
    let detail = app
        .key_refused(
            &old_key,
            Method::GET,
            "/api/teams/team_a",
            None,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    assert_eq!(detail, "Invalid API key");
    let team = app.key_ok(new_key, Method::GET, "/api/teams/team_a").await;
    assert_eq!(team["key_prefix"], rotated["key_prefix"]);
    let keys: Vec<(Vec<u8>, bool)> = sqlx::query_as(
        "select key_hash, revoked_at is not null from virtual_keys where team_id = 'team_a' order by created_at, key_id",
    )
    .fetch_all(&db)
    .await
    .expect("keys");
    assert_eq!(keys.len(), 2);
    assert!(keys[0].1, "the old key is revoked");
    assert!(!keys[1].1, "the new key is active");
    let new_is_active: bool = sqlx::query_scalar(
        "select exists (select 1 from virtual_keys where key_hash = sha256(convert_to($1, 'UTF8')) and revoked_at is null)",
    )
    .bind(new_key)
    .fetch_one(&db)
    .await
    .expect("lookup");
    assert!(new_is_active);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn virtual_keys_are_stored_only_as_sha256_hashes(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let first_key = app.team_with_key("team_a", 10).await;
    let rotated = app
        .admin_ok(Method::POST, "/api/teams/team_a/rotate-key")
        .await;
    let second_key = rotated["virtual_key"]
        .as_str()
        .expect("virtual_key")
        .to_owned();
    // Exercise the key on a few endpoints too, in case a request path stores it.
    app.key_ok(&second_key, Method::GET, "/api/teams/team_a")
        .await;
    app.key_ok(&second_key, Method::POST, "/api/credits/teams/team_a/check")
        .await;

    for key in [&first_key, &second_key] {
        let (hash_len, matches): (i32, bool) = sqlx::query_as(
            "select length(key_hash), key_hash = sha256(convert_to($1, 'UTF8')) from virtual_keys
             where key_hash = sha256(convert_to($1, 'UTF8'))",
        )
        .bind(key)
        .fetch_one(&db)
        .await
        .expect("a row whose hash is the key's SHA-256");
        assert_eq!((hash_len, matches), (32, true));
        assert_not_stored(&db, key).await;
        // The part after the display prefix is secret too.
        assert_not_stored(&db, &key[10..]).await;
    }
    let prefixes: Vec<String> =
        sqlx::query_scalar("select key_prefix from virtual_keys order by created_at, key_id")
            .fetch_all(&db)
            .await
            .expect("prefixes");
    assert!(
        prefixes
            .iter()
            .all(|p| p.len() == 10 && p.starts_with("sk-")),
        "{prefixes:?}"
    );
    let body: Value = app.admin_ok(Method::GET, "/api/teams/team_a").await;
    assert!(!body.to_string().contains(&second_key));
}
