//! The console's sign-in, sessions, CSRF and team isolation, as a hostile browser would try them.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::app::{count, ok_json};
use crate::helpers::browser::Browser;
use crate::helpers::{ADMIN_KEY, spawn_app};

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn sign_in_sets_a_strict_http_only_cookie_and_stores_only_its_hash(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let mut browser = Browser::new(&app);

    let answer = browser.sign_in(ADMIN_KEY).await;

    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let cookie = answer.set_cookies.first().expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age="] {
        assert!(cookie.contains(flag), "{cookie} lacks {flag}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP gets no Secure cookie: {cookie}"
    );
    let token = browser.cookie.clone().expect("kept")["saasllm_console=".len()..].to_owned();
    let stored: Vec<u8> = sqlx::query_scalar("select session_hash from console_sessions")
        .fetch_one(&db)
        .await
        .expect("one session");
    assert_ne!(
        stored,
        token.as_bytes(),
        "the cookie value itself is not stored"
    );
    assert_eq!(stored.len(), 32);
    let page = browser.get("/console").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Calls queued"), "{}", page.body);
    assert!(!page.body.contains(ADMIN_KEY), "the key is never shown");

    // Behind a proxy that terminates TLS, the cookie is Secure.
    let secure = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(app.url("/console/sign-in"))
        .header("x-forwarded-proto", "https")
        .form(&[("key", ADMIN_KEY)])
        .send()
        .await
        .expect("sent");
    let cookie = secure.headers()["set-cookie"].to_str().expect("ascii");
    assert!(cookie.contains("Secure"), "{cookie}");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn failed_sign_ins_are_limited_per_address_even_for_the_right_key(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let mut browser = Browser::new(&app);
    for attempt in 0..10 {
        let answer = browser.sign_in(&format!("sk-guess-{attempt}")).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
        assert!(answer.body.contains("This key is not valid"));
        assert!(answer.set_cookies.is_empty());
    }

    let answer = browser.sign_in(ADMIN_KEY).await;

    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        answer.body.contains("Too many failed sign-ins"),
        "{}",
        answer.body
    );
    assert_eq!(count(&db, "select count(*) from console_sessions").await, 0);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_burst_of_sign_ins_checks_at_most_ten_wrong_keys_and_successes_do_not_count(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    for _ in 0..3 {
        Browser::signed_in(&app, ADMIN_KEY).await;
    }
    let app = &app;
    let mut attempts = Vec::new();
    for i in 0..40 {
        attempts.push(async move {
            Browser::new(app)
                .sign_in(&format!("sk-burst-{i}"))
                .await
                .status
        });
    }
    let statuses = futures::future::join_all(attempts).await;

    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((checked, refused), (10, 30), "{statuses:?}");
    assert_eq!(
        Browser::new(app).sign_in(ADMIN_KEY).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_sign_in_form_trickled_in_is_cut_off_at_the_body_deadline(db: PgPool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (app, _) =
        crate::helpers::app::spawn_app_configured(db, &crate::helpers::app::redis_url(), |s| {
            s.body_read_timeout = std::time::Duration::from_secs(1);
        })
        .await;
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let head = "POST /console/sign-in HTTP/1.1\r\nHost: console\r\n\
                Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nkey=";
    stream.write_all(head.as_bytes()).await.expect("write");

    let mut answer = vec![0u8; 512];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the server answers or closes well before 10 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(read == 0 || answer.starts_with("HTTP/1.1 4"), "{answer}");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn pages_without_a_session_go_to_sign_in_and_forged_cookies_do_not_work(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let mut browser = Browser::new(&app);
    for path in [
        "/console",
        "/console/teams",
        "/console/jobs",
        "/console/usage.csv",
    ] {
        let answer = browser.get(path).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(
            answer.location.as_deref(),
            Some("/console/sign-in"),
            "{path}"
        );
    }
    browser.cookie = Some(format!("saasllm_console={}", "00".repeat(32)));
    let answer = browser.get("/console").await;
    assert_eq!(
        answer.location.as_deref(),
        Some("/console/sign-in?reason=expired")
    );
    // An API key in a header is no console session.
    let answer = app
        .admin(Method::GET, "/console/teams")
        .send()
        .await
        .expect("sent");
    assert!(
        answer.url().path().ends_with("/console/sign-in"),
        "followed to sign-in"
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn forms_without_the_csrf_token_or_from_another_origin_change_nothing(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_victim", 10).await;
    let browser = Browser::signed_in(&app, ADMIN_KEY).await;
    let csrf = browser.get("/console/teams/team_victim").await.csrf();

    let missing = browser
        .post("/console/teams/team_victim/suspend", &[])
        .await;
    let wrong = browser
        .post(
            "/console/teams/team_victim/suspend",
            &[("csrf", &"0".repeat(64))],
        )
        .await;
    let cross_site = browser
        .post_from(
            "http://evil.example",
            "/console/teams/team_victim/suspend",
            &[("csrf", &csrf)],
        )
        .await;
    let credits = browser
        .post(
            "/console/teams/team_victim/add-credits",
            &[("credits", "1000")],
        )
        .await;

    for answer in [&missing, &wrong, &cross_site, &credits] {
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    }
    assert!(missing.body.contains("CSRF token is missing or wrong"));
    assert!(cross_site.body.contains("Cross-origin"));
    let team = ok_json(
        app.admin(Method::GET, "/api/teams/team_victim")
            .send()
            .await,
    )
    .await;
    assert_eq!(team["status"], "active");
    assert_eq!(team["credits"]["credits_allocated"], 10);
    assert_eq!(
        count(
            &db,
            "select count(*) from credit_transactions where team_id = 'team_victim'"
        )
        .await,
        1,
        "only the allocation"
    );

    // The same form with the token does what it says.
    let done = browser
        .post("/console/teams/team_victim/suspend", &[("csrf", &csrf)])
        .await;
    assert_eq!(done.status, StatusCode::OK);
    assert!(done.body.contains("Team suspended"), "{}", done.body);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_team_sees_only_itself_and_none_of_the_operator_pages(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let own_key = app.team_with_key("team_own", 5).await;
    let other_key = app.team_with_key("team_other", 5).await;
    let mut job_ids = Vec::new();
    for (team, key) in [("team_own", &own_key), ("team_other", &other_key)] {
        let job = ok_json(
            app.with_key(key, Method::POST, "/api/jobs/create")
                .json(&json!({"team_id": team, "job_type": format!("type_of_{team}")}))
                .send()
                .await,
        )
        .await;
        job_ids.push(job["job_id"].as_str().expect("id").to_owned());
    }
    let browser = Browser::signed_in(&app, &own_key).await;

    let overview = browser.get("/console").await;
    assert!(overview.body.contains("Team team_own"), "{}", overview.body);
    assert!(
        !overview.body.contains("Calls queued"),
        "no fleet figures for a team"
    );
    assert!(
        overview
            .body
            .contains(r#"<div class="label">Credits available</div><div class="value">4</div>"#),
        "one of 5 credits is held by the open job: {}",
        overview.body
    );
    let jobs = browser.get("/console/jobs?team_id=team_other").await;
    assert!(jobs.body.contains(&job_ids[0]) && jobs.body.contains("type_of_team_own"));
    assert!(!jobs.body.contains(&job_ids[1]) && !jobs.body.contains("team_other"));
    let usage = browser.get("/console/usage.csv?team_id=team_other").await;
    assert_eq!(usage.status, StatusCode::OK);
    assert!(
        usage.body.lines().nth(1).is_some_and(|l| l.contains(",1,")),
        "own job only: {}",
        usage.body
    );
    for path in [
        format!("/console/jobs/{}", job_ids[1]),
        "/console/teams".to_owned(),
        "/console/teams/team_other".to_owned(),
        "/console/teams/team_own/ledger".to_owned(),
        "/console/organizations".to_owned(),
        "/console/webhooks".to_owned(),
        "/console/model-groups/ChatAgent".to_owned(),
    ] {
        let answer = browser.get(&path).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            answer.body
        );
    }
    let csrf = overview.csrf();
    for (path, fields) in [
        (
            "/console/teams/team_other/suspend",
            vec![("csrf", csrf.as_str())],
        ),
        (
            "/console/teams/team_own/add-credits",
            vec![("csrf", csrf.as_str()), ("credits", "100")],
        ),
        (
            "/console/organizations",
            vec![
                ("csrf", csrf.as_str()),
                ("organization_id", "x"),
                ("name", "x"),
            ],
        ),
    ] {
        let answer = browser.post(path, &fields).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
    }
    let cancel = browser
        .post(
            &format!("/console/jobs/{}/cancel", job_ids[1]),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(cancel.status, StatusCode::NOT_FOUND);
    let statuses: Vec<String> = sqlx::query_scalar("select status from jobs order by team_id")
        .fetch_all(&db)
        .await
        .expect("jobs");
    assert_eq!(statuses, ["pending", "pending"], "nothing was cancelled");
    assert_eq!(
        count(
            &db,
            "select count(*) from organizations where organization_id = 'x'"
        )
        .await,
        0
    );
    let allocated: i64 = sqlx::query_scalar(
        "select credits_allocated from credit_balances where team_id = 'team_own'",
    )
    .fetch_one(&db)
    .await
    .expect("balance");
    assert_eq!(allocated, 5);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn rotating_the_key_or_suspending_the_team_ends_its_sessions_and_sign_out_ends_one(
    db: PgPool,
) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_rotated", 5).await;
    let team_browser = Browser::signed_in(&app, &key).await;
    let admin = Browser::signed_in(&app, ADMIN_KEY).await;

    ok_json(
        app.admin(Method::POST, "/api/teams/team_rotated/suspend")
            .send()
            .await,
    )
    .await;
    let answer = team_browser.get("/console").await;
    assert_eq!(
        answer.location.as_deref(),
        Some("/console/sign-in?reason=suspended")
    );
    ok_json(
        app.admin(Method::POST, "/api/teams/team_rotated/resume")
            .send()
            .await,
    )
    .await;
    let again = Browser::signed_in(&app, &key).await;
    ok_json(
        app.admin(Method::POST, "/api/teams/team_rotated/rotate-key")
            .send()
            .await,
    )
    .await;
    let answer = again.get("/console/jobs").await;
    assert_eq!(
        answer.location.as_deref(),
        Some("/console/sign-in?reason=key")
    );
    let mut old_key = Browser::new(&app);
    assert_eq!(old_key.sign_in(&key).await.status, StatusCode::UNAUTHORIZED);

    let csrf = admin.get("/console").await.csrf();
    let out = admin.post("/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(
        out.set_cookies[0].contains("Max-Age=0"),
        "{:?}",
        out.set_cookies
    );
    assert_eq!(
        admin.get("/console").await.status,
        StatusCode::SEE_OTHER,
        "the old cookie is dead"
    );
    assert_eq!(count(&db, "select count(*) from console_sessions").await, 0);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_root_sends_a_browser_to_the_console_and_an_api_client_to_the_docs(db: PgPool) {
    let app = spawn_app(db).await;
    let browser = Browser::new(&app);

    let page = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(app.url("/"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .expect("sent");
    let pointer = ok_json(app.anonymous(Method::GET, "/").send().await).await;

    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(page.headers()["location"], "/console");
    assert_eq!(pointer["console"], "/console");
    assert_eq!(pointer["docs"], "/docs");
    let sign_in = browser.get("/console/sign-in").await;
    assert_eq!(sign_in.status, StatusCode::OK);
    assert!(sign_in.body.contains(r#"name="key""#));
    let unknown = browser.get("/console/no-such-page").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(
        unknown
            .body
            .contains("No console page at /console/no-such-page"),
        "{}",
        unknown.body
    );
    let htmx = browser.get("/console/assets/htmx-2.0.11.min.js").await;
    assert_eq!(htmx.status, StatusCode::OK);
    assert!(htmx.body.starts_with("var htmx="));
}
