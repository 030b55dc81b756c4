//! Admin lists across tenants: `GET /api/organizations`, `/api/teams` and `/api/jobs`, each
//! filter, keyset pages that visit every row once in order, admin-only access, and 400s for bad
//! input that leave the database as it was. This file holds the shared seed and the tenant
//! lists; `jobs` the jobs list, `refusals` bad input and the OpenAPI description.

mod jobs;
mod refusals;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use reqwest::Method;
use saasllm_shared::domain::status::JobStatus;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::app::ok_json;
use crate::helpers::{TestApp, spawn_app};

/// A GET as the admin with the given query.
pub(super) async fn list(app: &TestApp, path: &str, query: &[(&str, &str)]) -> Value {
    ok_json(app.admin(Method::GET, path).query(query).send().await).await
}

/// The `field` of every item of `key` over all pages of `limit` rows, following `next_cursor`;
/// also checks each page is full but the last, which alone has no cursor.
pub(super) async fn all_pages(
    app: &TestApp,
    path: &str,
    key: &str,
    field: &str,
    query: &[(&str, &str)],
    limit: usize,
) -> Vec<String> {
    let limit_text = limit.to_string();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    // More pages than rows would mean a cursor that does not move.
    for _ in 0..200 {
        let mut params = query.to_vec();
        params.push(("limit", &limit_text));
        if let Some(cursor) = &cursor {
            params.push(("cursor", cursor));
        }
        let page = list(app, path, &params).await;
        let items = page[key].as_array().expect("items");
        seen.extend(
            items
                .iter()
                .map(|i| i[field].as_str().expect("id").to_owned()),
        );
        assert_eq!(page["limit"], limit);
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(items.len(), limit, "only the last page may be short");
                cursor = Some(next.to_owned());
            }
            None => return seen,
        }
    }
    panic!("paging did not end; seen {seen:?}");
}

/// A digest of every row of the tenant and job tables, to show a request changed nothing.
pub(super) async fn snapshot(db: &PgPool) -> String {
    sqlx::query_scalar(
        "select md5(string_agg(r, '|' order by r)) from (
             select to_jsonb(t)::text as r from organizations t union all
             select to_jsonb(t)::text from teams t union all
             select to_jsonb(t)::text from credit_balances t union all
             select to_jsonb(t)::text from credit_transactions t union all
             select to_jsonb(t)::text from virtual_keys t union all
             select to_jsonb(t)::text from jobs t) rows",
    )
    .fetch_one(db)
    .await
    .expect("snapshot")
}

/// A job as seeded: (id, team, organization, status, type, created_at).
#[derive(Clone, Debug)]
pub(super) struct Seeded {
    pub(super) id: Uuid,
    pub(super) team: &'static str,
    pub(super) org: &'static str,
    pub(super) status: JobStatus,
    pub(super) job_type: &'static str,
    pub(super) at: DateTime<Utc>,
}

/// Organizations `org_a` (teams `team_a1`, `team_a2`) and `org_b` (`team_b1`), and 41 jobs
/// written directly: three share each `created_at`, so pages split ties by job id. Returns the
/// jobs newest first, as the list orders them, and `team_a1`'s key.
pub(super) async fn seed(app: &TestApp) -> (Vec<Seeded>, String) {
    app.create_org("org_a").await;
    app.create_org("org_b").await;
    let key = app.create_team("org_a", "team_a1", &[], 10).await["virtual_key"]
        .as_str()
        .expect("key")
        .to_owned();
    app.create_team("org_a", "team_a2", &[], 20).await;
    app.create_team("org_b", "team_b1", &[], 30).await;
    let teams = [
        ("team_a1", "org_a"),
        ("team_a2", "org_a"),
        ("team_b1", "org_b"),
    ];
    let base = DateTime::parse_from_rfc3339("2026-12-01T12:00:00.123456Z")
        .expect("base")
        .with_timezone(&Utc);
    let mut jobs = Vec::new();
    for i in 0..41usize {
        let (team, org) = teams[i % 3];
        let job = Seeded {
            id: Uuid::new_v4(),
            team,
            org,
            status: JobStatus::ALL[i % JobStatus::ALL.len()],
            job_type: if i % 4 == 0 { "resume" } else { "summary" },
            at: base - Duration::minutes((i / 3) as i64),
        };
        sqlx::query(
            "insert into jobs (job_id, team_id, job_type, status, credit_hold, created_at, expires_at)
             values ($1, $2, $3, $4, 'released', $5, $5 + interval '1 day')",
        )
        .bind(job.id)
        .bind(job.team)
        .bind(job.job_type)
        .bind(job.status)
        .bind(job.at)
        .execute(&app.db)
        .await
        .expect("insert job");
        jobs.push(job);
    }
    jobs.sort_by_key(|j| std::cmp::Reverse((j.at, j.id)));
    (jobs, key)
}

