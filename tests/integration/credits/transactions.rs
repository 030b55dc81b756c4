//! `GET /api/credits/teams/{team_id}/transactions`: newest first, with a limit, an offset and the
//! total, to the admin and to the team itself.

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::{count, ok_json};
use crate::helpers::spawn_app;

/// The page's rows as (kind, amount, balance_after), in the order listed.
fn summary(page: &Value) -> Vec<(String, i64, i64)> {
    page["transactions"]
        .as_array()
        .expect("transactions")
        .iter()
        .map(|t| {
            (
                t["transaction_type"].as_str().expect("type").to_owned(),
                t["credits_amount"].as_i64().expect("amount"),
                t["balance_after"].as_i64().expect("balance_after"),
            )
        })
        .collect()
}

fn addition(amount: i64, balance_after: i64) -> (String, i64, i64) {
    ("addition".to_owned(), amount, balance_after)
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn transactions_are_listed_newest_first_with_limit_offset_and_a_total(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_a", 100).await;
    for amount in [1, 2, 3] {
        ok_json(
            app.admin(Method::POST, "/api/credits/teams/team_a/add")
                .json(&json!({"credits_amount": amount}))
                .send()
                .await,
        )
        .await;
    }
    let path = "/api/credits/teams/team_a/transactions";

    let first = app.admin_ok(Method::GET, &format!("{path}?limit=2")).await;
    let second = app
        .key_ok(&key, Method::GET, &format!("{path}?limit=2&offset=2"))
        .await;
    let past_the_end = app.admin_ok(Method::GET, &format!("{path}?offset=4")).await;
    let default_page = app.admin_ok(Method::GET, path).await;

    assert_eq!(first["team_id"], "team_a");
    let paging = |page: &Value| {
        (
            page["total_transactions"].as_i64(),
            page["limit"].as_i64(),
            page["offset"].as_i64(),
        )
    };
    assert_eq!(paging(&first), (Some(4), Some(2), Some(0)));
    assert_eq!(summary(&first), vec![addition(3, 106), addition(2, 103)]);
    assert_eq!((paging(&second).0, paging(&second).2), (Some(4), Some(2)));
    assert_eq!(
        summary(&second),
        vec![addition(1, 101), ("allocation".to_owned(), 100, 100)]
    );
    assert_eq!(past_the_end["total_transactions"], 4);
    assert_eq!(past_the_end["transactions"], json!([]));
    assert_eq!(default_page["limit"], 50);
    assert_eq!(summary(&default_page).len(), 4);
    assert_eq!(
        count(&db, "select count(*) from credit_transactions").await,
        4
    );
}
