//! `spawn_app` and typed helpers for the control-plane endpoints.

use std::net::SocketAddr;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use saasllm_api::Application;
use saasllm_api::startup::ApiSettings;
use saasllm_shared::config::RedisConfig;
use saasllm_shared::redis_conn::RedisHandle;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;

/// The admin key every test app is built with.
pub const ADMIN_KEY: &str = "test-admin-key";

/// A running API over the test's database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub db: PgPool,
    pub client: reqwest::Client,
    /// The app's budgets: `spend_written` waits for the spend it queued.
    pub budgets: std::sync::Arc<saasllm_api::budget::Budgets>,
}

/// Redis URL for tests (`REDIS_URL`, default the local server).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Starts the API on 127.0.0.1:0 with its own Redis namespace.
pub async fn spawn_app(db: PgPool) -> TestApp {
    spawn_app_with(db, &redis_url(), 64 * 1024).await
}

/// Starts the API with a given Redis URL and body limit.
pub async fn spawn_app_with(db: PgPool, redis_url: &str, max_body_bytes: usize) -> TestApp {
    spawn_app_configured(db, redis_url, |settings| {
        settings.max_body_bytes = max_body_bytes;
    })
    .await
    .0
}

/// Starts the API with settings adjusted by `configure`; also returns the address of its
/// keyless metrics listener when the settings ask for one.
pub async fn spawn_app_configured(
    db: PgPool,
    redis_url: &str,
    configure: impl FnOnce(&mut ApiSettings),
) -> (TestApp, Option<SocketAddr>) {
    let redis = RedisHandle::new(&RedisConfig::standalone(
        redis_url,
        &format!("test-{}", uuid::Uuid::new_v4()),
    ))
    .expect("valid redis url");
    let mut settings = ApiSettings {
        max_body_bytes: 64 * 1024,
        ..ApiSettings::new(SecretString::from(ADMIN_KEY.to_owned()))
    };
    configure(&mut settings);
    let app = Application::build_with(
        db.clone(),
        redis,
        settings,
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("API builds");
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let budgets = app.budgets();
    tokio::spawn(app.run_until(std::future::pending()));
    let app = TestApp {
        addr,
        db,
        client: reqwest::Client::new(),
        budgets,
    };
    (app, metrics_addr)
}

impl TestApp {
    /// Waits until the spend of every /v1 request this app answered is written (it is written
    /// in batches after the responses).
    pub async fn spend_written(&self) {
        self.budgets
            .written(std::time::Duration::from_secs(10))
            .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A request with no credentials.
    pub fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A request with the admin key (`X-Admin-Key`).
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.anonymous(method, path)
            .header("X-Admin-Key", ADMIN_KEY)
    }

    /// A request with a bearer key.
    pub fn with_key(&self, key: &str, method: Method, path: &str) -> RequestBuilder {
        self.anonymous(method, path).bearer_auth(key)
    }

    pub async fn create_org(&self, organization_id: &str) -> Value {
        let body =
            json!({"organization_id": organization_id, "name": format!("Org {organization_id}")});
        ok_json(
            self.admin(Method::POST, "/api/organizations/create")
                .json(&body)
                .send()
                .await,
        )
        .await
    }

    /// Creates a group whose models are tried in the given order.
    pub async fn create_group(&self, group_name: &str, models: &[&str]) -> Value {
        let models: Vec<Value> = models
            .iter()
            .enumerate()
            .map(|(i, m)| json!({"model_name": m, "priority": i}))
            .collect();
        let body = json!({"group_name": group_name, "models": models});
        ok_json(
            self.admin(Method::POST, "/api/model-groups/create")
                .json(&body)
                .send()
                .await,
        )
        .await
    }

    /// Creates a team (its organization must exist) and returns the response with `virtual_key`.
    pub async fn create_team(
        &self,
        organization_id: &str,
        team_id: &str,
        groups: &[&str],
        credits: i64,
    ) -> Value {
        let body = json!({
            "organization_id": organization_id,
            "team_id": team_id,
            "model_groups": groups,
            "credits_allocated": credits,
        });
        ok_json(
            self.admin(Method::POST, "/api/teams/create")
                .json(&body)
                .send()
                .await,
        )
        .await
    }

    /// An organization, a group `ChatAgent` and a team with `credits`; returns the team's key.
    pub async fn team_with_key(&self, team_id: &str, credits: i64) -> String {
        let org = format!("org_{team_id}");
        self.create_org(&org).await;
        let groups = if self.group_exists("ChatAgent").await {
            vec!["ChatAgent"]
        } else {
            self.create_group("ChatAgent", &["gpt-3.5-turbo", "gpt-4"])
                .await;
            vec!["ChatAgent"]
        };
        let team = self.create_team(&org, team_id, &groups, credits).await;
        team["virtual_key"]
            .as_str()
            .expect("virtual_key")
            .to_owned()
    }

    async fn group_exists(&self, name: &str) -> bool {
        self.admin(Method::GET, &format!("/api/model-groups/{name}"))
            .send()
            .await
            .expect("request")
            .status()
            == StatusCode::OK
    }
}

/// Asserts a 200 and returns the JSON body.
pub async fn ok_json(response: reqwest::Result<Response>) -> Value {
    let response = response.expect("request sent");
    let status = response.status();
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(status, StatusCode::OK, "unexpected status, body: {body}");
    body
}

/// Asserts the status and a `{"detail": "..."}` body; returns the detail.
pub async fn error_detail(response: reqwest::Result<Response>, expected: StatusCode) -> String {
    let response = response.expect("request sent");
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, expected, "unexpected status, body: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    body["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail in {body}"))
        .to_owned()
}

/// Asserts the ledger invariants of one team: `credits_used` equals the sum of deductions,
/// `credits_allocated` the sum of allocations, additions and refills, `credits_reserved` the open
/// holds, and `balance_after` follows from row to row.
pub async fn assert_ledger_consistent(db: &PgPool, team_id: &str) {
    let (allocated, used, reserved): (i64, i64, i64) = sqlx::query_as(
        "select credits_allocated, credits_used, credits_reserved from credit_balances where team_id = $1",
    )
    .bind(team_id)
    .fetch_one(db)
    .await
    .expect("balance");
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "select transaction_type, credits_amount, balance_after from credit_transactions where team_id = $1 order by seq",
    )
    .bind(team_id)
    .fetch_all(db)
    .await
    .expect("ledger");
    let mut remaining = 0;
    let (mut added, mut deducted) = (0, 0);
    for (kind, amount, balance_after) in &rows {
        match kind.as_str() {
            "allocation" | "addition" | "refill" => {
                added += amount;
                remaining += amount;
            }
            "deduction" => {
                deducted += amount;
                remaining -= amount;
            }
            other => panic!("unexpected ledger row kind {other}"),
        }
        assert_eq!(
            *balance_after, remaining,
            "balance_after chain broken in {rows:?}"
        );
    }
    assert_eq!(
        allocated, added,
        "credits_allocated != allocations in ledger"
    );
    assert_eq!(used, deducted, "credits_used != deductions in ledger");
    let holds: i64 =
        sqlx::query_scalar("select count(*) from jobs where team_id = $1 and credit_hold = 'held'")
            .bind(team_id)
            .fetch_one(db)
            .await
            .expect("holds");
    assert_eq!(reserved, holds, "credits_reserved != open holds");
}

