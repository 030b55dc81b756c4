//! A batch never spends past the team's budget: each line's estimate is reserved when the
//! batch is validated, lines the budget cannot cover go to the error file as
//! `insufficient_quota`, the reservation holds against the team's other requests while the
//! batch runs, and what the lines did not spend comes back when it ends.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{file_lines, jsonl, spend, start, wait_for};
use crate::helpers::stack::spawn_stack;

/// A line of `model` asking for up to `max_tokens`.
fn costly_line(custom_id: &str, model: &str, max_tokens: u64) -> Value {
    json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}})
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn lines_past_the_budget_are_refused_and_the_rest_never_overspend(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    // 1 credit: a budget of $0.10 (100,000 micro-dollars). The slow model has no listed price,
    // so it is estimated at the unknown-model price ($10 / $30 per 1M tokens): a 500-token line
    // about 15,100 micro-dollars, so six fit and the seventh does not; small lines after it do.
    let key = stack
        .team(
            "team_budget",
            1,
            &[("SlowBig", &["slow-2000-gpt-4"]), ("Direct", &["gpt-4"])],
        )
        .await;
    let mut lines: Vec<Value> = (0..8)
        .map(|i| costly_line(&format!("big-{i}"), "SlowBig", 500))
        .collect();
    lines.extend((0..3).map(|i| costly_line(&format!("small-{i}"), "SlowBig", 10)));
    let batch_id = start(&stack, &key, &jsonl(&lines), "/v1/chat/completions").await;
    wait_for(&stack, &key, &batch_id, &["in_progress"]).await;

    // While the batch holds its reservation, a request the rest cannot cover is refused.
    let (_, reserved, _) = spend(&db, "team_budget").await;
    assert!(reserved > 90_000, "the batch reserved {reserved}");
    assert!(reserved <= 100_000, "reserved {reserved} past the budget");
    let refused = stack
            .app
            .with_key(&key, Method::POST, "/v1/chat/completions")
        .json(&json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), StatusCode::PAYMENT_REQUIRED);

    let ended = wait_for(&stack, &key, &batch_id, &["completed"]).await;
    let errors = file_lines(&stack, &key, &ended["error_file_id"]).await;
    assert!(!errors.is_empty(), "no line was refused: {ended}");
    assert!(
        errors
            .values()
            .all(|l| l["error"]["code"] == "insufficient_quota")
    );
    assert_eq!(
        errors.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["big-6", "big-7"]
    );
    let output = file_lines(&stack, &key, &ended["output_file_id"]).await;
    assert!(
        output.contains_key("small-0"),
        "a later, cheaper line did not run"
    );
    let (spent, reserved, recorded) = spend(&db, "team_budget").await;
    assert_eq!((spent, reserved), (recorded, 0));
    assert!(spent <= 100_000, "spent {spent} past the budget");
    let refused_calls: i64 = sqlx::query_scalar(
        "select count(*) from llm_calls c
         where c.team_id = 'team_budget' and c.error_code = 'insufficient_quota'
           and (c.budget_micro_usd is not null
                or exists (select 1 from llm_call_attempts a where a.call_id = c.call_id))",
    )
    .fetch_one(&db)
    .await
    .expect("refused");
    assert_eq!(refused_calls, 0, "a refused line kept a reservation or ran");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_team_without_budget_gets_every_line_in_the_error_file(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack.team("team_broke", 1, &[("Direct", &["gpt-4"])]).await;
    // Spend the whole budget first (as a /v1 request would have).
    sqlx::query("update credit_balances set spend_micro_usd = 100000 where team_id = 'team_broke'")
        .execute(&db)
        .await
        .expect("spend");
    let lines: Vec<Value> = (0..3)
        .map(|i| costly_line(&format!("l-{i}"), "gpt-4", 10))
        .collect();
    let batch_id = start(&stack, &key, &jsonl(&lines), "/v1/chat/completions").await;
    let ended = wait_for(&stack, &key, &batch_id, &["completed"]).await;
    assert_eq!(
        ended["request_counts"],
        json!({"total": 3, "completed": 0, "failed": 3})
    );
    assert!(ended["output_file_id"].is_null());
    let errors = file_lines(&stack, &key, &ended["error_file_id"]).await;
    assert_eq!(errors.len(), 3);
    let (spent, reserved, _) = spend(&db, "team_broke").await;
    assert_eq!((spent, reserved), (100_000, 0));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn lines_costing_more_than_estimated_stop_the_batch_before_it_spends_far_past_the_budget(
    db: PgPool,
) {
    let stack = spawn_stack(db.clone()).await;
    // Estimated at a few hundred micro-dollars each, but the upstream reports $0.05 a line: the
    // $0.10 budget covers two of them.
    let key = stack
        .team(
            "team_overrun",
            1,
            &[("Pricey", &["slow-1000-cost-50000-gpt"])],
        )
        .await;
    stack.app.limit_concurrent_calls("team_overrun", 1).await;
    let lines: Vec<Value> = (0..20)
        .map(|i| costly_line(&format!("l-{i}"), "Pricey", 1))
        .collect();
    let batch_id = start(&stack, &key, &jsonl(&lines), "/v1/chat/completions").await;
    let ended = wait_for(&stack, &key, &batch_id, &["completed"]).await;
    let errors = file_lines(&stack, &key, &ended["error_file_id"]).await;
    assert!(
        errors.len() >= 10,
        "only {} lines withdrawn: {ended}",
        errors.len()
    );
    assert!(
        errors
            .values()
            .all(|l| l["error"]["code"] == "insufficient_quota")
    );
    let ran = ended["request_counts"]["completed"]
        .as_i64()
        .expect("completed");
    let (spent, reserved, recorded) = spend(&db, "team_overrun").await;
    assert_eq!((spent, reserved), (recorded, 0));
    assert_eq!(
        spent,
        ran * 50_000,
        "the lines that ran are spent as reported"
    );
    assert!(ran <= 6, "{ran} lines ran on a budget that covers two");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_line_with_no_known_price_is_billed_at_its_estimate(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_unpriced", 10, &[("Plain", &["plain-model"])])
        .await;
    let lines: Vec<Value> = (0..2)
        .map(|i| costly_line(&format!("p-{i}"), "Plain", 5))
        .collect();
    let batch_id = start(&stack, &key, &jsonl(&lines), "/v1/chat/completions").await;
    wait_for(&stack, &key, &batch_id, &["completed"]).await;
    let (records, costs, estimates): (i64, i64, i64) = sqlx::query_as(
        "select count(*), sum(s.cost_micro_usd)::int8, sum(c.budget_micro_usd)::int8
         from spend_records s join llm_calls c on c.call_id = s.request_id
         where s.team_id = 'team_unpriced' and s.cost_source = 'default_price' and c.cost_micro_usd is null",
    )
    .fetch_one(&db)
    .await
    .expect("records");
    assert_eq!(records, 2);
    assert!(costs > 0);
    assert_eq!(costs, estimates);
    let (spent, reserved, recorded) = spend(&db, "team_unpriced").await;
    assert_eq!((spent, reserved, recorded), (costs, 0, costs));
}
