//! Credits: balance, add (admin), check, the ledger, and concurrent additions.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::{assert_ledger_consistent, count, error_detail, ok_json};
use crate::helpers::spawn_app;

/// The team's ledger as (kind, amount, balance_after), oldest first.
async fn ledger(db: &PgPool, team_id: &str) -> Vec<(String, i64, i64)> {
    sqlx::query_as(
        "select transaction_type, credits_amount, balance_after from credit_transactions
         where team_id = $1 order by seq",
    )
    .bind(team_id)
    .fetch_all(db)
    .await
    .expect("ledger")
}

async fn allocated(db: &PgPool, team_id: &str) -> i64 {
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
    let summary = |page: &Value| -> Vec<(String, i64, i64)> {
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
    };

    let first = ok_json(
        app.admin(
            Method::GET,
            "/api/credits/teams/team_a/transactions?limit=2",
        )
        .send()
        .await,
    )
    .await;
    let second = ok_json(
        app.with_key(
            &key,
            Method::GET,
            "/api/credits/teams/team_a/transactions?limit=2&offset=2",
        )
        .send()
        .await,
    )
    .await;
    let past_the_end = ok_json(
        app.admin(
            Method::GET,
            "/api/credits/teams/team_a/transactions?offset=4",
        )
        .send()
        .await,
    )
    .await;
    let default_page = ok_json(
        app.admin(Method::GET, "/api/credits/teams/team_a/transactions")
            .send()
            .await,
    )
    .await;

    assert_eq!(first["team_id"], "team_a");
    assert_eq!(
        (
            first["total_transactions"].as_i64(),
            first["limit"].as_i64(),
            first["offset"].as_i64()
        ),
        (Some(4), Some(2), Some(0))
    );
    assert_eq!(
        summary(&first),
        vec![
            ("addition".to_owned(), 3, 106),
            ("addition".to_owned(), 2, 103)
        ]
    );
    assert_eq!(
        (
            second["total_transactions"].as_i64(),
            second["offset"].as_i64()
        ),
        (Some(4), Some(2))
    );
    assert_eq!(
        summary(&second),
        vec![
            ("addition".to_owned(), 1, 101),
            ("allocation".to_owned(), 100, 100)
        ]
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

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn check_reports_whether_enough_credits_are_available(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_a", 5).await;
    app.team_with_key("team_empty", 0).await;
    let check = |team: &str, body: Option<Value>| {
        let request = app.admin(Method::POST, &format!("/api/credits/teams/{team}/check"));
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
    };

    let exact = ok_json(
        check("team_a", Some(json!({"credits_required": 5})))
            .send()
            .await,
    )
    .await;
    let too_many = ok_json(
        check("team_a", Some(json!({"credits_required": 6})))
            .send()
            .await,
    )
    .await;
    let empty_body = ok_json(check("team_a", None).send().await).await;
    let whitespace = app
        .admin(Method::POST, "/api/credits/teams/team_a/check")
        .header("content-type", "application/json")
        .body("\r\n ")
        .send()
        .await
        .expect("request");
    assert_eq!(whitespace.status(), StatusCode::BAD_REQUEST);
    let detail = whitespace.json::<Value>().await.expect("JSON")["detail"].clone();
    assert!(
        detail.as_str().expect("detail").contains("only whitespace"),
        "{detail}"
    );
    for array in ["[]", " [5]"] {
        let refused = app
            .admin(Method::POST, "/api/credits/teams/team_a/check")
            .header("content-type", "application/json")
            .body(array)
            .send()
            .await
            .expect("request");
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{array}");
    }
    let empty_object = ok_json(check("team_a", Some(json!({}))).send().await).await;
    let empty_team = ok_json(check("team_empty", None).send().await).await;
    let by_team = ok_json(
        app.with_key(&key, Method::POST, "/api/credits/teams/team_a/check")
            .json(&json!({"credits_required": 2}))
            .send()
            .await,
    )
    .await;

    assert_eq!(exact["team_id"], "team_a");
    assert_eq!(exact["available"], true);
    assert_eq!(exact["credits_required"], 5);
    assert_eq!(exact["credits_remaining"], 5);
    assert_eq!(exact["credits_available"], 5);
    assert_eq!(too_many["available"], false);
    assert_eq!(too_many["credits_required"], 6);
    for defaulted in [&empty_body, &empty_object] {
        assert_eq!(defaulted["credits_required"], 1);
        assert_eq!(defaulted["available"], true);
    }
    assert_eq!(empty_team["credits_required"], 1);
    assert_eq!(empty_team["available"], false);
    assert_eq!(by_team["available"], true);
    // Checking reserves nothing.
    assert_eq!(
        count(
            &db,
            "select coalesce(sum(credits_reserved), 0)::bigint from credit_balances"
        )
        .await,
        0
    );
    assert_eq!(
        count(&db, "select count(*) from credit_transactions").await,
        1
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn check_with_a_required_amount_below_one_is_400(db: PgPool) {
    let app = spawn_app(db).await;
    app.team_with_key("team_a", 5).await;

    for required in [0, -3] {
        let detail = error_detail(
            app.admin(Method::POST, "/api/credits/teams/team_a/check")
                .json(&json!({"credits_required": required}))
                .send()
                .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(
            detail.starts_with("credits_required must be between 1 and"),
            "{detail}"
        );
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn invalid_credit_amounts_are_400_and_write_nothing(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_a", 100).await;
    let cases = [
        (
            json!({"credits_amount": 0}),
            "credits_amount must be a whole number between 1 and",
        ),
        (
            json!({"credits_amount": -5}),
            "credits_amount must be a whole number between 1 and",
        ),
        (
            json!({"credits_amount": 1_000_000_001_i64}),
            "credits_amount must be a whole number between 1 and",
        ),
        (
            json!({"credits_amount": 2.5}),
            "Invalid request body: invalid value: 2.5, expected a whole number",
        ),
        (
            json!({"credits_amount": "10"}),
            "Invalid request body: invalid type: string",
        ),
        (
            json!({"credits_amount": null}),
            "Invalid request body: invalid type: null",
        ),
        (
            json!({"reason": "no amount"}),
            "Invalid request body: missing field `credits_amount`",
        ),
    ];

    for (body, expected) in &cases {
        let detail = error_detail(
            app.admin(Method::POST, "/api/credits/teams/team_a/add")
                .json(body)
                .send()
                .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(detail.starts_with(expected), "{body}: {detail}");
    }

    assert_eq!(
        ledger(&db, "team_a").await,
        vec![("allocation".to_owned(), 100, 100)]
    );
    assert_eq!(allocated(&db, "team_a").await, 100);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn credits_of_an_unknown_team_are_404(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.team_with_key("team_a", 1).await;
    let requests = [
        app.admin(Method::GET, "/api/credits/teams/team_nope/balance"),
        app.admin(Method::GET, "/api/credits/teams/team_nope/transactions"),
        app.admin(Method::POST, "/api/credits/teams/team_nope/check"),
        app.admin(Method::POST, "/api/credits/teams/team_nope/add")
            .json(&json!({"credits_amount": 10})),
    ];

    for request in requests {
        let detail = error_detail(request.send().await, StatusCode::NOT_FOUND).await;
        assert_eq!(detail, "Team 'team_nope' not found");
    }
    assert_eq!(
        count(&db, "select count(*) from credit_transactions").await,
        1
    );
    assert_eq!(count(&db, "select count(*) from credit_balances").await, 1);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_team_key_cannot_add_credits_even_to_its_own_team(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let key = app.team_with_key("team_a", 10).await;

    let detail = error_detail(
        app.with_key(&key, Method::POST, "/api/credits/teams/team_a/add")
            .json(&json!({"credits_amount": 1000}))
            .send()
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;

    assert_eq!(detail, "This endpoint requires the admin key");
    assert_eq!(
        ledger(&db, "team_a").await,
        vec![("allocation".to_owned(), 10, 10)]
    );
    assert_eq!(allocated(&db, "team_a").await, 10);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn another_teams_key_gets_404_on_balance_transactions_and_check(db: PgPool) {
    let app = spawn_app(db).await;
    app.team_with_key("team_a", 10).await;
    let other_key = app.team_with_key("team_b", 10).await;
    let requests = [
        app.with_key(&other_key, Method::GET, "/api/credits/teams/team_a/balance"),
        app.with_key(
            &other_key,
            Method::GET,
            "/api/credits/teams/team_a/transactions",
        ),
        app.with_key(&other_key, Method::POST, "/api/credits/teams/team_a/check")
            .json(&json!({"credits_required": 1})),
    ];

    for request in requests {
        let detail = error_detail(request.send().await, StatusCode::NOT_FOUND).await;
        assert_eq!(detail, "Team 'team_a' not found");
    }
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
