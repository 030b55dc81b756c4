//! The OpenAI-compatible upstream (LiteLLM proxy): one chat-completions (or embeddings) request,
//! its usage and cost, or an error that keeps the status and the start of the body.

use std::time::Duration;

use bytes::Bytes;

use saasllm_shared::config::LlmConfig;
use saasllm_shared::domain::money::MicroUsd;
use saasllm_shared::domain::pricing;
use saasllm_shared::domain::status::CallEndpoint;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use uuid::Uuid;

use crate::fallback::{self, Next};

/// Header carrying the id of the call a request belongs to, so upstream logs can be matched to
/// calls (and a call run twice at once would show).
pub const CALL_ID_HEADER: &str = "x-saasllm-call-id";

/// How much of an error body is kept.
const ERROR_BODY_LIMIT: usize = 2_048;

/// A client for `{LLM_BASE_URL}/v1/chat/completions` and `{LLM_BASE_URL}/v1/embeddings`.
#[derive(Clone)]
pub struct Upstream {
    client: reqwest::Client,
    chat_url: String,
    embeddings_url: String,
    api_key: Option<SecretString>,
}

/// A successful completion.
#[derive(Debug)]
pub struct Completion {
    pub content: Option<String>,
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    /// From `x-litellm-response-cost`, when the upstream reports it.
    pub reported_cost: Option<MicroUsd>,
    pub body: Value,
}

/// A failed attempt.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{message}")]
    Transport { message: String, timed_out: bool },
    #[error("{message}")]
    Status {
        status: u16,
        message: String,
        body: String,
        /// The upstream's `Retry-After` (or `retry-after-ms`), if it sent one.
        retry_after: Option<Duration>,
    },
    #[error("upstream answered something that is not a chat completion: {0}")]
    InvalidResponse(String),
    #[error("upstream answered something that is not an embeddings response: {0}")]
    InvalidEmbeddings(String),
}

impl UpstreamError {
    /// Whether the next model of the group should be tried.
    pub fn next(&self) -> Next {
        match self {
            UpstreamError::Transport { .. }
            | UpstreamError::InvalidResponse(_)
            | UpstreamError::InvalidEmbeddings(_) => Next::Fallback,
            UpstreamError::Status { status, body, .. } => fallback::classify_status(*status, body),
        }
    }

    /// Whether the same model may well answer if asked again shortly: a rate limit, a server
    /// error or a refused connection. A timeout is not retried on the same model (another wait
    /// of the full timeout is what cooldowns exist to avoid), nor is a request the model
    /// cannot serve.
    pub fn is_transient(&self) -> bool {
        match self {
            UpstreamError::Transport { timed_out, .. } => !timed_out,
            UpstreamError::Status { status, .. } => matches!(status, 429 | 500 | 502 | 503 | 504),
            UpstreamError::InvalidResponse(_) | UpstreamError::InvalidEmbeddings(_) => false,
        }
    }

    /// Whether the request timed out.
    pub fn timed_out(&self) -> bool {
        matches!(
            self,
            UpstreamError::Transport {
                timed_out: true,
                ..
            }
        )
    }

    /// How long the upstream asked to wait before asking again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, if the upstream answered.
    pub fn http_status(&self) -> Option<i32> {
        match self {
            UpstreamError::Status { status, .. } => Some(i32::from(*status)),
            _ => None,
        }
    }
}

impl Upstream {
    pub fn new(config: &LlmConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(256)
            .build()?;
        let base = config.base_url.trim_end_matches('/');
        Ok(Self {
            client,
            chat_url: format!("{base}{}", CallEndpoint::Chat.path()),
            embeddings_url: format!("{base}{}", CallEndpoint::Embeddings.path()),
            api_key: config.api_key.clone(),
        })
    }

    /// Sends a chat-completions body as it is and returns the raw response (for passthrough).
    pub async fn post(&self, body: &Value) -> reqwest::Result<reqwest::Response> {
        self.request(CallEndpoint::Chat, body).send().await
    }

    /// Sends an embeddings body as it is and returns the raw response (for passthrough).
    pub async fn post_embeddings(&self, body: &Value) -> reqwest::Result<reqwest::Response> {
        self.request(CallEndpoint::Embeddings, body).send().await
    }

    fn request(&self, endpoint: CallEndpoint, body: &Value) -> reqwest::RequestBuilder {
        let url = match endpoint {
            CallEndpoint::Chat => &self.chat_url,
            CallEndpoint::Embeddings => &self.embeddings_url,
        };
        let mut request = self.client.post(url).json(body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        request
    }

    /// Sends one chat-completions request of a call.
    pub async fn chat(&self, body: &Value, call_id: Uuid) -> Result<Completion, UpstreamError> {
        let (bytes, reported_cost) = self.send_whole(CallEndpoint::Chat, body, call_id).await?;
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| UpstreamError::InvalidResponse(e.to_string()))?;
        let choice = body
            .get("choices")
            .and_then(|c| c.get(0))
            .ok_or_else(|| UpstreamError::InvalidResponse("no choices".into()))?;
        let usage = body.get("usage");
        let tokens = |field: &str| usage.and_then(|u| u.get(field)).and_then(Value::as_i64);
        Ok(Completion {
            content: choice
                .pointer("/message/content")
                .and_then(Value::as_str)
                .map(str::to_owned),
            finish_reason: choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .map(str::to_owned),
            prompt_tokens: tokens("prompt_tokens"),
            completion_tokens: tokens("completion_tokens"),
            total_tokens: tokens("total_tokens"),
            reported_cost,
            body,
        })
    }