pub(super) fn ids(jobs: &[Seeded], keep: impl Fn(&Seeded) -> bool) -> Vec<String> {
    jobs.iter()
        .filter(|j| keep(j))
        .map(|j| j.id.to_string())
        .collect()
}

pub(super) fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}
#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn organizations_are_listed_by_id_and_matched_by_a_literal_prefix(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    for (id, name) in [
        ("acme", "Acme"),
        ("acme_eu", "Acme Europe"),
        ("acmex", "Acmex"),
        ("deals", "50%_off Deals"),
        ("other", "50xxoff Other"),
    ] {
        ok_json(
            app.admin(Method::POST, "/api/organizations/create")
                .json(&json!({"organization_id": id, "name": name}))
                .send()
                .await,
        )
        .await;
    }
    app.create_team("acme", "team_acme", &[], 0).await;
    let before = snapshot(&db).await;

    let all = list(&app, "/api/organizations", &[]).await;
    let acme_prefix = list(&app, "/api/organizations", &[("name_prefix", "acme_")]).await;
    let percent = list(&app, "/api/organizations", &[("name_prefix", "50%_")]).await;
    let by_name = list(&app, "/api/organizations", &[("name_prefix", "Acme E")]).await;

    let id_list = |page: &Value| -> Vec<String> {
        page["organizations"]
            .as_array()
            .expect("organizations")
            .iter()
            .map(|o| o["organization_id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(
        id_list(&all),
        ["acme", "acme_eu", "acmex", "deals", "other"]
    );
    assert_eq!(all["next_cursor"], Value::Null);
    let acme = &all["organizations"][0];
    assert_eq!(acme["name"], "Acme");
    assert_eq!(acme["status"], "active");
    assert_eq!(acme["team_count"], 1);
    assert!(acme["created_at"].is_string());
    // `_` and `%` are plain characters, not LIKE wildcards.
    assert_eq!(id_list(&acme_prefix), ["acme_eu"]);
    assert_eq!(id_list(&percent), ["deals"]);
    assert_eq!(id_list(&by_name), ["acme_eu"]);
    let paged = all_pages(
        &app,
        "/api/organizations",
        "organizations",
        "organization_id",
        &[],
        2,
    )
    .await;
    assert_eq!(paged, id_list(&all));
    assert_eq!(snapshot(&db).await, before);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn teams_are_filtered_by_organization_status_and_prefix_with_their_credits(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    seed(&app).await;
    ok_json(
        app.admin(Method::POST, "/api/teams/team_a2/suspend")
            .send()
            .await,
    )
    .await;

    let all = list(&app, "/api/teams", &[]).await;
    let of_a = list(&app, "/api/teams", &[("organization_id", "org_a")]).await;
    let suspended = list(&app, "/api/teams", &[("status", "suspended")]).await;
    let active_a = list(
        &app,
        "/api/teams",
        &[("organization_id", "org_a"), ("status", "active")],
    )
    .await;
    let prefix = list(&app, "/api/teams", &[("name_prefix", "team_a")]).await;
    let underscore = list(&app, "/api/teams", &[("name_prefix", "team_")]).await;
    let literal = list(&app, "/api/teams", &[("name_prefix", "team%")]).await;

    let team_ids = |page: &Value| -> Vec<String> {
        page["teams"]
            .as_array()
            .expect("teams")
            .iter()
            .map(|t| t["team_id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(team_ids(&all), ["team_a1", "team_a2", "team_b1"]);
    assert_eq!(team_ids(&of_a), ["team_a1", "team_a2"]);
    assert_eq!(team_ids(&suspended), ["team_a2"]);
    assert_eq!(team_ids(&active_a), ["team_a1"]);
    assert_eq!(team_ids(&prefix), ["team_a1", "team_a2"]);
    assert_eq!(team_ids(&underscore).len(), 3);
    assert!(team_ids(&literal).is_empty());
    for item in all["teams"].as_array().expect("teams") {
        let id = item["team_id"].as_str().expect("id");
        let shown = list(&app, &format!("/api/teams/{id}"), &[]).await;
        assert_eq!(item["credits"], shown["credits"], "{id}");
        assert_eq!(item["organization_id"], shown["organization_id"]);
        assert_eq!(item["status"], shown["status"]);
        assert_eq!(item["key_prefix"], shown["key_prefix"]);
        assert_eq!(item["created_at"], shown["created_at"]);
    }
    assert_eq!(all["teams"][2]["credits"]["credits_allocated"], 30);
    let stored: String = sqlx::query_scalar("select status from teams where team_id = 'team_a2'")
        .fetch_one(&db)
        .await
        .expect("status");
    assert_eq!(stored, "suspended");
    let paged = all_pages(&app, "/api/teams", "teams", "team_id", &[], 1).await;
    assert_eq!(paged, team_ids(&all));
}
