//! The audit log: every successful admin change appends exactly one row (who, what, which
//! object, before and after, the request id) in the change's own transaction; refused requests
//! and changes that change nothing append none; the database refuses to alter a row; and
//! `GET /api/audit` filters and pages newest first.

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::admin_roles::admin_key;
use crate::helpers::app::{TestApp, assert_not_stored, count, error_detail, ok_json};
use crate::helpers::spawn_app;

/// The newest row, as the API shows it, after checking the log grew by exactly one row.
async fn one_new_row(app: &TestApp, rows_before: &mut i64) -> Value {
    let rows = count(&app.db, "select count(*) from audit_log").await;
    assert_eq!(rows, *rows_before + 1, "exactly one row per change");
    *rows_before = rows;
    let page = ok_json(app.admin(Method::GET, "/api/audit?limit=1").send().await).await;
    page["entries"][0].clone()
}

async fn no_new_row(app: &TestApp, rows_before: i64) {
    assert_eq!(
        count(&app.db, "select count(*) from audit_log").await,
        rows_before
    );
}

/// Sends with a request id of our own and asserts a 2xx.
async fn change(request: RequestBuilder, request_id: &str) -> Value {
    let response = request
        .header("X-Request-Id", request_id)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    let body: Value = response.json().await.expect("JSON");
    assert!(status.is_success(), "{status} {body}");
    body
}

async fn audit_page(app: &TestApp, query: &str) -> Value {
    ok_json(
        app.admin(Method::GET, &format!("/api/audit{query}"))
            .send()
            .await,
    )
    .await
}

