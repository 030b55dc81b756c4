//! `GET /api/audit`: newest first, filtered by actor, action, target and time window, paged by
//! cursor; bad queries are 400.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::audit_page;
use crate::admin_roles::admin_key;
use crate::helpers::app::{TestApp, error_detail, ok_json};
use crate::helpers::spawn_app;

/// A log of 9 rows: a billing key (returned with the time after it), 2 teams with their
/// organizations and a group made by the bootstrap key, then 3 credit additions by the billing key.
async fn nine_rows(app: &TestApp) -> (String, chrono::DateTime<chrono::Utc>) {
    let (billing_id, billing) = admin_key(app, "billing", "billing").await;
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
    (billing_id, started)
}

fn audit_ids(page: &Value) -> Vec<i64> {
    page["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["audit_id"].as_i64().expect("id"))
        .collect()
}

async fn entries_matching(app: &TestApp, query: &str) -> Option<usize> {
    audit_page(app, query).await["entries"]
        .as_array()
        .map(Vec::len)
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_log_is_filtered_newest_first(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let (billing_id, started) = nine_rows(&app).await;

    let all = audit_page(&app, "?limit=500").await;
    let ids = audit_ids(&all);
    // 1 key, 2 orgs, 1 group, 2 teams, 3 additions.
    assert_eq!(ids.len(), 9);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert_eq!(all["next_cursor"], Value::Null);

    let by_actor = entries_matching(&app, &format!("?actor={billing_id}")).await;
    assert_eq!(by_actor, Some(3));
    assert_eq!(entries_matching(&app, "?action=team.create").await, Some(2));
    let by_target = entries_matching(&app, "?target_type=team&target_id=team_a").await;
    assert_eq!(by_target, Some(3));
    let since = started
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        .replace('+', "%2B");
    // Since the start: the bootstrap key's 2 organizations, 1 group and 2 teams.
    let in_window = entries_matching(&app, &format!("?actor=bootstrap&since={since}")).await;
    assert_eq!(in_window, Some(5));
    let before_start = entries_matching(&app, &format!("?until={since}")).await;
    assert_eq!(before_start, Some(1));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn pages_of_two_walk_the_whole_log_once_in_order(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    nine_rows(&app).await;
    let ids = audit_ids(&audit_page(&app, "?limit=500").await);

    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=2&cursor={c}"),
            None => "?limit=2".to_owned(),
        };
        let page = audit_page(&app, &query).await;
        let page_ids = audit_ids(&page);
        assert!(page_ids.len() <= 2);
        walked.extend(page_ids);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(walked, ids);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn bad_queries_are_400(db: PgPool) {
    let app = spawn_app(db.clone()).await;
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
