//! Console actions do what the JSON API does (same checks, same ledger rows, idempotency), and
//! the pages show what the database holds.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::app::{assert_ledger_consistent, count, ok_json};
use crate::helpers::browser::Browser;
use crate::helpers::stack::{Stack, chat, spawn_stack};
use crate::helpers::{ADMIN_KEY, spawn_app};

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_operator_sets_up_a_tenant_and_the_new_key_is_shown_once(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let browser = Browser::signed_in(&app, ADMIN_KEY).await;
    let csrf = browser.get("/console/organizations").await.csrf();

    let org = browser
        .post(
            "/console/organizations",
            &[
                ("csrf", &csrf),
                ("organization_id", "org_acme"),
                ("name", "Acme"),
            ],
        )
        .await;
    assert!(
        org.body.contains("Organization &#39;org_acme&#39; created")
            || org.body.contains("Organization 'org_acme' created"),
        "{}",
        org.body
    );
    let group = browser
        .post(
            "/console/model-groups",
            &[
                ("csrf", &csrf),
                ("group_name", "Summaries"),
                ("models", "gpt-4o-mini\r\n gpt-4o \r\n"),
            ],
        )
        .await;
    assert!(
        group.body.contains("gpt-4o-mini → gpt-4o"),
        "{}",
        group.body
    );
    let form = browser.get("/console/organizations/org_acme").await;
    let key_once = form.idempotency_key();
    let fields = [
        ("csrf", csrf.as_str()),
        ("idempotency_key", key_once.as_str()),
        ("organization_id", "org_acme"),
        ("team_id", "team_acme"),
        ("team_alias", "Acme team"),
        ("model_groups", "Summaries"),
        ("credits_allocated", "25"),
    ];
    let created = browser.post("/console/teams", &fields).await;
    let replayed = browser.post("/console/teams", &fields).await;

    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let marker = r#"<code id="new-key">"#;
    let start = created.body.find(marker).expect("the key is shown") + marker.len();
    let key = &created.body[start..start + created.body[start..].find('<').expect("end")];
    let team = ok_json(
        app.with_key(key, Method::GET, "/api/teams/team_acme")
            .send()
            .await,
    )
    .await;
    assert_eq!(team["model_groups"], json!(["Summaries"]));
    assert_eq!(team["credits"]["credits_allocated"], 25);
    assert!(
        !replayed.body.contains(marker),
        "a replay never shows the key again"
    );
    assert!(replayed.body.contains("already done"));
    assert_eq!(count(&db, "select count(*) from teams").await, 1);
    let page = browser.get("/console/teams/team_acme").await;
    assert!(
        !page.body.contains(key),
        "the team page shows only the prefix"
    );
    assert!(page.body.contains(&key[..10]));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn credits_added_in_the_console_write_one_ledger_row_even_on_a_double_click(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_ops", 10).await;
    let browser = Browser::signed_in(&app, ADMIN_KEY).await;
    let page = browser.get("/console/teams/team_ops").await;
    let (csrf, once) = (page.csrf(), page.idempotency_key());

    let fields = [
        ("csrf", csrf.as_str()),
        ("idempotency_key", once.as_str()),
        ("credits", "40"),
        ("reason", "invoice 7"),
    ];
    let first = browser
        .post("/console/teams/team_ops/add-credits", &fields)
        .await;
    let double_click = browser
        .post("/console/teams/team_ops/add-credits", &fields)
        .await;

    assert!(first.body.contains("Credits added") && double_click.body.contains("Credits added"));
    let additions: Vec<(i64, Option<String>)> = sqlx::query_as(
        "select credits_amount, reason from credit_transactions where team_id = 'team_ops' and transaction_type = 'addition'",
    )
    .fetch_all(&db)
    .await
    .expect("ledger");
    assert_eq!(
        additions,
        [(40, Some("invoice 7".to_owned()))],
        "one addition for a double click"
    );
    assert_ledger_consistent(&db, "team_ops").await;
    let team = ok_json(app.admin(Method::GET, "/api/teams/team_ops").send().await).await;
    assert_eq!(team["credits"]["credits_allocated"], 50);
    let ledger = browser.get("/console/teams/team_ops/ledger").await;
    assert!(ledger.body.contains("invoice 7") && ledger.body.contains("addition"));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn limits_and_grants_set_in_the_console_go_through_the_api(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_ops", 10).await;
    app.create_group("Backup", &["gpt-4o"]).await;
    let browser = Browser::signed_in(&app, ADMIN_KEY).await;
    let csrf = browser.get("/console/teams/team_ops").await.csrf();

    let limits = browser
        .post(
            "/console/teams/team_ops/limits",
            &[
                ("csrf", &csrf),
                ("max_concurrent_calls", "3"),
                ("requests_per_minute", "120"),
                ("tokens_per_minute", ""),
            ],
        )
        .await;
    let grants = browser
        .post(
            "/console/teams/team_ops/model-groups",
            &[("csrf", &csrf), ("model_groups", "Backup, ChatAgent")],
        )
        .await;
    let unknown = browser
        .post(
            "/console/teams/team_ops/model-groups",
            &[("csrf", &csrf), ("model_groups", "NoSuchGroup")],
        )
        .await;

    assert!(limits.body.contains("Limits set"), "{}", limits.body);
    assert!(
        grants.body.contains("Model groups granted"),
        "{}",
        grants.body
    );
    assert!(
        unknown
            .body
            .contains("Model group &#39;NoSuchGroup&#39; not found")
            || unknown.body.contains("Model group 'NoSuchGroup' not found"),
        "{}",
        unknown.body
    );
    let team = ok_json(app.admin(Method::GET, "/api/teams/team_ops").send().await).await;
    assert_eq!(
        team["limits"],
        json!({"max_concurrent_calls": 3, "requests_per_minute": 120, "tokens_per_minute": null})
    );
    assert_eq!(team["model_groups"], json!(["Backup", "ChatAgent"]));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn rotating_the_key_in_the_console_shows_the_new_one_and_ends_the_old(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let old_key = app.team_with_key("team_ops", 10).await;
    let browser = Browser::signed_in(&app, ADMIN_KEY).await;
    let csrf = browser.get("/console/teams/team_ops").await.csrf();

    let rotate_once = uuid::Uuid::new_v4().to_string();
    let rotate = [
        ("csrf", csrf.as_str()),
        ("idempotency_key", rotate_once.as_str()),
    ];
    let rotated = browser
        .post("/console/teams/team_ops/rotate-key", &rotate)
        .await;
    assert!(rotated.body.contains("new-key"), "{}", rotated.body);
    let old = app
        .with_key(&old_key, Method::GET, "/api/teams/team_ops")
        .send()
        .await
        .expect("sent");
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
}

/// Team `team_runs` with a job whose one call fell back from a failing model to a working one,
/// and a second job with no call: the two job ids.
async fn a_job_with_a_fallback_and_an_open_one(stack: &Stack) -> (String, String) {
    let key = stack
        .team(
            "team_runs",
            5,
            &[("Fallback", &["fail-500-first", "gpt-4o-mini"])],
        )
        .await;
    let job = stack.create_job(&key, "team_runs").await;
    let answer = stack.llm_call(&key, &job, chat("Fallback", "hello")).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let open_job = stack.create_job(&key, "team_runs").await;
    (job, open_job)
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_job_page_shows_calls_with_every_attempt_and_cancel_releases_the_credit(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let (job, open_job) = a_job_with_a_fallback_and_an_open_one(&stack).await;
    let browser = Browser::signed_in(&stack.app, ADMIN_KEY).await;

    let list = browser
        .get("/console/jobs?team_id=team_runs&status=in_progress")
        .await;
    let page = browser.get(&format!("/console/jobs/{job}")).await;

    assert!(
        list.body.contains(&job) && !list.body.contains(&open_job),
        "{}",
        list.body
    );
    assert!(
        page.body.contains("fail-500-first: fallback (500)"),
        "{}",
        page.body
    );
    assert!(page.body.contains("gpt-4o-mini: succeeded"));
    let tokens: i64 =
        sqlx::query_scalar("select total_tokens from llm_calls where job_id = $1::uuid")
            .bind(&job)
            .fetch_one(&db)
            .await
            .expect("call");
    assert!(
        page.body
            .contains(&format!(r#"<td class="num">{tokens}</td>"#)),
        "tokens shown"
    );

    let csrf = page.csrf();
    let cancelled = browser
        .post(
            &format!("/console/jobs/{open_job}/cancel"),
            &[("csrf", &csrf)],
        )
        .await;
    assert!(
        cancelled.body.contains("Job cancelled"),
        "{}",
        cancelled.body
    );
    let again = browser
        .post(&format!("/console/jobs/{job}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(again.status, StatusCode::OK);
    let status: String = sqlx::query_scalar("select status from jobs where job_id = $1::uuid")
        .bind(&open_job)
        .fetch_one(&db)
        .await
        .expect("job");
    assert_eq!(status, "cancelled");
    assert_ledger_consistent(&db, "team_runs").await;
    let overview = browser.get("/console").await;
    assert!(overview.body.contains("Fallbacks per minute"));
    let csv = browser.get("/console/usage.csv?team_id=team_runs").await;
    assert!(
        csv.body
            .starts_with("day,jobs,completed,failed,tokens,cost_usd\n")
    );
    assert!(
        csv.body
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains(&format!(",{tokens},"))),
        "{}",
        csv.body
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn hostile_values_are_escaped_or_refused_never_a_server_error(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.create_org("org_x").await;
    ok_json(
        app.admin(Method::POST, "/api/teams/create")
            .json(&json!({"organization_id": "org_x", "team_id": "team_x",
                          "team_alias": "<script>alert(1)</script>", "credits_allocated": 1}))
            .send()
            .await,
    )
    .await;
    let browser = Browser::signed_in(&app, ADMIN_KEY).await;

    let team = browser.get("/console/teams/team_x").await;
    assert!(!team.body.contains("<script>alert"), "escaped");
    let teams = browser.get("/console/teams").await;
    assert!(teams.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    for path in [
        "/console/jobs?status=nope",
        "/console/jobs?before=garbage",
        "/console/jobs?from=2026-13-45",
        "/console/usage?from=2026-01-01&to=2020-01-01",
        "/console/usage?from=1900-01-01&to=2026-01-01",
        "/console/usage?to=-262143-01-01",
        "/console/usage.csv?from=-262143-01-01&to=-262143-01-05",
        "/console/webhooks?before=x_y",
        "/console/jobs/not-a-uuid",
    ] {
        let answer = browser.get(path).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            answer.body
        );
    }
    let csrf = team.csrf();
    for fields in [
        vec![("csrf", csrf.as_str()), ("credits", "-5")],
        vec![("csrf", csrf.as_str()), ("credits", "99999999999999999999")],
        vec![("csrf", csrf.as_str()), ("credits", "1e9")],
        vec![
            ("csrf", csrf.as_str()),
            ("credits", "5"),
            ("reason", "nul\0byte"),
        ],
    ] {
        let answer = browser
            .post("/console/teams/team_x/add-credits", &fields)
            .await;
        assert_eq!(answer.status, StatusCode::OK, "the page, with the refusal");
        assert!(answer.body.contains("notice refused"), "{}", answer.body);
    }
    let allocated: i64 = sqlx::query_scalar(
        "select credits_allocated from credit_balances where team_id = 'team_x'",
    )
    .fetch_one(&db)
    .await
    .expect("balance");
    assert_eq!(allocated, 1, "no refused form moved credits");
    let huge = "x".repeat(100 * 1024);
    let answer = browser
        .post(
            "/console/organizations",
            &[("csrf", &csrf), ("name", &huge)],
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        &answer.body[..200.min(answer.body.len())]
    );
}