    /// Sends one streamed chat-completions request of a call and waits for the first piece of
    /// its body: until then the stream can still be given up for another attempt or model.
    pub async fn open_stream(
        &self,
        body: &Value,
        call_id: Uuid,
    ) -> Result<OpenedStream, UpstreamError> {
        let mut response = self
            .send_for_call(CallEndpoint::Chat, body, call_id)
            .await?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = retry_after(response.headers());
            let bytes = response.bytes().await.map_err(cut_off)?;
            return Err(status_error(status.as_u16(), &bytes, retry_after));
        }
        let reported_cost = reported_cost(&response);
        let first = response.chunk().await.map_err(cut_off)?.ok_or_else(|| {
            UpstreamError::InvalidResponse("the stream ended before its first byte".into())
        })?;
        Ok(OpenedStream {
            response,
            first: Some(first),
            reported_cost,
        })
    }

    /// Sends one request of a call to `endpoint` and reads its whole answer: the body of a
    /// successful one with the cost the upstream reported, else the error the answer stands for.
    pub(crate) async fn send_whole(
        &self,
        endpoint: CallEndpoint,
        body: &Value,
        call_id: Uuid,
    ) -> Result<(Bytes, Option<MicroUsd>), UpstreamError> {
        let response = self.send_for_call(endpoint, body, call_id).await?;
        let status = response.status();
        let reported_cost = reported_cost(&response);
        let retry_after = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(cut_off)?;
        if !status.is_success() {
            return Err(status_error(status.as_u16(), &bytes, retry_after));
        }
        Ok((bytes, reported_cost))
    }

    /// Sends one request of a call to `endpoint`, tagged with the call's id.
    async fn send_for_call(
        &self,
        endpoint: CallEndpoint,
        body: &Value,
        call_id: Uuid,
    ) -> Result<reqwest::Response, UpstreamError> {
        self.request(endpoint, body)
            .header(CALL_ID_HEADER, call_id.to_string())
            .send()
            .await
            .map_err(|e| UpstreamError::Transport {
                timed_out: e.is_timeout(),
                message: if e.is_timeout() {
                    "upstream request timed out".to_owned()
                } else if e.is_connect() {
                    format!("cannot connect to the upstream: {}", root_cause(&e))
                } else {
                    format!("upstream request failed: {}", root_cause(&e))
                },
            })
    }
}

/// A stream whose first piece has arrived; the rest is read with [`OpenedStream::next_chunk`].
pub struct OpenedStream {
    response: reqwest::Response,
    first: Option<Bytes>,
    /// From `x-litellm-response-cost`, when the upstream reports it.
    pub reported_cost: Option<MicroUsd>,
}

impl OpenedStream {
    /// The next piece of the body (the first one included), or `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        self.response
            .chunk()
            .await
            .map_err(|e| UpstreamError::Transport {
                timed_out: e.is_timeout(),
                message: format!("upstream stream broke: {}", root_cause(&e)),
            })
    }
}

/// A body that could not be read to its end.
fn cut_off(e: reqwest::Error) -> UpstreamError {
    UpstreamError::Transport {
        timed_out: e.is_timeout(),
        message: format!("upstream response was cut off: {}", root_cause(&e)),
    }
}

/// An error answer, keeping the start of its body for classification.
fn status_error(status: u16, bytes: &[u8], retry_after: Option<Duration>) -> UpstreamError {
    let body = String::from_utf8_lossy(&bytes[..bytes.len().min(ERROR_BODY_LIMIT)]).into_owned();
    UpstreamError::Status {
        status,
        message: error_message(status, &body),
        body,
        retry_after,
    }
}

/// The cost the upstream reports for a response (LiteLLM's `x-litellm-response-cost`), if any.
pub fn reported_cost(response: &reqwest::Response) -> Option<MicroUsd> {
    response
        .headers()
        .get(pricing::COST_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(pricing::parse_cost_header)
}

/// `retry-after-ms` (OpenAI, LiteLLM) or `Retry-After` in seconds or as an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|t| t.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1_000.0).ok();
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

/// The most useful text of an error answer: OpenAI's `error.message` when present.
pub fn error_message(status: u16, body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("detail"))
            .or_else(|| v.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    match from_json {
        Some(message) => message,
        None if body.trim().is_empty() => format!("upstream answered HTTP {status}"),
        None => format!(
            "upstream answered HTTP {status}: {}",
            body.chars().take(300).collect::<String>()
        ),
    }
}

pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
