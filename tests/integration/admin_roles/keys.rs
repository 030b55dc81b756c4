//! An admin key's lifecycle: shown once at creation and only its hash kept, named uniquely among
//! keys in force, refused by every process from its revocation on; the bootstrap key is an owner
//! named `bootstrap`; team keys stay off the admin-only routes.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::admin_key;
use crate::helpers::app::{assert_not_stored, count, error_detail, ok_json};
use crate::helpers::spawn_app;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_revoked_key_is_refused_at_once_by_every_process(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let peer = spawn_app(db.clone()).await;
    let (id, key) = admin_key(&app, "ops", "viewer").await;
    for process in [&app, &peer] {
        let response = process
            .with_key(&key, Method::GET, "/api/model-groups")
            .send()
            .await;
        ok_json(response).await;
    }

    let revoked = ok_json(
        app.admin(Method::POST, &format!("/api/admin-keys/{id}/revoke"))
            .send()
            .await,
    )
    .await;
    assert!(revoked["revoked_at"].is_string(), "{revoked}");

    // Admin keys are not cached: the other process refuses it from the commit on.
    for process in [&app, &peer] {
        let detail = error_detail(
            process
                .with_key(&key, Method::GET, "/api/model-groups")
                .send()
                .await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert_eq!(detail, "Invalid API key");
    }
    // Revoking it again changes nothing.
    let again = ok_json(
        app.admin(Method::POST, &format!("/api/admin-keys/{id}/revoke"))
            .send()
            .await,
    )
    .await;
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);
    assert_eq!(
        count(
            &db,
            "select count(*) from audit_log where action = 'admin_key.revoke'"
        )
        .await,
        1
    );
    let unknown = "0193c0de-0000-7000-8000-00000000abcd";
    error_detail(
        app.admin(Method::POST, &format!("/api/admin-keys/{unknown}/revoke"))
            .send()
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    error_detail(
        app.admin(Method::POST, "/api/admin-keys/not-a-uuid/revoke")
            .send()
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_bootstrap_key_is_an_owner_named_bootstrap(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let (id, key) = admin_key(&app, "alice", "owner").await;
    // An owner key manages keys too, and is named as their creator.
    let response = app
        .with_key(&key, Method::POST, "/api/admin-keys/create")
        .json(&json!({"name": "bob", "role": "viewer"}))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::CREATED);

    let listed = ok_json(app.admin(Method::GET, "/api/admin-keys").send().await).await;
    let keys = listed["admin_keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["name"], "alice");
    assert_eq!(keys[0]["created_by"], "bootstrap");
    assert_eq!(keys[1]["name"], "bob");
    assert_eq!(keys[1]["created_by"], id);
    let actors: Vec<(String, String, String)> =
        sqlx::query_as("select actor_id, actor_name, actor_role from audit_log order by audit_id")
            .fetch_all(&db)
            .await
            .expect("audit rows");
    assert_eq!(
        actors,
        vec![
            ("bootstrap".into(), "bootstrap".into(), "owner".into()),
            (id.clone(), "alice".into(), "owner".into()),
        ]
    );
    for reserved in ["bootstrap", "BootStrap"] {
        let detail = error_detail(
            app.admin(Method::POST, "/api/admin-keys/create")
                .json(&json!({"name": reserved, "role": "owner"}))
                .send()
                .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(detail.contains("reserved"), "{detail}");
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn team_keys_stay_forbidden_on_admin_only_routes(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let team_key = app.team_with_key("team_a", 5).await;
    for (method, path) in [
        (Method::GET, "/api/admin-keys"),
        (Method::POST, "/api/admin-keys/create"),
        (Method::GET, "/api/audit"),
        (Method::POST, "/api/organizations/create"),
    ] {
        let detail = error_detail(
            app.with_key(&team_key, method, path)
                .json(&json!({"name": "x", "role": "owner"}))
                .send()
                .await,
            StatusCode::FORBIDDEN,
        )
        .await;
        assert_eq!(detail, "This endpoint requires the admin key", "{path}");
    }
    // Roles do not touch team keys: the team still reads its own objects.
    ok_json(
        app.with_key(&team_key, Method::GET, "/api/teams/team_a")
            .send()
            .await,
    )
    .await;
    assert_eq!(count(&db, "select count(*) from admin_keys").await, 0);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_new_key_is_shown_once_and_never_listed_stored_or_replayed(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let create = || {
        app.admin(Method::POST, "/api/admin-keys/create")
            .header("Idempotency-Key", "create-ci-key")
            .json(&json!({"name": "ci", "role": "billing"}))
    };
    let first = create().send().await.expect("request sent");
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("JSON");
    let key = first["admin_key"].as_str().expect("admin_key").to_owned();
    assert!(key.starts_with("sk-admin-") && key.len() == 9 + 64, "{key}");
    let prefix = first["key_prefix"].as_str().expect("prefix");
    assert!(key.starts_with(prefix) && prefix.len() < 20, "{prefix}");
    assert_eq!(first["role"], "billing");

    let replay = create().send().await.expect("request sent");
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(
        replay
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let replay: Value = replay.json().await.expect("JSON");
    assert!(replay.get("admin_key").is_none(), "{replay}");
    assert_eq!(replay["admin_key_id"], first["admin_key_id"]);

    let listing = app
        .admin(Method::GET, "/api/admin-keys")
        .send()
        .await
        .expect("request sent")
        .text()
        .await
        .expect("body");
    assert!(
        !listing.contains(&key) && !listing.contains("\"admin_key\""),
        "{listing}"
    );
    // Only its hash is kept: not in the key table, the idempotency table or the audit log.
    assert_not_stored(&db, &key).await;
    let hash: Vec<u8> = sqlx::query_scalar("select key_hash from admin_keys")
        .fetch_one(&db)
        .await
        .expect("one key");
    assert_eq!(hash, saasllm_shared::domain::keys::hash(&key));
    // The key works, as a bearer token or in X-Admin-Key.
    ok_json(app.with_key(&key, Method::GET, "/api/audit").send().await).await;
    ok_json(
        app.anonymous(Method::GET, "/api/audit")
            .header("X-Admin-Key", &key)
            .send()
            .await,
    )
    .await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn names_are_checked_and_unique_among_keys_in_force(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let (id, _) = admin_key(&app, "Deploy.bot-1", "viewer").await;
    let create = |body: Value| {
        app.admin(Method::POST, "/api/admin-keys/create")
            .json(&body)
            .send()
    };
    let detail = error_detail(
        create(json!({"name": "deploy.BOT-1", "role": "owner"})).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(detail.contains("in force"), "{detail}");
    for bad in [
        json!({"name": "", "role": "viewer"}),
        json!({"name": "has space", "role": "viewer"}),
        json!({"name": "x".repeat(65), "role": "viewer"}),
        json!({"name": "ok", "role": "superuser"}),
        json!({"name": "ok"}),
        json!({"name": "ok", "role": "viewer", "extra": 1}),
        json!(["ok", "viewer"]),
        json!({"name": "nul\u{0}", "role": "viewer"}),
    ] {
        error_detail(create(bad.clone()).await, StatusCode::BAD_REQUEST).await;
    }
    ok_json(
        app.admin(Method::POST, &format!("/api/admin-keys/{id}/revoke"))
            .send()
            .await,
    )
    .await;
    // A revoked key's name is free again.
    admin_key(&app, "deploy.bot-1", "owner").await;
    assert_eq!(count(&db, "select count(*) from admin_keys").await, 2);
}
