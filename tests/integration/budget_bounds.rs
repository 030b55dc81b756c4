//! The /v1 budget's estimate: crafted output limits are refused before anything is reserved, and
//! the reservation of an ordinary request is a tight upper bound of its cost.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::ok_json;
use crate::helpers::stack::{Stack, spawn_stack};

pub async fn chat(stack: &Stack, key: &str, body: &Value) -> reqwest::Response {
    stack
        .app
        .with_key(key, Method::POST, "/v1/chat/completions")
        .json(body)
        .send()
        .await
        .expect("request sent")
}

/// (spend, reserved, budget) of a team, in micro-dollars.
pub async fn budget_state(db: &PgPool, team_id: &str) -> (i64, i64, i64) {
    sqlx::query_as(
        "select spend_micro_usd, budget_reserved_micro_usd, credits_allocated * 100000
         from credit_balances where team_id = $1",
    )
    .bind(team_id)
    .fetch_one(db)
    .await
    .expect("balance")
}

/// (spend, reserved by requests) of a team: the reservation beyond its budget slices (the unused
/// budget API processes hold for it, which goes back when idle).
pub async fn spend_and_open(db: &PgPool, team_id: &str) -> (i64, i64) {
    sqlx::query_as(
        "select spend_micro_usd, budget_reserved_micro_usd
                - coalesce((select sum(s.reserved_micro_usd) from budget_slices s where s.team_id = b.team_id), 0)::int8
         from credit_balances b where team_id = $1",
    )
    .bind(team_id)
    .fetch_one(db)
    .await
    .expect("balance")
}

