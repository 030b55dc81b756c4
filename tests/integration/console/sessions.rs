//! Pages need a session, which a rotated key, a suspended team or signing out ends; the root
//! points browsers to the console and API clients to the docs.

use reqwest::{Method, StatusCode};
use sqlx::PgPool;

use crate::helpers::app::{count, ok_json};
use crate::helpers::browser::Browser;
use crate::helpers::{ADMIN_KEY, spawn_app};

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
