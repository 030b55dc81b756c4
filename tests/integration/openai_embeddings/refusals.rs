//! Embeddings refused before anything reaches the upstream: a model outside the team's groups
//! and the admin key (403), a request that could cost more than the budget (402), and invalid
//! bodies (OpenAI-shaped 400s). None records spend or leaves a reservation.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use super::{MODEL, embed, priced, spend_records};
use crate::helpers::fixtures::requests::openai_error;
use crate::helpers::fixtures::spend::spend_and_open_reservations;
use crate::helpers::stack::spawn_stack;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn refuses_models_outside_the_teams_groups_and_the_admin_key(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team_with_models(
            "team_m",
            10,
            "Embedder",
            &[("text-embedding-3-small", priced())],
        )
        .await;
    let body = r#"{"model": "text-embedding-3-large", "input": "hello"}"#;

    let refused = openai_error(embed(&stack, &key, body).await, StatusCode::FORBIDDEN).await;
    let admin = stack
        .app
        .admin(Method::POST, "/v1/embeddings")
        .header("content-type", "application/json")
        .body(r#"{"model": "text-embedding-3-small", "input": "hello"}"#)
        .send()
        .await
        .expect("sent");
    let admin = openai_error(admin, StatusCode::FORBIDDEN).await;

    assert_eq!(refused["type"], "permission_denied");
    assert_eq!(refused["code"], "model_not_allowed");
    let message = refused["message"].as_str().expect("message");
    assert!(
        message.contains("not allowed") && message.contains("text-embedding-3-small"),
        "{message}"
    );
    assert_eq!(admin["type"], "permission_denied");
    assert_eq!(stack.llm.total_requests(), 0);
    assert!(spend_records(&stack, "team_m").await.is_empty());
    assert_eq!(spend_and_open_reservations(&stack, "team_m").await, (0, 0));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn refuses_a_request_that_could_cost_more_than_the_budget(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    // 1 credit x $0.10 = $0.10, and every input token is priced at $0.10: a two-token input
    // could cost $0.20.
    let key = stack
        .team_with_models(
            "team_poor",
            1,
            "Dear",
            &[(
                "text-embedding-3-small",
                json!({"input_cost_per_million": 100_000, "output_cost_per_million": 0}),
            )],
        )
        .await;

    let refused = openai_error(
        embed(
            &stack,
            &key,
            r#"{"model": "text-embedding-3-small", "input": "hello there, world"}"#,
        )
        .await,
        StatusCode::PAYMENT_REQUIRED,
    )
    .await;

    assert_eq!(refused["type"], "insufficient_quota");
    assert_eq!(refused["code"], "budget_exceeded");
    assert!(
        refused["message"]
            .as_str()
            .expect("message")
            .contains("Budget exceeded for team 'team_poor'"),
        "{refused}"
    );
    assert_eq!(stack.llm.total_requests(), 0);
    assert!(spend_records(&stack, "team_poor").await.is_empty());
    assert_eq!(
        spend_and_open_reservations(&stack, "team_poor").await,
        (0, 0)
    );
}

// Long only because of its table of cases.
#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn invalid_bodies_get_openai_shaped_400s(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team_with_models(
            "team_bad",
            10,
            "Embedder",
            &[("text-embedding-3-small", priced())],
        )
        .await;
    let bad_inputs = [
        r#"null"#,
        r#"[]"#,
        r#""""#,
        r#"42"#,
        r#"[[1, "2"]]"#,
        r#"[["a"]]"#,
        r#"["a", 1]"#,
        r#"[{"text": "a"}]"#,
        r#"[-1, 2]"#,
        r#"[1.5]"#,
        r#"[[]]"#,
    ];
    // (body, the field at fault if one is named)
    let mut cases: Vec<(String, Option<&str>)> = bad_inputs
        .iter()
        .map(|input| {
            (
                format!(r#"{{"model": "{MODEL}", "input": {input}}}"#),
                Some("input"),
            )
        })
        .collect();
    cases.extend([
        (format!(r#"{{"model": "{MODEL}"}}"#), Some("input")),
        (r#"{"input": "hello"}"#.to_owned(), Some("model")),
        (
            r#"{"model": 42, "input": "hello"}"#.to_owned(),
            Some("model"),
        ),
        (
            format!(r#"{{"model": "{MODEL}\u0000", "input": "hello"}}"#),
            Some("model"),
        ),
        (r#""just a string""#.to_owned(), None),
        (
            format!(r#"[{{"model": "{MODEL}", "input": "hello"}}]"#),
            None,
        ),
        (format!(r#"{{"model": "{MODEL}", "input": "#), None),
        (String::new(), None),
    ]);
    let too_many = json!({"model": MODEL, "input": vec!["a"; 2_049]});

    let mut answers = Vec::new();
    for (body, _) in &cases {
        answers.push(embed(&stack, &key, body).await);
    }
    let too_many = embed(&stack, &key, &too_many.to_string()).await;

    for (response, (body, field)) in answers.into_iter().zip(&cases) {
        let error = openai_error(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(error["type"], "invalid_request_error", "{body}: {error}");
        if let Some(field) = field {
            assert_eq!(error["param"], *field, "{body}: {error}");
        }
    }
    let too_many = openai_error(too_many, StatusCode::BAD_REQUEST).await;
    assert!(
        too_many["message"]
            .as_str()
            .expect("message")
            .contains("2048"),
        "{too_many}"
    );
    assert_eq!(
        stack.llm.total_requests(),
        0,
        "nothing reached the upstream"
    );
    assert!(spend_records(&stack, "team_bad").await.is_empty());
    assert_eq!(
        spend_and_open_reservations(&stack, "team_bad").await,
        (0, 0)
    );
}
