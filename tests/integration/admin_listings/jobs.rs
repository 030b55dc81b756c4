//! `GET /api/jobs`: each filter alone and combined, newest first, and keyset pages that visit
//! every matching job once in order, ties of `created_at` included.

use saasllm_shared::domain::status::JobStatus;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{all_pages, ids, list, rfc3339, seed, snapshot};
use crate::helpers::spawn_app;

/// Query parameters, and the job ids expected for them.
type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<String>);

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn jobs_are_filtered_by_each_field_newest_first(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let (jobs, _) = seed(&app).await;
    let before = snapshot(&db).await;
    let from = jobs[30].at;
    let to = jobs[6].at;
    let (from_text, to_text) = (rfc3339(from), rfc3339(to));

    let cases: Vec<Case> = vec![
        (vec![], ids(&jobs, |_| true)),
        (
            vec![("team_id", "team_a2")],
            ids(&jobs, |j| j.team == "team_a2"),
        ),
        (
            vec![("organization_id", "org_a")],
            ids(&jobs, |j| j.org == "org_a"),
        ),
        (
            vec![("organization_id", "org_b"), ("team_id", "team_a1")],
            vec![],
        ),
        (vec![("organization_id", "org_nope")], vec![]),
        (
            vec![("status", "completed")],
            ids(&jobs, |j| j.status == JobStatus::Completed),
        ),
        (
            vec![("job_type", "resume")],
            ids(&jobs, |j| j.job_type == "resume"),
        ),
        (
            vec![("created_after", &from_text), ("created_before", &to_text)],
            ids(&jobs, |j| j.at >= from && j.at < to),
        ),
        (
            vec![
                ("organization_id", "org_a"),
                ("status", "failed"),
                ("job_type", "summary"),
            ],
            ids(&jobs, |j| {
                j.org == "org_a" && j.status == JobStatus::Failed && j.job_type == "summary"
            }),
        ),
    ];
    for (query, expected) in cases {
        let page = list(&app, "/api/jobs", &query).await;
        let got: Vec<String> = page["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .map(|j| j["job_id"].as_str().expect("id").to_owned())
            .collect();
        assert_eq!(got, expected, "{query:?}");
        assert_eq!(page["next_cursor"], Value::Null, "{query:?}");
    }
    let newest = &list(&app, "/api/jobs", &[("limit", "1")]).await["jobs"][0];
    assert_eq!(newest["job_id"], jobs[0].id.to_string());
    assert_eq!(newest["team_id"], jobs[0].team);
    assert_eq!(newest["status"], jobs[0].status.as_str());
    assert_eq!(newest["job_type"], jobs[0].job_type);
    assert_eq!(newest["credit_applied"], false);
    assert_eq!(newest["calls"], 0);
    assert_eq!(newest["metadata"], json!({}));
    assert_eq!(snapshot(&db).await, before);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn job_pages_visit_every_matching_job_once_in_order(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let (jobs, _) = seed(&app).await;

    for (query, expected) in [
        (vec![], ids(&jobs, |_| true)),
        (
            vec![("organization_id", "org_a")],
            ids(&jobs, |j| j.org == "org_a"),
        ),
        (
            vec![("team_id", "team_b1")],
            ids(&jobs, |j| j.team == "team_b1"),
        ),
        (
            vec![("job_type", "summary")],
            ids(&jobs, |j| j.job_type == "summary"),
        ),
    ] {
        // 41 jobs: pages of 4 end short; pages of 41 end exactly full, with no cursor after.
        for limit in [1, 4, 7, expected.len().max(1)] {
            let paged = all_pages(&app, "/api/jobs", "jobs", "job_id", &query, limit).await;
            assert_eq!(paged, expected, "{query:?} limit {limit}");
        }
    }
}
