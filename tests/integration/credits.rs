//! Credits: balance, add (admin), check, the ledger, and concurrent additions. This file holds
//! balances and additions; `check` the availability check, `transactions` the ledger's pages,
//! `refusals` bad amounts and keys that may not.

use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::{assert_ledger_consistent, ok_json};
use crate::helpers::spawn_app;

mod check;
mod refusals;
mod transactions;

/// The team's ledger as (kind, amount, balance_after), oldest first.
pub(super) async fn ledger(db: &PgPool, team_id: &str) -> Vec<(String, i64, i64)> {
    sqlx::query_as(
        "select transaction_type, credits_amount, balance_after from credit_transactions
         where team_id = $1 order by seq",
    )
    .bind(team_id)
    .fetch_all(db)
    .await
    .expect("ledger")
}

pub(super) async fn allocated(db: &PgPool, team_id: &str) -> i64 {
    sqlx::query_scalar("select credits_allocated from credit_balances where team_id = $1")
        .bind(team_id)
        .fetch_one(db)
        .await
        .expect("balance")
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn balance_reports_the_counters_and_a_usd_budget_of_ten_cents_per_credit(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_a", 250).await;

    let by_admin = ok_json(
        app.admin(Method::GET, "/api/credits/teams/team_a/balance")
            .send()
            .await,
    )
    .await;
    let by_team = ok_json(
        app.with_key(&key, Method::GET, "/api/credits/teams/team_a/balance")
            .send()
            .await,
    )
    .await;

    for balance in [&by_admin, &by_team] {
        assert_eq!(balance["team_id"], "team_a");
        assert_eq!(balance["credits_allocated"], 250);
        assert_eq!(balance["credits_used"], 0);
        assert_eq!(balance["credits_remaining"], 250);
        assert_eq!(balance["credits_reserved"], 0);
        assert_eq!(balance["credits_available"], 250);
        assert_eq!(balance["budget_usd"], json!(25.0));
        assert_eq!(balance["spend_usd"], json!(0.0));
    }
    assert_eq!(allocated(&db, "team_a").await, 250);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn balance_subtracts_used_and_reserved_credits(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_a", 100).await;
    sqlx::query("update credit_balances set credits_used = 12, credits_reserved = 3 where team_id = 'team_a'")
        .execute(&db)
        .await
        .expect("arrange counters");

    let balance = ok_json(
        app.admin(Method::GET, "/api/credits/teams/team_a/balance")
            .send()
            .await,
    )
    .await;

    assert_eq!(balance["credits_remaining"], 88);
    assert_eq!(balance["credits_reserved"], 3);
    assert_eq!(balance["credits_available"], 85);
    assert_eq!(balance["budget_usd"], json!(10.0));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn adding_credits_writes_an_addition_row_and_returns_the_transaction(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_a", 100).await;

    let added = ok_json(
        app.admin(Method::POST, "/api/credits/teams/team_a/add")
            .json(&json!({"credits_amount": 40, "reason": "Monthly top-up", "metadata": {"invoice": "INV-7"}}))
            .send()
            .await,
    )
    .await;

    assert_eq!(added["team_id"], "team_a");
    assert_eq!(added["credits_added"], 40);
    assert_eq!(added["credits_allocated"], 140);
    assert_eq!(added["credits_remaining"], 140);
    assert_eq!(added["credits_available"], 140);
    assert_eq!(added["message"], "Added 40 credits");
    let transaction = &added["transaction"];
    assert_eq!(transaction["team_id"], "team_a");
    assert_eq!(transaction["transaction_type"], "addition");
    assert_eq!(transaction["credits_amount"], 40);
    assert_eq!(transaction["balance_after"], 140);
    assert_eq!(transaction["reason"], "Monthly top-up");
    assert_eq!(transaction["metadata"], json!({"invoice": "INV-7"}));
    assert_eq!(transaction["job_id"], Value::Null);

    assert_eq!(
        ledger(&db, "team_a").await,
        vec![
            ("allocation".to_owned(), 100, 100),
            ("addition".to_owned(), 40, 140)
        ]
    );
    let (id, reason): (uuid::Uuid, Option<String>) = sqlx::query_as(
        "select transaction_id, reason from credit_transactions where transaction_type = 'addition'",
    )
    .fetch_one(&db)
    .await
    .expect("row");
    assert_eq!(transaction["transaction_id"], id.to_string());
    assert_eq!(reason.as_deref(), Some("Monthly top-up"));
    assert_eq!(allocated(&db, "team_a").await, 140);
    assert_ledger_consistent(&db, "team_a").await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn adding_credits_without_a_reason_records_a_default_one(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_a", 0).await;

    let added = ok_json(
        app.admin(Method::POST, "/api/credits/teams/team_a/add")
            .json(&json!({"credits": 7}))
            .send()
            .await,
    )
    .await;

    assert_eq!(added["transaction"]["reason"], "Credits added");
    assert_eq!(added["transaction"]["balance_after"], 7);
    assert_eq!(
        ledger(&db, "team_a").await,
        vec![("addition".to_owned(), 7, 7)]
    );
    assert_ledger_consistent(&db, "team_a").await;
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn fifty_concurrent_additions_add_exactly_500_in_an_unbroken_ledger_chain(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_a", 37).await;

    let responses = join_all((0..50).map(|_| {
        app.admin(Method::POST, "/api/credits/teams/team_a/add")
            .json(&json!({"credits_amount": 10}))
            .send()
    }))
    .await;

    let mut returned_balances = Vec::new();
    for response in responses {
        let body = ok_json(response).await;
        returned_balances.push(
            body["transaction"]["balance_after"]
                .as_i64()
                .expect("balance_after"),
        );
    }
    returned_balances.sort_unstable();
    let expected_chain: Vec<i64> = (1..=50).map(|i| 37 + 10 * i).collect();
    assert_eq!(
        returned_balances, expected_chain,
        "each request saw a distinct balance"
    );

    assert_eq!(allocated(&db, "team_a").await, 37 + 500);
    let rows = ledger(&db, "team_a").await;
    assert_eq!(rows[0], ("allocation".to_owned(), 37, 37));
    let additions: Vec<i64> = rows[1..]
        .iter()
        .map(|(kind, amount, balance_after)| {
            assert_eq!((kind.as_str(), *amount), ("addition", 10));
            *balance_after
        })
        .collect();
    assert_eq!(additions.len(), 50);
    assert_eq!(
        additions, expected_chain,
        "balance_after in ledger order is previous + 10 each time"
    );
    assert_ledger_consistent(&db, "team_a").await;
    let balance = ok_json(
        app.admin(Method::GET, "/api/credits/teams/team_a/balance")
            .send()
            .await,
    )
    .await;
    assert_eq!(balance["credits_remaining"], 537);
}
