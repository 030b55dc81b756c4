//! The two kinds of attempt: the worker's (a whole chat completion) and the streaming job
//! path's (a stream opened up to its first byte; after that byte has reached the client there is
//! no going back, so the chain ends there).

use std::future::Future;

use serde_json::Value;
use uuid::Uuid;

use super::Attempt;
use crate::upstream::{Completion, OpenedStream, Upstream, UpstreamError};

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
