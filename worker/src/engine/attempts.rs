//! The kinds of attempt: the worker's (a whole chat completion, or the embeddings of a call's
//! input) and the streaming job path's (a stream opened up to its first byte; after that byte has
//! reached the client there is no going back, so the chain ends there).

use std::future::Future;

use saasllm_shared::domain::status::CallEndpoint;
use serde_json::Value;
use uuid::Uuid;

use super::Attempt;
use crate::upstream::{
    Completion, OpenedStream, Upstream, UpstreamError, cut_off, reported_cost, retry_after,
    status_error,
};

/// Asks for a whole chat completion.
pub struct WholeCompletion {
    pub call_id: Uuid,
}

impl Attempt for WholeCompletion {
    type Output = Completion;

    fn send(
        &self,
        upstream: &Upstream,
        body: &Value,
    ) -> impl Future<Output = Result<Completion, UpstreamError>> + Send {
        upstream.chat(body, self.call_id)
    }
}

/// Asks for the embeddings of a call's input (`POST /v1/embeddings`). The answer is kept whole
/// as the completion's body; it has no content or finish reason, and bills no output tokens.
pub struct WholeEmbedding {
    pub call_id: Uuid,
}

impl Attempt for WholeEmbedding {
    type Output = Completion;

    fn send(
        &self,
        upstream: &Upstream,
        body: &Value,
    ) -> impl Future<Output = Result<Completion, UpstreamError>> + Send {
        embeddings(upstream, body, self.call_id)
    }
}

/// Sends one embeddings request of a call; errors are classified as a chat completion's are.
async fn embeddings(
    upstream: &Upstream,
    body: &Value,
    call_id: Uuid,
) -> Result<Completion, UpstreamError> {
    let response = upstream
        .send_for_call(CallEndpoint::Embeddings, body, call_id)
        .await?;
    let status = response.status();
    let reported_cost = reported_cost(&response);
    let retry_after = retry_after(response.headers());
    let bytes = response.bytes().await.map_err(cut_off)?;
    if !status.is_success() {
        return Err(status_error(status.as_u16(), &bytes, retry_after));
    }
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|e| UpstreamError::InvalidEmbeddings(e.to_string()))?;
    if !body.get("data").is_some_and(Value::is_array) {
        return Err(UpstreamError::InvalidEmbeddings("no `data` array".into()));
    }
    let usage = body.get("usage");
    let tokens = |field: &str| usage.and_then(|u| u.get(field)).and_then(Value::as_i64);
    let prompt_tokens = tokens("prompt_tokens");
    Ok(Completion {
        content: None,
        finish_reason: None,
        prompt_tokens,
        completion_tokens: Some(0),
        total_tokens: tokens("total_tokens").or(prompt_tokens),
        reported_cost,
        body,
    })
}

/// Opens a streamed chat completion and waits for its first byte. The request must ask for a
/// stream (`"stream": true`).
pub struct StreamStart {
    pub call_id: Uuid,
}

impl Attempt for StreamStart {
    type Output = OpenedStream;

    fn send(
        &self,
        upstream: &Upstream,
        body: &Value,
    ) -> impl Future<Output = Result<OpenedStream, UpstreamError>> + Send {
        upstream.open_stream(body, self.call_id)
    }
}
