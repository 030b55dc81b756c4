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
pub(crate) enum OwnedResult {
    Succeeded(Succeeded),
    /// No model served the call.
    Failed {
        error: String,
        latency_ms: i64,
    },
}

/// A served call's result.
pub(crate) struct Succeeded {
    model_used: String,
    content: Option<String>,
    finish_reason: Option<String>,
    response: Value,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    total_tokens: Option<i64>,
    cost_micro_usd: Option<i64>,
    latency_ms: i64,
}

impl OwnedResult {
    /// The call's result from the chain's, `elapsed` since the chain started.
    pub(crate) fn from_chain(
        result: Result<Served<Completion>, String>,
        elapsed: Duration,
    ) -> Self {
        let latency_ms = elapsed.as_millis() as i64;
        match result {
            Ok(served) => Self::Succeeded(Succeeded::priced(served, latency_ms)),
            Err(error) => Self::Failed { error, latency_ms },
        }
    }

    pub(crate) fn status(&self) -> CallStatus {
        match self {
            Self::Succeeded(_) => CallStatus::Succeeded,
            Self::Failed { .. } => CallStatus::Failed,
        }
    }

    pub(crate) fn total_tokens(&self) -> Option<i64> {
        match self {
            Self::Succeeded(succeeded) => succeeded.total_tokens,
            Self::Failed { .. } => None,
        }
    }

    pub(crate) fn as_row(&self) -> CallResult<'_> {
        match self {
            Self::Succeeded(succeeded) => succeeded.as_row(),
            Self::Failed { error, latency_ms } => CallResult::failed(error, *latency_ms),
        }
    }
}

impl Succeeded {
    fn priced(served: Served<Completion>, latency_ms: i64) -> Self {
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
            model_used: model,
            content: completion.content,
            finish_reason: completion.finish_reason,
            response: completion.body,
            prompt_tokens: completion.prompt_tokens,
            completion_tokens: completion.completion_tokens,
            total_tokens,
            cost_micro_usd: cost.map(|c| c.0),
            latency_ms,
        }
    }

    fn as_row(&self) -> CallResult<'_> {
        CallResult {
            status: CallStatus::Succeeded,
            model_used: Some(&self.model_used),
            response_content: self.content.as_deref(),
            finish_reason: self.finish_reason.as_deref(),
            response: Some(&self.response),
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.total_tokens,
            cost_micro_usd: self.cost_micro_usd,
            latency_ms: self.latency_ms,
            error: None,
        }
    }
}
