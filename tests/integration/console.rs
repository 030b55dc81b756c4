//! The console's sign-in, sessions, CSRF and team isolation, as a hostile browser would try them.
//! This file holds sign-in; `sessions` what a session reaches and what ends it, `isolation` CSRF
//! and what a team's session may not see or do.

use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::app::count;
use crate::helpers::browser::Browser;
use crate::helpers::{ADMIN_KEY, spawn_app};

mod isolation;
mod sessions;

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
