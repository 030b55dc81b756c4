//! Usage reports for a month, checked against sums computed from the calls made.

use chrono::{Datelike, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::ok_json;
use crate::helpers::stack::{Stack, chat, spawn_stack};

/// Makes one call per (group, text) in the job, then completes it with `status`.
async fn settle_after_calls(
    stack: &Stack,
    key: &str,
    job: &str,
    calls: &[(&str, &str)],
    status: &str,
) {
    for (group, text) in calls {
        ok_json(Ok(stack.llm_call(key, job, chat(group, text)).await)).await;
    }
    ok_json(Ok(stack.complete(key, job, status).await)).await;
}

/// The usage report of `team_id` for `query`, as its own key sees it.
async fn team_usage(stack: &Stack, key: &str, team_id: &str, query: &str) -> Value {
    stack
        .app
        .key_ok(
            key,
            Method::GET,
            &format!("/api/teams/{team_id}/usage?{query}"),
        )
        .await
}

/// Two teams of organization `org_team_ua` with groups `Cheap` and `Dear`. team_ua: two
/// analysis jobs (completed) with 1 cheap + 1 dear call each, one chat job failed, and one job
/// of last year; team_ub: one completed job with one dear call. Returns both keys and the id of
/// last year's job.
async fn two_teams_of_one_organization(stack: &Stack, db: &PgPool) -> (String, String, String) {
    let groups: &[(&str, &[&str])] = &[("Cheap", &["cost-1000"]), ("Dear", &["cost-25000"])];
    let key_a = stack.team("team_ua", 20, groups).await;
    let key_b = stack.team("team_ub", 20, groups).await;
    sqlx::query("update teams set organization_id = 'org_team_ua' where team_id = 'team_ub'")
        .execute(db)
        .await
        .expect("same organization");

    for _ in 0..2 {
        let job = stack.create_job(&key_a, "team_ua").await;
        let calls = [("Cheap", "a"), ("Dear", "b")];
        settle_after_calls(stack, &key_a, &job, &calls, "completed").await;
    }
    let chat_job = stack
        .app
        .key_ok_with(
            &key_a,
            Method::POST,
            "/api/jobs/create",
            &json!({"team_id": "team_ua", "job_type": "chat_session"}),
        )
        .await["job_id"]
        .as_str()
        .expect("job")
        .to_owned();
    settle_after_calls(stack, &key_a, &chat_job, &[("Cheap", "c")], "failed").await;
    // A job of last year does not count.
    let old = stack.create_job(&key_a, "team_ua").await;
    sqlx::query("update jobs set created_at = now() - interval '400 days' where job_id = $1::uuid")
        .bind(&old)
        .execute(db)
        .await
        .expect("age");
    // team_ub: one completed job with one dear call.
    let job_b = stack.create_job(&key_b, "team_ub").await;
    settle_after_calls(stack, &key_b, &job_b, &[("Dear", "d")], "completed").await;
    (key_a, key_b, old)
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn team_and_organization_usage_sum_the_months_jobs_and_calls(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let (key_a, key_b, old) = two_teams_of_one_organization(&stack, &db).await;

    let now = Utc::now();
    let period = format!("{}-{:02}", now.year(), now.month());
    let team = team_usage(&stack, &key_a, "team_ua", &format!("period={period}")).await;
    let org = stack
        .app
        .organization_usage("org_team_ua", &format!("period={period}"))
        .await;

    let (tokens_a, tokens_all): (i64, i64) = sqlx::query_as(
        "select coalesce(sum(total_tokens) filter (where team_id = 'team_ua'), 0)::int8, coalesce(sum(total_tokens), 0)::int8 from llm_calls",
    )
    .fetch_one(&db)
    .await
    .expect("tokens");
    assert_eq!(team["period"], period.as_str());
    assert_eq!(team["summary"]["total_jobs"], 3);
    assert_eq!(team["summary"]["successful_jobs"], 2);
    assert_eq!(team["summary"]["failed_jobs"], 1);
    assert_eq!(team["summary"]["total_cost_usd"], 0.053); // 2 x (0.001 + 0.025) + 0.001
    assert_eq!(team["summary"]["total_tokens"], tokens_a);
    assert_eq!(team["summary"]["credits_used"], 2);
    assert_eq!(
        team["job_types"]["document_analysis"],
        json!({"count": 2, "cost_usd": 0.052})
    );
    assert_eq!(
        team["job_types"]["chat_session"],
        json!({"count": 1, "cost_usd": 0.001})
    );
    assert_eq!(org["summary"]["total_jobs"], 4);
    assert_eq!(org["summary"]["total_cost_usd"], 0.078);
    assert_eq!(org["summary"]["total_tokens"], tokens_all);
    assert_eq!(org["summary"]["credits_used"], 3);
    assert_eq!(org["teams"]["team_ub"]["summary"]["total_jobs"], 1);

    let old_period: String = sqlx::query_scalar(
        "select to_char(created_at at time zone 'UTC', 'YYYY-MM') from jobs where job_id = $1::uuid",
    )
    .bind(&old)
    .fetch_one(&db)
    .await
    .expect("period");
    let past = team_usage(&stack, &key_a, "team_ua", &format!("period={old_period}")).await;
    assert_eq!(past["summary"]["total_jobs"], 1);
    assert_eq!(past["summary"]["total_cost_usd"], 0.0);
    assert_usage_refused(&stack, &key_a, &key_b, &period).await;
}

/// Asserts the refusals of usage requests: a bad period, another team's report, and an
/// organization's report asked for with a team key.
async fn assert_usage_refused(stack: &Stack, key_a: &str, key_b: &str, period: &str) {
    stack
        .app
        .key_refused(
            key_a,
            Method::GET,
            "/api/teams/team_ua/usage?period=2025-13",
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    stack
        .app
        .key_refused(
            key_b,
            Method::GET,
            &format!("/api/teams/team_ua/usage?period={period}"),
            None,
            StatusCode::NOT_FOUND,
        )
        .await;
    stack
        .app
        .key_refused(
            key_a,
            Method::GET,
            &format!("/api/organizations/org_team_ua/usage?period={period}"),
            None,
            StatusCode::FORBIDDEN,
        )
        .await;
}

/// The tokens of the calls of the jobs created on `day` (UTC).
async fn tokens_of_day(db: &PgPool, day: &str) -> i64 {
    sqlx::query_scalar(
        "select coalesce(sum(c.total_tokens), 0)::int8 from llm_calls c join jobs j using (job_id)
         where (j.created_at at time zone 'UTC')::date = $1::date",
    )
    .bind(day)
    .fetch_one(db)
    .await
    .expect("tokens")
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn day_ranges_and_the_daily_series_match_the_jobs_of_each_day(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_ud", 20, &[("Cheap", &["cost-1000"])])
        .await;
    // Five completed jobs, one call each, then moved to three days: two on the 10th, one just
    // before midnight on the 11th, two on the 12th (outside the asked range).
    let days = [
        "2025-03-10T08:00:00Z",
        "2025-03-10T23:59:59Z",
        "2025-03-11T23:59:59Z",
        "2025-03-12T00:00:00Z",
        "2025-03-12T12:00:00Z",
    ];
    for at in days {
        let job = stack.create_job(&key, "team_ud").await;
        settle_after_calls(&stack, &key, &job, &[("Cheap", "x")], "completed").await;
        sqlx::query("update jobs set created_at = $2::timestamptz where job_id = $1::uuid")
            .bind(&job)
            .bind(at)
            .execute(&db)
            .await
            .expect("move job");
    }
    let report = team_usage(&stack, &key, "team_ud", "from=2025-03-10&to=2025-03-11").await;
    assert_eq!(report["period"], "2025-03-10/2025-03-11");
    assert_eq!(report["from"], "2025-03-10");
    assert_eq!(report["to"], "2025-03-11");
    assert_eq!(report["summary"]["total_jobs"], 3);
    assert_eq!(report["summary"]["total_cost_usd"], 0.003);
    assert_eq!(
        report["daily"],
        json!([
            {"date": "2025-03-10", "total_jobs": 2, "successful_jobs": 2, "failed_jobs": 0,
             "total_cost_usd": 0.002, "total_tokens": tokens_of_day(&db, "2025-03-10").await},
            {"date": "2025-03-11", "total_jobs": 1, "successful_jobs": 1, "failed_jobs": 0,
             "total_cost_usd": 0.001, "total_tokens": tokens_of_day(&db, "2025-03-11").await},
        ])
    );
    let month = stack
        .app
        .organization_usage("org_team_ud", "period=2025-03")
        .await;
    assert_eq!(month["summary"]["total_jobs"], 5);
    assert_eq!(month["from"], "2025-03-01");
    assert_eq!(month["to"], "2025-03-31");
    assert_eq!(month["daily"][2]["date"], "2025-03-12");
    assert_eq!(month["daily"][2]["total_jobs"], 2);

    for bad in [
        "from=2025-03-10",
        "from=2025-03-12&to=2025-03-10",
        "from=2025-03-10&to=2025-03-32",
        "period=2025-03&from=2025-03-10&to=2025-03-11",
        "from=2019-01-01&to=2025-01-01",
    ] {
        let detail = stack
            .app
            .key_refused(
                &key,
                Method::GET,
                &format!("/api/teams/team_ud/usage?{bad}"),
                None,
                StatusCode::BAD_REQUEST,
            )
            .await;
        assert!(!detail.is_empty(), "{bad}");
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_openai_block_sums_v1_spend_by_endpoint(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team(
            "team_uo",
            100,
            &[("Mixed", &["gpt-3.5-turbo", "text-embedding-3-small"])],
        )
        .await;
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "again"}]}),
        ),
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": ["one", "two"]}),
        ),
    ] {
        stack.app.key_ok_with(&key, Method::POST, path, &body).await;
    }
    stack.app.spend_written().await;
    let period = Utc::now().format("%Y-%m").to_string();
    let report = team_usage(&stack, &key, "team_uo", &format!("period={period}")).await;
    let openai = &report["openai"];
    assert_eq!(openai["requests"], 3, "{report}");
    assert_eq!(openai["endpoints"]["chat"]["requests"], 2);
    assert_eq!(openai["endpoints"]["embeddings"]["requests"], 1);
    let (cost, tokens): (i64, i64) = sqlx::query_as(
        "select sum(cost_micro_usd)::int8, sum(total_tokens)::int8 from spend_records where team_id = 'team_uo'",
    )
    .fetch_one(&db)
    .await
    .expect("records");
    assert!(cost > 0);
    assert_eq!(openai["cost_usd"].as_f64(), Some(cost as f64 / 1e6));
    assert_eq!(openai["total_tokens"], tokens);
    let organization = stack
        .app
        .organization_usage("org_team_uo", &format!("period={period}"))
        .await;
    assert_eq!(organization["openai"], report["openai"]);
    assert_eq!(organization["teams"]["team_uo"]["openai"], report["openai"]);
}
