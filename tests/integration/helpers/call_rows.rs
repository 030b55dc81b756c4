//! Calls written straight through the data layer, for the tests of its statements.

use saasllm_shared::db::calls::{self, CallResult, Insertion, NewCall};
use saasllm_shared::domain::status::CallStatus;
use serde_json::{Value, json};
use uuid::Uuid;

/// The request body each such call carries.
pub fn hello_request() -> Value {
    json!({"messages": [{"role": "user", "content": "hello"}]})
}

/// A call of the team's job in its `ChatAgent` group, with no purpose or request id, and no
/// request waiting for it.
pub fn chat_agent_call<'a>(
    job_id: Uuid,
    team_id: &'a str,
    model_group_id: Uuid,
    request: &'a Value,
    custom_id: Option<&'a str>,
) -> NewCall<'a> {
    NewCall {
        job_id,
        team_id,
        model_group_id,
        model_group: "ChatAgent",
        purpose: None,
        request,
        request_id: None,
        custom_id,
        notify_on_finish: false,
    }
}

/// Inserts the call into its open job; the call's id.
pub async fn insert_call(db: impl sqlx::PgExecutor<'_>, call: &NewCall<'_>) -> Uuid {
    match calls::insert_into_open_job(db, call)
        .await
        .expect("insert call")
    {
        Insertion::Inserted(call_id) => call_id,
        other => panic!("call not inserted: {other:?}"),
    }
}

/// A two-token answer from gpt-3.5-turbo that cost 10 micro-dollars.
pub fn succeeded_result(
    prompt_tokens: i64,
    completion_tokens: i64,
    cost_micro_usd: i64,
) -> CallResult<'static> {
    CallResult {
        status: CallStatus::Succeeded,
        model_used: Some("gpt-3.5-turbo"),
        response_content: Some("hi"),
        finish_reason: Some("stop"),
        response: None,
        prompt_tokens: Some(prompt_tokens),
        completion_tokens: Some(completion_tokens),
        total_tokens: Some(prompt_tokens + completion_tokens),
        cost_micro_usd: Some(cost_micro_usd),
        latency_ms: 5,
        error: None,
    }
}
