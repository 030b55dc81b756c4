//! LLM calls: fallback through the model group, attempts recorded, sync and async answers,
//! parameters passed through, costs.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::app::{error_detail, ok_json};
use crate::helpers::stack::{StackOptions, chat, eventually, spawn_stack, spawn_stack_with};

async fn attempts(db: &PgPool, call_id: &str) -> Vec<(String, Option<i32>, String)> {
    sqlx::query_as(
        "select model_name, http_status, outcome from llm_call_attempts where call_id = $1::uuid order by attempt_id",
    )
    .bind(call_id)
    .fetch_all(db)
    .await
    .expect("attempts")
}

async fn call_id_of_job(db: &PgPool, job_id: &str) -> String {
    sqlx::query_scalar("select call_id::text from llm_calls where job_id = $1::uuid")
        .bind(job_id)
        .fetch_one(db)
        .await
        .expect("call")
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn falls_back_on_500_429_and_context_length_400_recording_every_attempt(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team(
            "team_fb",
            5,
            &[("Resilient", &["fail-500", "fail-429", "ctx-400", "gpt-4o"])],
        )
        .await;
    let job_id = stack.create_job(&key, "team_fb").await;

    let result = ok_json(Ok(stack
        .llm_call(&key, &job_id, chat("Resilient", "hello"))
        .await))
    .await;

    assert!(
        result["response"]["content"]
            .as_str()
            .expect("content")
            .starts_with("echo: ")
    );
    let call_id = result["call_id"].as_str().expect("call_id");
    assert_eq!(
        attempts(&db, call_id).await,
        vec![
            ("fail-500".to_owned(), Some(500), "fallback".to_owned()),
            ("fail-429".to_owned(), Some(429), "fallback".to_owned()),
            ("ctx-400".to_owned(), Some(400), "fallback".to_owned()),
            ("gpt-4o".to_owned(), Some(200), "succeeded".to_owned()),
        ]
    );
    let model_used: String =
        sqlx::query_scalar("select model_used from llm_calls where call_id = $1::uuid")
            .bind(call_id)
            .fetch_one(&db)
            .await
            .expect("model");
    assert_eq!(model_used, "gpt-4o");
    for model in ["fail-500", "fail-429", "ctx-400", "gpt-4o"] {
        assert_eq!(stack.llm.count_for_model(model), 1, "{model}");
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn falls_back_when_a_model_times_out(db: PgPool) {
    let options = StackOptions {
        llm_timeout_secs: 1,
        ..StackOptions::default()
    };
    let stack = spawn_stack_with(db.clone(), options).await;
    let key = stack
        .team("team_to", 5, &[("Timeouts", &["slow-3000", "gpt-4o-mini"])])
        .await;
    let job_id = stack.create_job(&key, "team_to").await;

    let result = ok_json(Ok(stack
        .llm_call(&key, &job_id, chat("Timeouts", "hi"))
        .await))
    .await;

    let recorded = attempts(&db, result["call_id"].as_str().expect("call_id")).await;
    assert_eq!(recorded.len(), 2);
    assert_eq!(
        recorded[0],
        ("slow-3000".to_owned(), None, "fallback".to_owned())
    );
    assert_eq!(recorded[1].0, "gpt-4o-mini");
    let error: Option<String> =
        sqlx::query_scalar("select error from llm_call_attempts where model_name = 'slow-3000'")
            .fetch_one(&db)
            .await
            .expect("error");
    assert!(error.expect("error text").contains("timed out"));
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_plain_client_error_stops_the_chain_with_502(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_stop", 5, &[("Strict", &["bad-400", "gpt-4o"])])
        .await;
    let job_id = stack.create_job(&key, "team_stop").await;

    let detail = error_detail(
        Ok(stack.llm_call(&key, &job_id, chat("Strict", "hi")).await),
        StatusCode::BAD_GATEWAY,
    )
    .await;

    assert_eq!(detail, "LLM call failed: Invalid value for temperature");
    assert_eq!(stack.llm.count_for_model("gpt-4o"), 0);
    let call_id = call_id_of_job(&db, &job_id).await;
    assert_eq!(
        attempts(&db, &call_id).await,
        vec![("bad-400".to_owned(), Some(400), "fatal".to_owned())]
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn every_model_failing_gives_502_with_the_last_error(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_down", 5, &[("Down", &["fail-500", "fail-429"])])
        .await;
    let job_id = stack.create_job(&key, "team_down").await;

    let detail = error_detail(
        Ok(stack.llm_call(&key, &job_id, chat("Down", "hi")).await),
        StatusCode::BAD_GATEWAY,
    )
    .await;

    assert_eq!(detail, "LLM call failed: Rate limit exceeded");
    let status: String = sqlx::query_scalar("select status from llm_calls where job_id = $1::uuid")
        .bind(&job_id)
        .fetch_one(&db)
        .await
        .expect("status");
    assert_eq!(status, "failed");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn async_calls_answer_202_and_are_polled_to_their_result(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_async", 5, &[("Slow", &["slow-300"])])
        .await;
    let job_id = stack.create_job(&key, "team_async").await;

    let mut body = chat("Slow", "later");
    body["async"] = json!(true);
    let accepted = stack.llm_call(&key, &job_id, body).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let accepted: Value = accepted.json().await.expect("json");
    assert_eq!(accepted["status"], "queued");
    let call_id = accepted["call_id"].as_str().expect("call_id").to_owned();
    let preferred = stack
        .app
        .with_key(&key, Method::POST, &format!("/api/jobs/{job_id}/llm-call"))
        .header("Prefer", "respond-async")
        .json(&chat("Slow", "also later"))
        .send()
        .await
        .expect("request");
    assert_eq!(preferred.status(), StatusCode::ACCEPTED);

    let path = format!("/api/jobs/{job_id}/calls/{call_id}");
    let finished = eventually(Duration::from_secs(10), || async {
        let call = ok_json(stack.app.with_key(&key, Method::GET, &path).send().await).await;
        call["status"] == "succeeded"
    })
    .await;

    assert!(finished);
    let call = ok_json(stack.app.with_key(&key, Method::GET, &path).send().await).await;
    assert_eq!(call["response"]["content"], "echo: later");
    assert_eq!(call["metadata"]["model_group"], "Slow");
    assert!(call["metadata"]["tokens_used"].as_i64().expect("tokens") > 0);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_sync_call_past_its_wait_gets_504_and_still_finishes(db: PgPool) {
    let options = StackOptions {
        sync_call_timeout: Duration::from_millis(300),
        ..StackOptions::default()
    };
    let stack = spawn_stack_with(db.clone(), options).await;
    let key = stack.team("team_504", 5, &[("Slow", &["slow-1000"])]).await;
    let job_id = stack.create_job(&key, "team_504").await;

    let detail = error_detail(
        Ok(stack.llm_call(&key, &job_id, chat("Slow", "wait")).await),
        StatusCode::GATEWAY_TIMEOUT,
    )
    .await;

    let call_id = call_id_of_job(&db, &job_id).await;
    assert!(detail.contains(&call_id), "{detail}");
    let finished = eventually(Duration::from_secs(10), || async {
        let status: String =
            sqlx::query_scalar("select status from llm_calls where call_id = $1::uuid")
                .bind(&call_id)
                .fetch_one(&db)
                .await
                .expect("status");
        status == "succeeded"
    })
    .await;
    assert!(finished);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn chat_parameters_and_the_upstream_key_pass_through(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack.team("team_p", 5, &[("ChatAgent", &["gpt-4o"])]).await;
    let job_id = stack.create_job(&key, "team_p").await;
    let body = json!({
        "model_group": "ChatAgent",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "purpose": "params",
        "temperature": 0.2,
        "max_tokens": 50,
        "top_p": 0.9,
        "stop": ["\n"],
        "seed": 7,
        "user": "end-user-1",
        "response_format": {"type": "json_object"},
        "model": "client-must-not-choose",
    });

    ok_json(Ok(stack.llm_call(&key, &job_id, body).await)).await;

    let sent = stack.llm.requests().pop().expect("one request");
    assert_eq!(sent.model, "gpt-4o");
    assert_eq!(
        sent.authorization.as_deref(),
        Some("Bearer sk-upstream-test")
    );
    for field in [
        "temperature",
        "max_tokens",
        "top_p",
        "stop",
        "seed",
        "user",
        "response_format",
    ] {
        assert!(sent.body.get(field).is_some(), "{field} not passed through");
    }
    assert_eq!(sent.body["messages"][0]["content"], "be brief");
    assert!(sent.body.get("purpose").is_none() && sent.body.get("model_group").is_none());
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn cost_comes_from_the_litellm_header_else_from_the_price_table(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team(
            "team_cost",
            5,
            &[
                ("Header", &["cost-2500"]),
                ("Table", &["gpt-3.5-turbo"]),
                ("Unknown", &["mystery"]),
            ],
        )
        .await;
    let job_id = stack.create_job(&key, "team_cost").await;

    for group in ["Header", "Table", "Unknown"] {
        ok_json(Ok(stack
            .llm_call(&key, &job_id, chat(group, "price me please"))
            .await))
        .await;
    }

    let rows: Vec<(String, Option<i64>, i64, i64)> = sqlx::query_as(
        "select model_group, cost_micro_usd, prompt_tokens, completion_tokens from llm_calls order by created_at",
    )
    .fetch_all(&db)
    .await
    .expect("calls");
    assert_eq!(rows[0].1, Some(2_500));
    // gpt-3.5-turbo: $0.50 / $1.50 per 1M tokens, rounded to the micro-dollar.
    let expected = (rows[1].2 * 500_000 + rows[1].3 * 1_500_000 + 500_000) / 1_000_000;
    assert_eq!(rows[1].1, Some(expected));
    assert_eq!(rows[2].1, None, "an unknown model is not silently priced");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn calls_are_refused_for_groups_the_team_lacks_and_on_bad_input(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_in", 5, &[("ChatAgent", &["gpt-4o"])])
        .await;
    stack.app.create_group("Secret", &["gpt-4"]).await;
    let job_id = stack.create_job(&key, "team_in").await;

    let forbidden = error_detail(
        Ok(stack.llm_call(&key, &job_id, chat("Secret", "hi")).await),
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        forbidden,
        "Team 'team_in' does not have access to model group 'Secret'"
    );
    let missing = error_detail(
        Ok(stack.llm_call(&key, &job_id, chat("Nope", "hi")).await),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(missing, "Model group 'Nope' not found");
    for bad in [
        json!({"model_group": "ChatAgent"}),
        json!({"model_group": "ChatAgent", "messages": []}),
        json!({"model_group": "ChatAgent", "messages": "hi"}),
        json!({"model_group": "ChatAgent", "messages": [{"content": "no role"}]}),
        json!({"model_group": "ChatAgent", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
        json!({"model_group": "ChatAgent", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
    ] {
        error_detail(
            Ok(stack.llm_call(&key, &job_id, bad).await),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    error_detail(
        Ok(stack
            .llm_call(&key, "not-a-uuid", chat("ChatAgent", "hi"))
            .await),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let calls: i64 = sqlx::query_scalar("select count(*) from llm_calls")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(calls, 0);
    assert_eq!(stack.llm.total_requests(), 0);
}

/// Reads an SSE body into its `data:` payloads.
async fn sse_events(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.expect("body");
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn job_path_streaming_falls_back_before_the_first_byte_and_records_the_call(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_js", 3, &[("Streamy", &["fail-500", "chunkdelay-50"])])
        .await;
    let job_id = stack.create_job(&key, "team_js").await;
    let mut body = chat("Streamy", "stream this answer please");
    body["stream"] = json!(true);

    let response = stack.llm_call(&key, &job_id, body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    let events = sse_events(response).await;

    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let deltas: Vec<Value> = events[..events.len() - 2]
        .iter()
        .map(|e| serde_json::from_str(e).expect("json event"))
        .collect();
    assert!(deltas.len() > 1, "{events:?}");
    let text: String = deltas
        .iter()
        .map(|d| d["content"].as_str().expect("delta"))
        .collect();
    assert_eq!(text, "echo: stream this answer please");
    let last: Value = serde_json::from_str(&events[events.len() - 2]).expect("final event");
    assert_eq!(last["response"]["content"], text);
    assert_eq!(last["metadata"]["model_group"], "Streamy");
    assert!(last["metadata"]["tokens_used"].as_i64().expect("tokens") > 0);
    assert!(
        !events.iter().any(|e| e.contains("chunkdelay")),
        "the model name is not exposed"
    );
    let call_id = last["call_id"].as_str().expect("call_id");
    assert_eq!(
        attempts(&db, call_id).await,
        vec![
            ("fail-500".to_owned(), Some(500), "fallback".to_owned()),
            (
                "chunkdelay-50".to_owned(),
                Some(200),
                "succeeded".to_owned()
            ),
        ]
    );
    let (status, tokens, cost): (String, Option<i64>, Option<i64>) = sqlx::query_as(
        "select status, total_tokens, cost_micro_usd from llm_calls where call_id = $1::uuid",
    )
    .bind(call_id)
    .fetch_one(&db)
    .await
    .expect("call");
    assert_eq!(status, "succeeded");
    assert!(tokens.expect("tokens") > 0);
    assert!(
        cost.is_none(),
        "chunkdelay-50 has no known price, so no made-up cost"
    );
    let completion = ok_json(Ok(stack.complete(&key, &job_id, "completed").await)).await;
    assert_eq!(completion["costs"]["credit_applied"], true);
    assert_eq!(completion["costs"]["credits_remaining"], 2);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn job_path_streaming_with_every_model_failing_is_502(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_jf", 3, &[("Down", &["fail-503", "fail-500"])])
        .await;
    let job_id = stack.create_job(&key, "team_jf").await;
    let mut body = chat("Down", "hi");
    body["stream"] = json!(true);

    let detail = error_detail(
        Ok(stack.llm_call(&key, &job_id, body).await),
        StatusCode::BAD_GATEWAY,
    )
    .await;

    assert!(detail.starts_with("LLM call failed: "), "{detail}");
    let status: String = sqlx::query_scalar("select status from llm_calls where job_id = $1::uuid")
        .bind(&job_id)
        .fetch_one(&db)
        .await
        .expect("status");
    assert_eq!(status, "failed");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_call_keeps_the_request_id_it_was_submitted_with(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack.team("team_rid", 5, &[("Traced", &["gpt-4o"])]).await;
    let job = stack.create_job(&key, "team_rid").await;

    let given = stack
        .app
        .with_key(&key, Method::POST, &format!("/api/jobs/{job}/llm-call"))
        .header("x-request-id", "trace-7f3a")
        .json(&chat("Traced", "hello"))
        .send()
        .await
        .expect("request");
    assert_eq!(given.headers()["x-request-id"], "trace-7f3a");
    ok_json(Ok(given)).await;
    // Without one, the API makes one up, answers it, and stores that same id.
    let generated = stack.llm_call(&key, &job, chat("Traced", "again")).await;
    let generated_id = generated.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    ok_json(Ok(generated)).await;

    let stored: Vec<Option<String>> = sqlx::query_scalar(
        "select request_id from llm_calls where job_id = $1::uuid order by created_at",
    )
    .bind(&job)
    .fetch_all(&db)
    .await
    .expect("calls");
    assert_eq!(
        stored,
        vec![Some("trace-7f3a".to_owned()), Some(generated_id)]
    );
}

/// A notifying transaction holds a database-wide lock through its commit, so the worker notifies
/// only for calls a request is waiting on (synchronous ones), not for asynchronous calls.
#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn only_calls_a_request_waits_for_are_notified_when_finished(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = stack
        .team("team_notify", 5, &[("Quick", &["gpt-4o"])])
        .await;
    let job_id = stack.create_job(&key, "team_notify").await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&db)
        .await
        .expect("listener");
    listener
        .listen(saasllm_shared::db::calls::CALL_FINISHED_CHANNEL)
        .await
        .expect("listen");

    let mut body = chat("Quick", "in the background");
    body["async"] = json!(true);
    let accepted: Value = stack
        .llm_call(&key, &job_id, body)
        .await
        .json()
        .await
        .expect("json");
    let async_id = accepted["call_id"].as_str().expect("call_id").to_owned();
    let path = format!("/api/jobs/{job_id}/calls/{async_id}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            let call = ok_json(stack.app.with_key(&key, Method::GET, &path).send().await).await;
            call["status"] == "succeeded"
        })
        .await
    );
    let answered = ok_json(Ok(stack
        .llm_call(&key, &job_id, chat("Quick", "waiting"))
        .await))
    .await;
    let sync_id = answered["call_id"].as_str().expect("call_id").to_owned();

    let mut notified = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await {
        notified.push(n.payload().to_owned());
    }
    assert_eq!(notified, vec![sync_id.clone()]);
    let flags: Vec<(String, bool)> = sqlx::query_as(
        "select call_id::text, notify_on_finish from llm_calls where job_id = $1::uuid order by created_at",
    )
    .bind(&job_id)
    .fetch_all(&db)
    .await
    .expect("flags");
    assert_eq!(flags, vec![(async_id, false), (sync_id, true)]);
}
