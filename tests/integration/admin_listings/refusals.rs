//! What the lists refuse: a team key, no key, and bad input (unknown status, bad dates, limits
//! out of range, garbled, edited, made-up or foreign cursors, NUL, 10 KB values), each a 400
//! `{"detail"}` that leaves the database as it was; and how the OpenAPI document describes them.

use reqwest::{Method, StatusCode};
use sqlx::PgPool;
use uuid::Uuid;

use super::{list, seed, snapshot};
use crate::helpers::app::{error_detail, ok_json};
use crate::helpers::{TestApp, spawn_app};

/// A path, its query parameters, and a part of the expected detail.
type Refusal<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn lists_are_for_the_admin_only(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let (_, team_key) = seed(&app).await;

    for path in ["/api/organizations", "/api/teams", "/api/jobs"] {
        let forbidden = error_detail(
            app.with_key(&team_key, Method::GET, path).send().await,
            StatusCode::FORBIDDEN,
        )
        .await;
        assert!(forbidden.contains("admin"), "{path}: {forbidden}");
        error_detail(
            app.anonymous(Method::GET, path).send().await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
}

/// Sends each refused query as the admin: each is a 400 whose detail names the problem without
/// echoing the input, and none changes the database.
async fn assert_refused(app: &TestApp, cases: Vec<Refusal<'_>>) {
    let before = snapshot(&app.db).await;
    for (path, query, expected) in cases {
        let detail = error_detail(
            app.admin(Method::GET, path).query(&query).send().await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(detail.contains(expected), "{path} {query:?}: {detail}");
        assert!(detail.len() < 1_000, "{path}: the detail echoes the input");
    }
    assert_eq!(snapshot(&app.db).await, before);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn unknown_statuses_bad_dates_and_limits_are_400s_that_change_nothing(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    seed(&app).await;
    let cases: Vec<Refusal> = vec![
        ("/api/jobs", vec![("status", "done")], "unknown variant"),
        ("/api/teams", vec![("status", "paused")], "unknown variant"),
        (
            "/api/jobs",
            vec![("created_after", "yesterday")],
            "created_after must be an RFC 3339",
        ),
        (
            "/api/jobs",
            vec![("created_before", "2026-12-01")],
            "created_before must be an RFC 3339",
        ),
        (
            "/api/jobs",
            vec![
                ("created_after", "2026-12-02T00:00:00Z"),
                ("created_before", "2026-12-01T00:00:00Z"),
            ],
            "created_after must be earlier",
        ),
        (
            "/api/jobs",
            vec![("limit", "0")],
            "limit must be between 1 and 500",
        ),
        (
            "/api/teams",
            vec![("limit", "501")],
            "limit must be between 1 and 500",
        ),
        (
            "/api/organizations",
            vec![("limit", "99999999999999999999")],
            "Invalid query",
        ),
        ("/api/jobs", vec![("offset", "10")], "unknown field"),
    ];
    assert_refused(&app, cases).await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn garbled_edited_made_up_and_foreign_cursors_are_400s_that_change_nothing(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    seed(&app).await;
    let huge = "x".repeat(10 * 1024);
    let page = list(&app, "/api/jobs", &[("team_id", "team_a1"), ("limit", "2")]).await;
    let cursor = page["next_cursor"].as_str().expect("cursor").to_owned();
    let teams_cursor = list(&app, "/api/teams", &[("limit", "1")]).await["next_cursor"]
        .as_str()
        .expect("teams cursor")
        .to_owned();
    // The cursor's bytes with its last character changed, and a cursor made up from its layout.
    let mut edited = cursor.clone();
    let last = if cursor.ends_with('0') { "1" } else { "0" };
    edited.replace_range(cursor.len() - 1.., last);
    let made_up: String = format!("{}2026-12-01T12:00:00Z_{}", "0".repeat(12), Uuid::new_v4())
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();

    let cases: Vec<Refusal> = vec![
        (
            "/api/jobs",
            vec![("cursor", "not-a-cursor")],
            "Invalid cursor",
        ),
        (
            "/api/jobs",
            vec![("team_id", "team_a1"), ("cursor", &edited)],
            "Invalid cursor",
        ),
        (
            "/api/jobs",
            vec![("team_id", "team_a1"), ("cursor", &made_up)],
            "Invalid cursor",
        ),
        // A cursor is bound to its filters and its list.
        (
            "/api/jobs",
            vec![("team_id", "team_a2"), ("cursor", &cursor)],
            "Invalid cursor",
        ),
        ("/api/jobs", vec![("cursor", &cursor)], "Invalid cursor"),
        (
            "/api/jobs",
            vec![("cursor", &teams_cursor)],
            "Invalid cursor",
        ),
        ("/api/teams", vec![("cursor", &huge)], "Invalid cursor"),
    ];
    assert_refused(&app, cases).await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn nul_oversized_and_empty_filters_are_400s_that_change_nothing(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    seed(&app).await;
    let huge = "x".repeat(10 * 1024);
    let cases: Vec<Refusal> = vec![
        (
            "/api/jobs",
            vec![("team_id", "team\0a1")],
            "must not contain NUL",
        ),
        (
            "/api/organizations",
            vec![("name_prefix", "a\0")],
            "must not contain NUL",
        ),
        (
            "/api/organizations",
            vec![("name_prefix", &huge)],
            "name_prefix must be at most 200",
        ),
        (
            "/api/teams",
            vec![("name_prefix", &huge)],
            "name_prefix must be at most 200",
        ),
        (
            "/api/teams",
            vec![("name_prefix", "")],
            "name_prefix must not be empty",
        ),
        (
            "/api/teams",
            vec![("organization_id", &huge)],
            "organization_id must be at most 200",
        ),
        (
            "/api/jobs",
            vec![("team_id", &huge)],
            "team_id must be at most 200",
        ),
        (
            "/api/jobs",
            vec![("job_type", &huge)],
            "job_type must be at most 200",
        ),
        (
            "/api/jobs",
            vec![("job_type", " ")],
            "job_type must not be empty",
        ),
    ];
    assert_refused(&app, cases).await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_document_describes_the_lists_and_their_filters(db: PgPool) {
    let app = spawn_app(db).await;
    let document = ok_json(app.anonymous(Method::GET, "/openapi.json").send().await).await;

    for (path, id, page, filters) in [
        (
            "/api/organizations",
            "organizations_list",
            "OrganizationsPage",
            vec!["name_prefix"],
        ),
        (
            "/api/teams",
            "teams_list",
            "TeamsPage",
            vec!["organization_id", "status", "name_prefix"],
        ),
        (
            "/api/jobs",
            "jobs_list",
            "JobsPage",
            vec![
                "team_id",
                "organization_id",
                "status",
                "job_type",
                "created_after",
                "created_before",
            ],
        ),
    ] {
        let operation = &document["paths"][path]["get"];
        assert_eq!(operation["operationId"], id);
        assert_eq!(
            operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/{page}")
        );
        let params = operation["parameters"].as_array().expect("parameters");
        let param = |name: &str| {
            params
                .iter()
                .find(|p| p["name"] == name && p["in"] == "query")
                .unwrap_or_else(|| panic!("{path}: no parameter {name}"))
        };
        for name in filters.iter().chain(&["cursor"]) {
            param(name);
        }
        assert_eq!(param("limit")["schema"]["maximum"], 500, "{path}");
        assert!(document["components"]["schemas"][page]["properties"]["next_cursor"].is_object());
    }
    let statuses = |path: &str| {
        document["paths"][path]["get"]["parameters"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "status"))
            .map(|p| p["schema"].to_string())
            .unwrap_or_default()
    };
    assert!(
        statuses("/api/jobs").contains("in_progress"),
        "{}",
        statuses("/api/jobs")
    );
    assert!(
        statuses("/api/teams").contains("suspended"),
        "{}",
        statuses("/api/teams")
    );
}