/// Runs a `select count(*) ...` (or any single bigint) query.
pub async fn count(db: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Asserts that `text` appears in no row of any table of the public schema, neither as text
/// (every row rendered as JSON) nor as the hex of its bytes (a `bytea` holding it).
pub async fn assert_not_stored(db: &PgPool, text: &str) {
    let tables: Vec<String> = sqlx::query_scalar(
        "select tablename::text from pg_catalog.pg_tables where schemaname = 'public'",
    )
    .fetch_all(db)
    .await
    .expect("tables");
    assert!(
        tables.iter().any(|t| t == "virtual_keys"),
        "schema not found: {tables:?}"
    );
    for table in &tables {
        let hits: i64 = sqlx::query_scalar(&format!(
            "select count(*) from public.{table:?} t
             where strpos(to_jsonb(t)::text, $1) > 0
                or strpos(to_jsonb(t)::text, encode(convert_to($1, 'UTF8'), 'hex')) > 0"
        ))
        .bind(text)
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("scanning {table}: {e}"));
        assert_eq!(hits, 0, "'{text}' is stored in table {table}");
    }
}

/// A team with credit and access to the `ChatAgent` group, set up through the API; returns the
/// group's id. For tests of the data layer, which then write jobs and calls directly.
pub async fn team_with_chat_group(db: &PgPool, team_id: &str) -> uuid::Uuid {
    let app = spawn_app(db.clone()).await;
    app.team_with_key(team_id, 5).await;
    sqlx::query_scalar("select model_group_id from model_groups where group_name = 'ChatAgent'")
        .fetch_one(db)
        .await
        .expect("group")
}

/// An open job of `team_id` holding one credit, written directly.
pub async fn job_holding_credit(
    db: impl sqlx::PgExecutor<'_>,
    team_id: &str,
    job_type: &str,
) -> saasllm_shared::db::jobs::JobRow {
    saasllm_shared::db::jobs::insert_holding_credit(
        db,
        &saasllm_shared::db::jobs::NewJob {
            team_id,
            user_id: None,
            job_type,
            metadata: &json!({}),
            ttl_secs: 3_600,
            callback: None,
        },
    )
    .await
    .expect("job")
    .expect("credit held")
}
