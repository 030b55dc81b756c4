//! The worker's result of a chain of whole completions: what is written to the call's row,
//! priced from the upstream's reported cost or else the model's price.

use std::time::Duration;

use saasllm_shared::db::calls::CallResult;
use saasllm_shared::domain::pricing;
use saasllm_shared::domain::status::CallStatus;
use serde_json::Value;

use super::Served;
use crate::upstream::Completion;

/// The result of the chain, owned until it is written.
pub(crate) struct OwnedResult {
    pub(crate) status: CallStatus,
    pub(crate) model_used: Option<String>,
    pub(crate) content: Option<String>,
    pub(crate) finish_reason: Option<String>,
    pub(crate) response: Option<Value>,
    pub(crate) prompt_tokens: Option<i64>,
    pub(crate) completion_tokens: Option<i64>,
    pub(crate) total_tokens: Option<i64>,
    pub(crate) cost_micro_usd: Option<i64>,
    pub(crate) latency_ms: i64,
    pub(crate) error: Option<String>,
}

impl OwnedResult {
    /// The call's result from the chain's, `elapsed` since the chain started.
    pub(crate) fn from_chain(
        result: Result<Served<Completion>, String>,
        elapsed: Duration,
    ) -> Self {
        let latency_ms = elapsed.as_millis() as i64;
        match result {
            Ok(served) => Self::succeeded(served, latency_ms),
            Err(error) => Self {
                status: CallStatus::Failed,
                model_used: None,
                content: None,
                finish_reason: None,
                response: None,
                prompt_tokens: None,
                completion_tokens: None,
                total_tokens: None,
                cost_micro_usd: None,
                latency_ms,
                error: Some(error),
            },
        }
    }

    fn succeeded(served: Served<Completion>, latency_ms: i64) -> Self {
        let Served {
            output: completion,
            model,
            config,
        } = served;
        let cost = completion.reported_cost.or_else(|| {
            let price = pricing::price_for(&model, &config)?;
            Some(pricing::cost(
                price,
                completion.prompt_tokens.unwrap_or(0),
                completion.completion_tokens.unwrap_or(0),
            ))
        });
        if cost.is_none() {
            tracing::warn!(model, "no price known for model; cost left empty");
        }
        let total_tokens = completion
            .total_tokens
            .or_else(|| Some(completion.prompt_tokens? + completion.completion_tokens?));
        Self {
            status: CallStatus::Succeeded,
            model_used: Some(model),
            content: completion.content,
            finish_reason: completion.finish_reason,
            response: Some(completion.body),
            prompt_tokens: completion.prompt_tokens,
            completion_tokens: completion.completion_tokens,
            total_tokens,
            cost_micro_usd: cost.map(|c| c.0),
            latency_ms,
            error: None,
        }
    }

    pub(crate) fn as_row(&self) -> CallResult<'_> {
        CallResult {
            status: self.status,
            model_used: self.model_used.as_deref(),
            response_content: self.content.as_deref(),
            finish_reason: self.finish_reason.as_deref(),
            response: self.response.as_ref(),
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.total_tokens,
            cost_micro_usd: self.cost_micro_usd,
            latency_ms: self.latency_ms,
            error: self.error.as_deref(),
        }
    }
}
