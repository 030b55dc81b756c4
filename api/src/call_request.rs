//! What an LLM call request may hold: the checks that make a typo a 400 before queueing, the
//! body sent upstream, and how a client asks for an asynchronous answer. The single-call and the
//! bulk routes share these.

use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::error::ApiError;

/// An LLM call: the model group, the messages and any other OpenAI chat parameter
/// (temperature, max_tokens, response_format, stream...), passed through. The model is chosen
/// by the group, never by the client.
#[derive(Deserialize, ToSchema)]
pub(crate) struct LlmCallRequest {
    pub model_group: String,
    /// At least one message; each an object with a string `role`.
    #[schema(value_type = Vec<ChatMessage>, min_items = 1)]
    pub messages: Value,
    pub purpose: Option<String>,
    /// The client's id for the call, unique within the job (1 to 256 characters).
    #[schema(min_length = 1, max_length = 256)]
    pub custom_id: Option<String>,
    #[serde(rename = "async", default)]
    pub respond_async: bool,
    /// Every other OpenAI chat parameter, passed through to the upstream.
    #[serde(flatten)]
    pub params: Map<String, Value>,
}

/// One chat message as the document describes it; `messages` is passed through as given.
#[derive(ToSchema)]
#[allow(dead_code)] // only its schema is used
pub(crate) struct ChatMessage {
    role: String,
    #[schema(value_type = Option<Object>)]
    content: Option<Value>,
}

impl LlmCallRequest {
    /// Checks the messages and the common parameters, so a typo is a 400 here rather than an
    /// upstream error after queueing.
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        if let Some(custom_id) = &self.custom_id
            && (custom_id.is_empty() || custom_id.chars().count() > 256)
        {
            return Err(ApiError::BadRequest(
                "custom_id must be 1 to 256 characters".into(),
            ));
        }
        check_messages(&self.messages)?;
        self.check_numbers()?;
        if self.respond_async && self.streaming() {
            return Err(ApiError::BadRequest(
                "stream and async cannot be combined".into(),
            ));
        }
        Ok(())
    }

    /// The sampling parameters in their ranges and the token bounds positive.
    fn check_numbers(&self) -> Result<(), ApiError> {
        let number = |field: &str, range: std::ops::RangeInclusive<f64>| -> Result<(), ApiError> {
            match self.params.get(field) {
                None | Some(Value::Null) => Ok(()),
                Some(value) => match value.as_f64() {
                    Some(n) if range.contains(&n) => Ok(()),
                    _ => Err(ApiError::BadRequest(format!(
                        "{field} must be a number between {} and {}",
                        range.start(),
                        range.end()
                    ))),
                },
            }
        };
        number("temperature", 0.0..=2.0)?;
        number("top_p", 0.0..=1.0)?;
        number("presence_penalty", -2.0..=2.0)?;
        number("frequency_penalty", -2.0..=2.0)?;
        for field in ["max_tokens", "max_completion_tokens"] {
            match self.params.get(field) {
                None | Some(Value::Null) => {}
                Some(value) if value.as_u64().is_some_and(|n| n >= 1) => {}
                Some(_) => {
                    return Err(ApiError::BadRequest(format!(
                        "{field} must be a positive integer"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether the client asked for server-sent events (`"stream": true`).
    pub(crate) fn streaming(&self) -> bool {
        self.params.get("stream").and_then(Value::as_bool) == Some(true)
    }

    /// The body sent upstream: the client's parameters and messages, without what the service
    /// decides (the model, streaming).
    pub(crate) fn upstream_body(&self) -> Value {
        let mut params: Map<String, Value> = self.params.clone();
        params.remove("model");
        params.remove("stream");
        params.remove("stream_options");
        params.remove("async");
        params.insert("messages".into(), self.messages.clone());
        Value::Object(params)
    }
}

/// At least one message, each an object with a string `role`.
fn check_messages(messages: &Value) -> Result<(), ApiError> {
    let Some(messages) = messages.as_array() else {
        return Err(ApiError::BadRequest(
            "messages must be an array of {role, content} objects".into(),
        ));
    };
    if messages.is_empty() {
        return Err(ApiError::BadRequest("messages must not be empty".into()));
    }
    for (index, message) in messages.iter().enumerate() {
        if message.get("role").and_then(Value::as_str).is_none() {
            return Err(ApiError::BadRequest(format!(
                "messages[{index}] needs a string 'role'"
            )));
        }
    }
    Ok(())
}

/// Whether a `Prefer` header asks for `respond-async`.
pub fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
        })
}

/// The client's request id (`X-Request-Id`), recorded on the calls it creates.
pub fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-request-id").and_then(|v| v.to_str().ok())
}

/// The database's refusal of a `custom_id` already used in the job, if the violated constraint
/// is that one.
pub fn custom_id_taken(constraint: &str) -> bool {
    constraint == "llm_calls_job_custom_id_key"
}
