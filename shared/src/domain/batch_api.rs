//! Kinds and endings of the OpenAI-compatible Files and Batch APIs' rows, as stored in
//! PostgreSQL (a batch's lifecycle is `status::BatchStatus`).

use serde::Serialize;

use crate::domain::status::{BatchStatus, CallEndpoint};
use crate::domain::stored_names::stored_names;

/// What a file is for: a team's upload of batch requests, or a batch's output or error file
/// written by the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum FilePurpose {
    Batch,
    BatchOutput,
}

stored_names!(FilePurpose {
    Batch => "batch",
    BatchOutput => "batch_output",
});

/// How a running batch is to end, set before it is finalized: `completed` (every line ran),
/// `expired` (its window ended first) or `cancelled` (its team cancelled it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum BatchEnding {
    Completed,
    Expired,
    Cancelled,
}

stored_names!(BatchEnding {
    Completed => "completed",
    Expired => "expired",
    Cancelled => "cancelled",
});

impl BatchEnding {
    /// The status the batch ends in.
    pub fn status(self) -> BatchStatus {
        match self {
            BatchEnding::Completed => BatchStatus::Completed,
            BatchEnding::Expired => BatchStatus::Expired,
            BatchEnding::Cancelled => BatchStatus::Cancelled,
        }
    }
}

/// The endpoint a batch's lines are sent to, stored and answered as its OpenAI path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "text")]
pub enum BatchEndpoint {
    #[serde(rename = "/v1/chat/completions")]
    #[sqlx(rename = "/v1/chat/completions")]
    ChatCompletions,
    #[serde(rename = "/v1/embeddings")]
    #[sqlx(rename = "/v1/embeddings")]
    Embeddings,
}

stored_names!(BatchEndpoint {
    ChatCompletions => "/v1/chat/completions",
    Embeddings => "/v1/embeddings",
});

impl BatchEndpoint {
    /// The endpoint of an OpenAI path, if a batch can run it.
    pub fn from_path(path: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|e| e.as_str() == path)
    }

    /// The endpoint each line's call is sent to.
    pub fn call_endpoint(self) -> CallEndpoint {
        match self {
            BatchEndpoint::ChatCompletions => CallEndpoint::Chat,
            BatchEndpoint::Embeddings => CallEndpoint::Embeddings,
        }
    }
}

impl From<CallEndpoint> for BatchEndpoint {
    fn from(endpoint: CallEndpoint) -> Self {
        match endpoint {
            CallEndpoint::Chat => BatchEndpoint::ChatCompletions,
            CallEndpoint::Embeddings => BatchEndpoint::Embeddings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::stored_names::bound_text;

    #[test]
    fn stored_names_are_the_bound_ones() {
        for purpose in FilePurpose::ALL {
            assert_eq!(bound_text(purpose), purpose.as_str());
        }
        for ending in BatchEnding::ALL {
            assert_eq!(bound_text(ending), ending.as_str());
            assert_eq!(ending.status().as_str(), ending.as_str());
        }
        for endpoint in BatchEndpoint::ALL {
            assert_eq!(bound_text(endpoint), endpoint.as_str());
            assert_eq!(
                serde_json::to_value(endpoint).expect("serializes"),
                endpoint.as_str()
            );
            assert_eq!(BatchEndpoint::from(endpoint.call_endpoint()), *endpoint);
            assert_eq!(BatchEndpoint::from_path(endpoint.as_str()), Some(*endpoint));
        }
        assert_eq!(BatchEndpoint::from_path("/v1/completions"), None);
    }
}
