//! What leaves no row: refused requests, changes that change nothing, and a change whose row
//! cannot be written (which is then not made); and rows once written cannot be altered.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use super::Trail;
use crate::admin_roles::admin_key;
use crate::helpers::app::{count, ok_json};
use crate::helpers::spawn_app;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn refused_requests_and_changes_that_change_nothing_leave_no_row(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_a", 5).await;
    let (_, viewer) = admin_key(&app, "viewer", "viewer").await;
    let mut trail = Trail::start(&app).await;

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
    trail.no_new_row().await;

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
    trail.no_new_row().await;

    // Suspending twice: one change, one row.
    for _ in 0..2 {
        ok_json(
            app.admin(Method::POST, "/api/teams/team_a/suspend")
                .send()
                .await,
        )
        .await;
    }
    trail.rows += 1;
    trail.no_new_row().await;
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
