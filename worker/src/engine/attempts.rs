//! The kinds of attempt: the worker's (a whole chat completion, or the embeddings of a call's
//! input) and the streaming job path's (a stream opened up to its first byte; after that byte has
//! reached the client there is no going back, so the chain ends there).

use std::future::Future;

use saasllm_shared::domain::status::CallEndpoint;
use serde_json::Value;
use uuid::Uuid;

use super::Attempt;
use crate::upstream::{Completion, OpenedStream, Upstream, UpstreamError};

/// Declares a kind of attempt: a type carrying the call's id, whose attempt is `send` (called
/// with the upstream, the request body and the call's id).
macro_rules! attempt_kind {
    ($(#[$doc:meta])* $name:ident -> $output:ty = $send:path) => {
        $(#[$doc])*
        pub struct $name {
            pub call_id: Uuid,
        }

        impl Attempt for $name {
            type Output = $output;

            fn send(
                &self,
                upstream: &Upstream,
                body: &Value,
            ) -> impl Future<Output = Result<$output, UpstreamError>> + Send {
                $send(upstream, body, self.call_id)
            }
        }
    };
}

attempt_kind! {
    /// Asks for a whole chat completion.
    WholeCompletion -> Completion = Upstream::chat
}

attempt_kind! {
    /// Asks for the embeddings of a call's input (`POST /v1/embeddings`). The answer is kept
    /// whole as the completion's body; it has no content or finish reason, and bills no output
    /// tokens.
    WholeEmbedding -> Completion = embeddings
}

attempt_kind! {
    /// Opens a streamed chat completion and waits for its first byte. The request must ask for a
    /// stream (`"stream": true`).
    StreamStart -> OpenedStream = Upstream::open_stream
}

/// Sends one embeddings request of a call; errors are classified as a chat completion's are.
async fn embeddings(
    upstream: &Upstream,
    body: &Value,
    call_id: Uuid,
) -> Result<Completion, UpstreamError> {
    let (bytes, reported_cost) = upstream
        .send_whole(CallEndpoint::Embeddings, body, call_id)
        .await?;
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
