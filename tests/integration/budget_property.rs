//! Property: whatever a client sends to /v1/chat/completions, the answer is 200, 400 or 402
//! (never a 5xx), no request is billed above its own reservation, and the team's recorded spend
//! never passes its budget.

use std::time::Duration;

use futures::future::join_all;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use reqwest::StatusCode;
use serde_json::{Map, Number, Value, json};
use sqlx::PgPool;

use crate::budget_bounds::{budget_state, chat};
use crate::helpers::stack::{eventually, spawn_stack};

/// Requests sent, in concurrent batches: enough to exhaust the budget, a few seconds to run.
const CASES: usize = 96;
const BATCH: usize = 16;

/// A JSON value for an output limit or `n`: absent, in range, extreme or of the wrong type.
fn crafted_number() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        (1u64..3_000).prop_map(|n| Some(json!(n))),
        any::<i64>().prop_map(|n| Some(json!(n))),
        any::<u64>().prop_map(|n| Some(json!(n))),
        Just(Some(json!(i64::MAX))),
        Just(Some(json!(200_000_000_000_000_000_u64))),
        any::<f64>().prop_map(|f| Some(Number::from_f64(f).map_or(Value::Null, Value::Number))),
        Just(Some(json!(1e20))),
        "[0-9]{1,20}".prop_map(|s| Some(Value::String(s))),
        any::<bool>().prop_map(|b| Some(json!(b))),
    ]
}

/// Message text: any Unicode (NUL included), repeated up to 40 times (about 10 KB).
fn content() -> impl Strategy<Value = Value> {
    let text = prop::collection::vec(prop_oneof![any::<char>(), Just('\0'), Just(' ')], 0..64)
        .prop_map(|chars| chars.into_iter().collect::<String>());
    (text, 1usize..40, any::<bool>()).prop_map(|(text, times, as_parts)| {
        let text = text.repeat(times);
        if as_parts {
            json!([{"type": "text", "text": text},
                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}])
        } else {
            Value::String(text)
        }
    })
}

fn request() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just("gpt-4"), Just("gpt-4o"), Just("mystery-model")],
        prop::collection::vec(content(), 1..4),
        crafted_number(),
        crafted_number(),
        prop_oneof![
            Just(None),
            (0u64..200).prop_map(|n| Some(json!(n))),
            crafted_number()
        ],
        any::<bool>(),
    )
        .prop_map(|(model, contents, max_tokens, max_completion, n, stream)| {
            let messages: Vec<Value> = contents
                .into_iter()
                .map(|content| json!({"role": "user", "content": content}))
                .collect();
            let mut body = Map::new();
            body.insert("model".into(), json!(model));
            body.insert("messages".into(), Value::Array(messages));
            body.insert("stream".into(), json!(stream));
            for (field, value) in [
                ("max_tokens", max_tokens),
                ("max_completion_tokens", max_completion),
                ("n", n),
            ] {
                if let Some(value) = value {
                    body.insert(field.into(), value);
                }
            }
            Value::Object(body)
        })
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn no_crafted_request_gets_a_5xx_or_spends_past_the_budget(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team(
            "team_prop",
            1,
            &[("Anything", &["gpt-4", "gpt-4o", "mystery-model"])],
        )
        .await;
    // Deterministic, so a failure reproduces; the failing body is in the message.
    let mut runner = TestRunner::deterministic();
    let strategy = request();
    let bodies: Vec<Value> = (0..CASES)
        .map(|_| strategy.new_tree(&mut runner).expect("a case").current())
        .collect();

    let mut statuses = Vec::new();
    for batch in bodies.chunks(BATCH) {
        let answers = join_all(batch.iter().map(|body| async {
            let response = chat(&stack, &key, body).await;
            let status = response.status();
            // Reading the whole body lets a stream finish and settle.
            let text = response.text().await.expect("body");
            (status, text)
        }))
        .await;
        for ((status, text), body) in answers.into_iter().zip(batch) {
            assert!(
                [
                    StatusCode::OK,
                    StatusCode::BAD_REQUEST,
                    StatusCode::PAYMENT_REQUIRED
                ]
                .contains(&status),
                "{status} for {body}: {text}"
            );
            statuses.push(status);
        }
        let (spend, reserved, budget) = budget_state(&db, "team_prop").await;
        assert!(
            spend + reserved <= budget,
            "{spend} + {reserved} > {budget}"
        );
    }

    let settled = eventually(Duration::from_secs(10), || async {
        budget_state(&db, "team_prop").await.1 == 0
    })
    .await;
    assert!(settled, "reservations left open");
    let (spend, _, budget) = budget_state(&db, "team_prop").await;
    assert!(spend <= budget, "spend {spend} above budget {budget}");
    stack.app.spend_written().await;
    let billed_above_estimate: i64 = sqlx::query_scalar(
        "select count(*) from spend_records where cost_micro_usd > reserved_micro_usd",
    )
    .fetch_one(&db)
    .await
    .expect("count");
    assert_eq!(billed_above_estimate, 0);
    let admitted = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    stack.app.spend_written().await;
    let recorded: i64 =
        sqlx::query_scalar("select count(*) from spend_records where status = 'recorded'")
            .fetch_one(&db)
            .await
            .expect("count");
    assert_eq!(recorded, i64::try_from(admitted).expect("small"));
    // The cases exercise all three answers, not just one.
    for expected in [
        StatusCode::OK,
        StatusCode::BAD_REQUEST,
        StatusCode::PAYMENT_REQUIRED,
    ] {
        assert!(
            statuses.contains(&expected),
            "no {expected} in {statuses:?}"
        );
    }
}