fn assert_row(row: &Value, action: &str, target: (&str, &str), request_id: &str) {
    assert_eq!(row["action"], action, "{row}");
    assert_eq!(row["target_type"], target.0, "{row}");
    assert_eq!(row["target_id"], target.1, "{row}");
    assert_eq!(row["request_id"], request_id, "{row}");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn every_admin_change_leaves_one_row_with_its_actor_target_and_snapshots(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let (owner_id, owner) = admin_key(&app, "ops-owner", "owner").await;
    let (billing_id, billing) = admin_key(&app, "ops-billing", "billing").await;
    let mut rows = count(&db, "select count(*) from audit_log").await;
    let as_owner = |method: Method, path: &str| app.with_key(&owner, method, path);

    change(
        as_owner(Method::POST, "/api/organizations/create")
            .json(&json!({"organization_id": "org_a", "name": "A"})),
        "req-org",
    )
    .await;
    let row = one_new_row(&app, &mut rows).await;
    assert_row(
        &row,
        "organization.create",
        ("organization", "org_a"),
        "req-org",
    );
    assert_eq!(
        row["actor"],
        json!({"id": owner_id, "name": "ops-owner", "role": "owner"})
    );
    assert_eq!(row["before"], Value::Null);
    assert_eq!(row["after"]["name"], "A");

    change(
        as_owner(Method::POST, "/api/model-groups/create")
            .json(&json!({"group_name": "Chat", "models": [{"model_name": "gpt-4o"}]})),
        "req-group",
    )
    .await;
    let row = one_new_row(&app, &mut rows).await;
    assert_row(
        &row,
        "model_group.create",
        ("model_group", "Chat"),
        "req-group",
    );
    assert_eq!(row["after"]["models"][0]["model_name"], "gpt-4o");

    change(
        as_owner(Method::PUT, "/api/model-groups/Chat/models")
            .json(&json!([{"model_name": "gpt-4o-mini"}, {"model_name": "gpt-4o"}])),
        "req-models",
    )
    .await;
    let row = one_new_row(&app, &mut rows).await;
    assert_row(
        &row,
        "model_group.replace_models",
        ("model_group", "Chat"),
        "req-models",
    );
    assert_eq!(row["before"]["models"].as_array().map(Vec::len), Some(1));
    assert_eq!(row["after"]["models"][0]["model_name"], "gpt-4o-mini");

    let team = change(
        as_owner(Method::POST, "/api/teams/create").json(&json!({
            "organization_id": "org_a", "team_id": "team_a", "model_groups": ["Chat"], "credits_allocated": 5
        })),
        "req-team",
    )
    .await;
    let team_key = team["virtual_key"].as_str().expect("key").to_owned();
    let row = one_new_row(&app, &mut rows).await;
    assert_row(&row, "team.create", ("team", "team_a"), "req-team");
    assert_eq!(row["after"]["credits_allocated"], 5);
    assert_eq!(row["after"]["model_groups"], json!(["Chat"]));
    assert_eq!(row["after"]["key_prefix"], team["key_prefix"]);

    change(
        as_owner(Method::PUT, "/api/teams/team_a/limits").json(&json!({"max_concurrent_calls": 4})),
        "req-limits",
    )
    .await;
    let row = one_new_row(&app, &mut rows).await;
    assert_row(&row, "team.set_limits", ("team", "team_a"), "req-limits");
    assert_eq!(row["before"]["max_concurrent_calls"], Value::Null);
    assert_eq!(row["after"]["max_concurrent_calls"], 4);

    change(
        as_owner(Method::PUT, "/api/teams/team_a/model-groups").json(&json!([])),
        "req-grants",
    )
    .await;
    let row = one_new_row(&app, &mut rows).await;
    assert_row(
        &row,
        "team.set_model_groups",
        ("team", "team_a"),
        "req-grants",
    );
    assert_eq!(row["before"], json!({"model_groups": ["Chat"]}));
    assert_eq!(row["after"], json!({"model_groups": []}));

    for (verb, before, after) in [
        ("suspend", "active", "suspended"),
        ("resume", "suspended", "active"),
    ] {
        let request_id = format!("req-{verb}");
        change(
            as_owner(Method::POST, &format!("/api/teams/team_a/{verb}")),
            &request_id,
        )
        .await;
        let row = one_new_row(&app, &mut rows).await;
        assert_row(
            &row,
            &format!("team.{verb}"),
            ("team", "team_a"),
            &request_id,
        );
        assert_eq!(row["before"], json!({"status": before}));
        assert_eq!(row["after"], json!({"status": after}));
    }

    let rotated = change(
        as_owner(Method::POST, "/api/teams/team_a/rotate-key"),
        "req-rotate",
    )
    .await;
    let row = one_new_row(&app, &mut rows).await;
    assert_row(&row, "team.rotate_key", ("team", "team_a"), "req-rotate");
    assert_eq!(row["before"]["key_prefix"], team["key_prefix"]);
    assert_eq!(row["after"]["key_prefix"], rotated["key_prefix"]);

    let added = change(
        app.with_key(&billing, Method::POST, "/api/credits/teams/team_a/add")
            .json(&json!({"credits_amount": 7})),
        "req-credits",
    )
    .await;
    let row = one_new_row(&app, &mut rows).await;
    assert_row(&row, "credits.add", ("team", "team_a"), "req-credits");
    assert_eq!(row["actor"]["id"], billing_id);
    assert_eq!(row["actor"]["role"], "billing");
    assert_eq!(
        row["before"],
        json!({"credits_allocated": 5, "credits_remaining": 5})
    );
    assert_eq!(row["after"]["credits_allocated"], 12);
    // The ledger row it names was written with it.
    let ledger_rows = count(
        &db,
        &format!(
            "select count(*) from credit_transactions where transaction_id = '{}'",
            added["transaction"]["transaction_id"]
                .as_str()
                .expect("transaction id")
        ),
    )
    .await;
    assert_eq!(ledger_rows, 1);
    assert_eq!(
        row["after"]["transaction_id"],
        added["transaction"]["transaction_id"]
    );

    change(
        as_owner(Method::POST, "/api/model-groups/create")
            .json(&json!({"group_name": "Old", "models": [{"model_name": "gpt-3.5-turbo"}]})),
        "req-old",
    )
    .await;
    one_new_row(&app, &mut rows).await;
    change(
        as_owner(Method::DELETE, "/api/model-groups/Old"),
        "req-delete",
    )
    .await;
    let row = one_new_row(&app, &mut rows).await;
    assert_row(
        &row,
        "model_group.delete",
        ("model_group", "Old"),
        "req-delete",
    );
    assert_eq!(row["before"]["models"][0]["model_name"], "gpt-3.5-turbo");
    assert_eq!(row["after"], Value::Null);

    let created = change(
        as_owner(Method::POST, "/api/admin-keys/create")
            .json(&json!({"name": "temp", "role": "viewer"})),
        "req-key",
    )
    .await;
    let temp_id = created["admin_key_id"].as_str().expect("id").to_owned();
    let row = one_new_row(&app, &mut rows).await;
    assert_row(&row, "admin_key.create", ("admin_key", &temp_id), "req-key");
    assert_eq!(row["after"]["role"], "viewer");
    change(
        as_owner(Method::POST, &format!("/api/admin-keys/{temp_id}/revoke")),
        "req-revoke",
    )
    .await;
    let row = one_new_row(&app, &mut rows).await;
    assert_row(
        &row,
        "admin_key.revoke",
        ("admin_key", &temp_id),
        "req-revoke",
    );
    assert_eq!(row["before"]["revoked_at"], Value::Null);
    assert!(row["after"]["revoked_at"].is_string(), "{row}");

    // No secret is kept in the log (or anywhere).
    for secret in [
        team_key.as_str(),
        rotated["virtual_key"].as_str().expect("key"),
        created["admin_key"].as_str().expect("key"),
        owner.as_str(),
    ] {
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

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn refused_requests_and_changes_that_change_nothing_leave_no_row(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_a", 5).await;
    let (_, viewer) = admin_key(&app, "viewer", "viewer").await;
    let rows = count(&db, "select count(*) from audit_log").await;

    // Refused: unknown objects, bad input, a duplicate, a role too low.
    let refused = [
        (
            app.admin(Method::POST, "/api/teams/nope/suspend"),
            StatusCode::NOT_FOUND,
        ),
        (
            app.admin(Method::POST, "/api/credits/teams/nope/add")
                .json(&json!({"credits_amount": 1})),
            StatusCode::NOT_FOUND,
        ),
        (
            app.admin(Method::POST, "/api/credits/teams/team_a/add")
                .json(&json!({"credits_amount": 0})),
            StatusCode::BAD_REQUEST,
        ),
        (
            app.admin(Method::POST, "/api/organizations/create")
                .json(&json!({"organization_id": "org_team_a", "name": "again"})),
            StatusCode::CONFLICT,
        ),
        (
            app.admin(Method::PUT, "/api/teams/team_a/model-groups")
                .json(&json!(["Missing"])),
            StatusCode::NOT_FOUND,
        ),
        (
            app.with_key(&viewer, Method::POST, "/api/teams/team_a/suspend"),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (request, status) in refused {
        let response = request.send().await.expect("request sent");
        assert_eq!(response.status(), status);
    }
    no_new_row(&app, rows).await;

    // No-ops: the state asked for is the state already there.
    let no_ops = [
        app.admin(Method::POST, "/api/teams/team_a/resume"),
        app.admin(Method::PUT, "/api/teams/team_a/limits")
            .json(&json!({})),
        app.admin(Method::PUT, "/api/teams/team_a/model-groups")
            .json(&json!(["ChatAgent"])),
        app.admin(Method::PUT, "/api/model-groups/ChatAgent/models")
            .json(&json!([{"model_name": "gpt-3.5-turbo"}, {"model_name": "gpt-4"}])),
    ];
    for request in no_ops {
        ok_json(request.send().await).await;
    }
    no_new_row(&app, rows).await;

    // Suspending twice: one change, one row.
    for _ in 0..2 {
        ok_json(
            app.admin(Method::POST, "/api/teams/team_a/suspend")
                .send()
                .await,
        )
        .await;
    }
    no_new_row(&app, rows + 1).await;
    assert_eq!(
        count(&db, "select count(*) from teams where status = 'suspended'").await,
        1
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_change_whose_row_cannot_be_written_is_not_made(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_a", 5).await;
    // The row is written in the change's transaction: if it fails, the change rolls back.
    sqlx::raw_sql(
        "create function refuse_audit() returns trigger language plpgsql as
             $$ begin raise exception 'audit log unavailable'; end $$;
         create trigger refuse_audit before insert on audit_log
             for each row execute function refuse_audit();",
    )
    .execute(&db)
    .await
    .expect("trigger");
    let attempts = [
        app.admin(Method::POST, "/api/teams/team_a/suspend"),
        app.admin(Method::POST, "/api/credits/teams/team_a/add")
            .json(&json!({"credits_amount": 3})),
        app.admin(Method::POST, "/api/organizations/create")
            .json(&json!({"organization_id": "org_b", "name": "B"})),
        app.admin(Method::POST, "/api/teams/team_a/rotate-key"),
    ];
    for request in attempts {
        let response = request.send().await.expect("request sent");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(
        count(&db, "select count(*) from teams where status = 'active'").await,
        1
    );
    assert_eq!(
        count(
            &db,
            "select credits_allocated from credit_balances where team_id = 'team_a'"
        )
        .await,
        5
    );
    assert_eq!(
        count(
            &db,
            "select count(*) from credit_transactions where team_id = 'team_a'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db,
            "select count(*) from organizations where organization_id = 'org_b'"
        )
        .await,
        0
    );
    assert_eq!(count(&db, "select count(*) from virtual_keys").await, 1);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_database_refuses_to_change_or_remove_a_row(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.create_org("org_a").await;
    for statement in [
        "update audit_log set action = 'organization.forged'",
        "delete from audit_log",
        "truncate audit_log",
    ] {
        let error = sqlx::query(statement)
            .execute(&db)
            .await
            .expect_err("the log is append-only");
        assert!(
            error.to_string().contains("append-only"),
            "{statement}: {error}"
        );
    }
    assert_eq!(
        count(
            &db,
            "select count(*) from audit_log where action = 'organization.create'"
        )
        .await,
        1
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_log_is_filtered_and_paged_newest_first(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let (billing_id, billing) = admin_key(&app, "billing", "billing").await;
    let started = chrono::Utc::now();
    app.team_with_key("team_a", 1).await;
    app.team_with_key("team_b", 1).await;
    for team in ["team_a", "team_b", "team_a"] {
        ok_json(
            app.with_key(
                &billing,
                Method::POST,
                &format!("/api/credits/teams/{team}/add"),
            )
            .json(&json!({"credits_amount": 1}))
            .send()
            .await,
        )
        .await;
    }

    let all = audit_page(&app, "?limit=500").await;
    let ids: Vec<i64> = all["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["audit_id"].as_i64().expect("id"))
        .collect();
    // 1 key, 2 orgs, 1 group, 2 teams, 3 additions.
    assert_eq!(ids.len(), 9);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert_eq!(all["next_cursor"], Value::Null);

    let by_actor = audit_page(&app, &format!("?actor={billing_id}")).await;
    assert_eq!(by_actor["entries"].as_array().map(Vec::len), Some(3));
    let by_action = audit_page(&app, "?action=team.create").await;
    assert_eq!(by_action["entries"].as_array().map(Vec::len), Some(2));
    let by_target = audit_page(&app, "?target_type=team&target_id=team_a").await;
    assert_eq!(by_target["entries"].as_array().map(Vec::len), Some(3));
    let since = started.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    // Since the start: the bootstrap key's 2 organizations, 1 group and 2 teams.
    let in_window = audit_page(
        &app,
        &format!("?actor=bootstrap&since={}", since.replace('+', "%2B")),
    )
    .await;
    assert_eq!(in_window["entries"].as_array().map(Vec::len), Some(5));
    let before_start = audit_page(&app, &format!("?until={}", since.replace('+', "%2B"))).await;
    assert_eq!(before_start["entries"].as_array().map(Vec::len), Some(1));

    // Pages of 2 walk the whole log once, in order.
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=2&cursor={c}"),
            None => "?limit=2".to_owned(),
        };
        let page = audit_page(&app, &query).await;
        let page_entries = page["entries"].as_array().expect("entries");
        assert!(page_entries.len() <= 2);
        walked.extend(
            page_entries
                .iter()
                .map(|e| e["audit_id"].as_i64().expect("id")),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(walked, ids);

    for bad in [
        "?limit=0",
        "?limit=501",
        "?limit=ten",
        "?cursor=abc",
        "?since=yesterday",
        "?until=2026-13-01T00:00:00Z",
        "?since=2026-12-05T00:00:00Z&until=2026-12-04T00:00:00Z",
        "?actor=alice",
        "?action=Team%20Create",
        "?target_id=a%20b",
        "?team_id=team_a",
        "?action=%00",
    ] {
        let detail = error_detail(
            app.admin(Method::GET, &format!("/api/audit{bad}"))
                .send()
                .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(!detail.is_empty(), "{bad}");
    }
}

mod settings;
