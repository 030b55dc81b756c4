//! Bad requests: every one is a 4xx with a JSON `detail`, never a 500, and writes nothing.

mod fields;
mod routes;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::{count, error_detail};
use crate::helpers::{TestApp, spawn_app};

/// Rows of every table a create endpoint writes, for "nothing was written" checks.
async fn written_rows(db: &PgPool) -> [i64; 6] {
    [
        count(db, "select count(*) from organizations").await,
        count(db, "select count(*) from model_groups").await,
        count(db, "select count(*) from model_group_models").await,
        count(db, "select count(*) from teams").await,
        count(db, "select count(*) from team_model_groups").await,
        count(db, "select count(*) from credit_transactions").await,
    ]
}

/// An app with an organization `org_a`, a group `ChatAgent` and a team `team_a` with 10
/// credits, and the rows written so far.
pub(super) struct Arranged {
    pub(super) app: TestApp,
    db: PgPool,
    before: [i64; 6],
}

impl Arranged {
    pub(super) async fn new(db: &PgPool) -> Self {
        let app = spawn_app(db.clone()).await;
        arrange(&app).await;
        let before = written_rows(db).await;
        Self {
            app,
            db: db.clone(),
            before,
        }
    }

    /// Asserts that no create endpoint wrote a row since the arrangement.
    pub(super) async fn assert_nothing_written(&self) {
        assert_eq!(written_rows(&self.db).await, self.before);
    }

    /// Posts each `(path, body, field)` as the admin and asserts a 400 whose detail starts with
    /// `expected_start(field)`, and that none of them wrote a row.
    pub(super) async fn assert_refused_writing_nothing(
        &self,
        cases: &[(&str, Value, &str)],
        expected_start: impl Fn(&str) -> String,
    ) {
        for (path, body, field) in cases {
            let detail = self
                .app
                .admin_refused(Method::POST, path, Some(body), StatusCode::BAD_REQUEST)
                .await;
            assert!(
                detail.starts_with(&expected_start(field)),
                "{path} {body}: {detail}"
            );
        }
        self.assert_nothing_written().await;
    }
}

/// An organization `org_a`, a group `ChatAgent` and a team `team_a` with 10 credits.
pub(super) async fn arrange(app: &TestApp) {
    app.create_org("org_a").await;
    app.create_group("ChatAgent", &["gpt-4o"]).await;
    app.create_team("org_a", "team_a", &["ChatAgent"], 10).await;
}

/// (method, path) of every endpoint that takes a JSON body.
const BODY_ENDPOINTS: [(Method, &str); 7] = [
    (Method::POST, "/api/credits/teams/team_a/check"),
    (Method::POST, "/api/organizations/create"),
    (Method::POST, "/api/model-groups/create"),
    (Method::PUT, "/api/model-groups/ChatAgent/models"),
    (Method::POST, "/api/teams/create"),
    (Method::PUT, "/api/teams/team_a/model-groups"),
    (Method::POST, "/api/credits/teams/team_a/add"),
];

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn malformed_json_is_400_with_a_malformed_json_detail(db: PgPool) {
    let arranged = Arranged::new(&db).await;
    let app = &arranged.app;

    for (method, path) in &BODY_ENDPOINTS {
        // Truncated documents of the shape the endpoint expects, and ones broken from the first byte.
        let shaped = if path.ends_with("/model-groups") {
            ["[\"ChatAgent\", ", "[", "[,]"]
        } else {
            ["{\"", "{", "{,}"]
        };
        for body in shaped
            .into_iter()
            .chain(["not json", "}", "'single quotes'"])
        {
            let detail = error_detail(
                app.admin(method.clone(), path)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await,
                StatusCode::BAD_REQUEST,
            )
            .await;
            assert!(
                detail.starts_with("Malformed JSON: "),
                "{method} {path} {body:?}: {detail}"
            );
        }
    }
    arranged.assert_nothing_written().await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_empty_body_where_one_is_required_is_400(db: PgPool) {
    let arranged = Arranged::new(&db).await;
    let app = &arranged.app;

    // `check` alone treats an empty body as the default request.
    for (method, path) in &BODY_ENDPOINTS[1..] {
        let detail = app
            .admin_refused(method.clone(), path, None, StatusCode::BAD_REQUEST)
            .await;
        assert_eq!(
            detail, "Request body is empty; a JSON body is required",
            "{method} {path}"
        );
    }
    arranged.assert_nothing_written().await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_oversize_body_is_413_with_a_json_detail(db: PgPool) {
    let arranged = Arranged::new(&db).await;
    let app = &arranged.app;
    // Valid JSON of about 100 KiB, so that only its size is wrong.
    let big = json!({"organization_id": "org_big", "name": "Big", "metadata": {"blob": "x".repeat(100 * 1024)}});
    let big = serde_json::to_vec(&big).expect("json");

    for (method, path) in &BODY_ENDPOINTS {
        let detail = error_detail(
            app.admin(method.clone(), path)
                .header("Content-Type", "application/json")
                .body(big.clone())
                .send()
                .await,
            StatusCode::PAYLOAD_TOO_LARGE,
        )
        .await;
        assert_eq!(
            detail, "Request body is larger than the limit of 65536 bytes",
            "{method} {path}"
        );
    }
    arranged.assert_nothing_written().await;
}