/// A team whose only group holds `models`, with `config` on each of them.
pub async fn team_with_config(
    stack: &Stack,
    team_id: &str,
    credits: i64,
    models: &[&str],
    config: Value,
) -> String {
    let models: Vec<(&str, Value)> = models.iter().map(|m| (*m, config.clone())).collect();
    stack
        .team_with_models(team_id, credits, &format!("group_{team_id}"), &models)
        .await
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn crafted_max_tokens_near_the_budget_admit_nothing_and_spend_nothing(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack.team("team_ov", 1, &[("Overflow", &["gpt-4"])]).await;
    // $0.095 of the $0.10 budget already spent.
    sqlx::query("update credit_balances set spend_micro_usd = 95000 where team_id = 'team_ov'")
        .execute(&db)
        .await
        .expect("spend");
    let crafted = [
        json!(i64::MAX),
        json!(200_000_000_000_000_000_u64),
        json!(u64::MAX),
        json!(1e20),
        json!(2e17),
        json!(100.0),
        json!("9"),
        json!(-1),
        json!(0),
        json!(131_073),
        json!(true),
    ];
    let bodies: Vec<Value> = (0..200)
        .map(|i| {
            let field = if i % 2 == 0 { "max_tokens" } else { "max_completion_tokens" };
            let mut body = json!({"model": "gpt-4", "messages": [{"role": "user", "content": "spend it all"}]});
            body[field] = crafted[i % crafted.len()].clone();
            // Valid but too expensive for what is left: refused by the budget instead.
            if i % 10 == 9 {
                body = json!({"model": "gpt-4", "max_tokens": 131_072, "n": 128,
                              "messages": [{"role": "user", "content": "spend it all"}]});
            }
            body
        })
        .collect();

    let responses = join_all(bodies.iter().map(|body| chat(&stack, &key, body))).await;

    let (mut invalid, mut over_budget) = (0, 0);
    for (response, body) in responses.into_iter().zip(&bodies) {
        let status = response.status();
        let error: Value = response.json().await.expect("json");
        match status {
            StatusCode::BAD_REQUEST => {
                invalid += 1;
                let param = error["error"]["param"].as_str().expect("param");
                assert!(body.get(param).is_some(), "{error} for {body}");
                assert_eq!(error["error"]["type"], "invalid_request_error");
                assert!(
                    error["error"]["message"]
                        .as_str()
                        .expect("message")
                        .contains(param)
                );
            }
            StatusCode::PAYMENT_REQUIRED => over_budget += 1,
            other => panic!("{other} for {body}: {error}"),
        }
    }
    assert_eq!((invalid, over_budget), (180, 20));
    assert_eq!(
        stack.llm.total_requests(),
        0,
        "nothing reached the upstream"
    );
    let (spend, reserved, budget) = budget_state(&db, "team_ov").await;
    assert_eq!((spend, reserved), (95_000, 0));
    assert!(spend + reserved <= budget);
    stack.app.spend_written().await;
    let records: i64 = sqlx::query_scalar("select count(*) from spend_records")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(records, 0);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_four_kilobyte_prompt_to_gpt_4_fits_a_ten_cent_budget_with_a_tight_reservation(
    db: PgPool,
) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack.team("team_4k", 1, &[("Reports", &["gpt-4"])]).await;
    let sentences = [
        "Revenue grew eleven percent over the quarter, driven by the new subscription tier. ",
        "Operating costs rose as the team hired twelve engineers and opened a second office. ",
        "Churn fell to two percent after the onboarding flow was rewritten in September. ",
        "The board asked for a plan to reach break-even before the end of next year. ",
    ];
    let prompt: String = sentences.iter().cycle().take(50).copied().collect();
    assert!(prompt.len() >= 4_000, "{}", prompt.len());
    let body = json!({"model": "gpt-4", "max_tokens": 100, "messages": [
        {"role": "system", "content": "You summarize company reports."},
        {"role": "user", "content": prompt}]});

    let completion = ok_json(Ok(chat(&stack, &key, &body).await)).await;

    assert_eq!(completion["object"], "chat.completion");
    stack.app.spend_written().await;
    let (reserved, cost, prompt_tokens): (i64, i64, i64) = sqlx::query_as(
        "select reserved_micro_usd, cost_micro_usd, prompt_tokens from spend_records where team_id = 'team_4k'",
    )
    .fetch_one(&db)
    .await
    .expect("record");
    assert!(prompt_tokens < 1_000, "{prompt_tokens} tokens");
    assert!(
        cost <= reserved,
        "cost {cost} above its reservation {reserved}"
    );
    assert!(
        reserved * 2 <= cost * 3,
        "reserved {reserved} is more than 1.5x the cost {cost}"
    );
    let (spend, open) = spend_and_open(&db, "team_4k").await;
    assert_eq!((spend, open), (cost, 0));
    assert!(spend <= budget_state(&db, "team_4k").await.2);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_group_config_sets_the_output_limit_and_n_multiplies_the_reservation(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = team_with_config(
        &stack,
        "team_lim",
        10,
        &["gpt-3.5-turbo"],
        json!({"max_output_tokens": 4096}),
    )
    .await;
    let body = |max_tokens: u64, n: Value| {
        json!({"model": "gpt-3.5-turbo", "max_tokens": max_tokens, "n": n,
               "messages": [{"role": "user", "content": "count to three"}]})
    };

    let above = chat(&stack, &key, &body(4097, json!(1))).await;
    let too_many = chat(&stack, &key, &body(10, json!(129))).await;
    let fractional = chat(&stack, &key, &body(10, json!(1.5))).await;
    let one = chat(&stack, &key, &body(4096, json!(1))).await;
    let three = chat(&stack, &key, &body(4096, json!(3))).await;
    // Without max_tokens, the configured limit is reserved.
    let unset = chat(
        &stack,
        &key,
        &json!({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "count to three"}]}),
    )
    .await;

    for (response, param) in [(above, "max_tokens"), (too_many, "n"), (fractional, "n")] {
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["error"]["param"], param, "{error}");
    }
    assert_eq!(one.status(), StatusCode::OK);
    assert_eq!(three.status(), StatusCode::OK);
    assert_eq!(unset.status(), StatusCode::OK);
    stack.app.spend_written().await;
    let reserved: Vec<i64> = sqlx::query_scalar(
        "select reserved_micro_usd from spend_records where team_id = 'team_lim' order by request_id",
    )
    .fetch_all(&db)
    .await
    .expect("records");
    // gpt-3.5-turbo output: $1.50 per 1M tokens; two more choices of 4,096 tokens each.
    assert_eq!(reserved.len(), 3);
    assert_eq!(reserved[1] - reserved[0], 2 * 4096 * 3 / 2);
    assert_eq!(reserved[2], reserved[0]);
    let (spend, open) = spend_and_open(&db, "team_lim").await;
    let budget = budget_state(&db, "team_lim").await.2;
    assert_eq!(open, 0);
    assert!(spend > 0 && spend <= budget);
    // The request without a limit was sent with the one it was reserved for.
    let sent = stack.llm.requests();
    let unset_sent = &sent
        .last()
        .expect("three requests reached the upstream")
        .body;
    assert_eq!(unset_sent["max_completion_tokens"], 4096, "{unset_sent}");
    assert!(unset_sent.get("max_tokens").is_none());
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_request_without_an_output_limit_is_held_to_the_default_it_was_reserved_for(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack.team("team_unset", 10, &[("Chat", &["gpt-4o"])]).await;
    let prompt = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let with_limit = json!({"model": "gpt-4o", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]});

    assert_eq!(chat(&stack, &key, &prompt).await.status(), StatusCode::OK);
    assert_eq!(
        chat(&stack, &key, &with_limit).await.status(),
        StatusCode::OK
    );

    let sent: Vec<Value> = stack.llm.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["max_completion_tokens"], 1024, "{}", sent[0]);
    assert_eq!(sent[1]["max_tokens"], 50);
    assert!(
        sent[1].get("max_completion_tokens").is_none(),
        "{}",
        sent[1]
    );
    stack.app.spend_written().await;
    let reserved: Vec<i64> = sqlx::query_scalar(
        "select reserved_micro_usd from spend_records where team_id = 'team_unset' order by request_id",
    )
    .fetch_all(&db)
    .await
    .expect("records");
    // gpt-4o output: $10 per 1M tokens, 1,024 tokens -> at least $0.01024 reserved.
    assert!(reserved[0] >= 10_240, "{reserved:?}");
    assert!(reserved[1] < 10_240 / 10, "{reserved:?}");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_budget_beyond_bigint_admits_requests_instead_of_failing(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack.team("team_big", 1, &[("Big", &["gpt-4o"])]).await;
    // credits_allocated x $0.10 in micro-dollars no longer fits a bigint.
    sqlx::query(
        "update credit_balances set credits_allocated = 9223372036854775807 where team_id = 'team_big'",
    )
    .execute(&db)
    .await
    .expect("credits");
    let body = json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});

    let response = chat(&stack, &key, &body).await;

    assert_eq!(response.status(), StatusCode::OK);
    stack.app.spend_written().await;
    let (status, cost): (String, i64) = sqlx::query_as(
        "select status, cost_micro_usd from spend_records where team_id = 'team_big'",
    )
    .fetch_one(&db)
    .await
    .expect("record");
    assert_eq!(status, "recorded");
    assert_eq!(spend_and_open(&db, "team_big").await, (cost, 0));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_absurd_reported_cost_is_recorded_saturated_and_closes_the_budget(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    // The upstream reports $18 trillion: more micro-dollars than a bigint holds.
    let model = "cost-18446744073709551615";
    let key = stack.team("team_abs", 1, &[("Absurd", &[model])]).await;
    sqlx::query("update credit_balances set spend_micro_usd = 1000 where team_id = 'team_abs'")
        .execute(&db)
        .await
        .expect("spend");
    let body =
        json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});

    let first = chat(&stack, &key, &body).await;
    let second = chat(&stack, &key, &body).await;

    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::PAYMENT_REQUIRED);
    let (spend, reserved, _) = budget_state(&db, "team_abs").await;
    assert_eq!((spend, reserved), (i64::MAX, 0));
    stack.app.spend_written().await;
    let cost: i64 =
        sqlx::query_scalar("select cost_micro_usd from spend_records where team_id = 'team_abs'")
            .fetch_one(&db)
            .await
            .expect("record");
    assert_eq!(cost, i64::MAX);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_large_prompt_is_estimated_in_tokens_above_its_cost(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_big_prompt", 1, &[("Mini", &["gpt-4o-mini"])])
        .await;
    // About 200 KB: estimated off the request path's async workers, and far from its byte count.
    let prompt =
        "Churn fell to two percent after the onboarding flow was rewritten. ".repeat(3_000);
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 10,
                      "messages": [{"role": "user", "content": prompt}]});

    let response = chat(&stack, &key, &body).await;

    assert_eq!(response.status(), StatusCode::OK);
    stack.app.spend_written().await;
    let (reserved, cost, prompt_tokens): (i64, i64, i64) = sqlx::query_as(
        "select reserved_micro_usd, cost_micro_usd, prompt_tokens from spend_records where team_id = 'team_big_prompt'",
    )
    .fetch_one(&db)
    .await
    .expect("record");
    assert!(prompt_tokens * 3 < i64::try_from(prompt.len()).expect("small"));
    assert!(
        cost <= reserved && reserved * 2 <= cost * 3,
        "{reserved} vs {cost}"
    );
    assert_eq!(spend_and_open(&db, "team_big_prompt").await, (cost, 0));
}
