//! What a /v1 request used and cost once the upstream has answered, and the recorder that settles
//! a streaming request's budget ticket exactly once.

use std::sync::Mutex;

use crate::budget::Ticket;
use crate::limits::Admission;
use crate::sse::SseScan;
use saasllm_shared::db::spend::Usage;
use saasllm_shared::domain::money::MicroUsd;
use saasllm_shared::domain::outcomes::CostSource;
use saasllm_shared::domain::pricing::{self, Price, UNKNOWN_MODEL_PRICE};
use serde_json::{Value, json};

/// How to price a request's usage.
pub(crate) struct Pricing {
    pub(crate) model: String,
    pub(crate) config: Value,
    pub(crate) price: Option<Price>,
}

/// Usage and cost of a completed request: the upstream's cost header first, then the price
/// table, then the conservative default (recorded as such).
pub(crate) fn usage_of(
    body: Option<&Value>,
    pricing: &Pricing,
    reported_cost: Option<MicroUsd>,
) -> Usage {
    let usage = body.and_then(|b| b.get("usage"));
    // Counts the upstream reports; a negative one counts as zero (it must not lower spend).
    let tokens = |field: &str| {
        usage
            .and_then(|u| u.get(field))
            .and_then(Value::as_i64)
            .map(|n| n.max(0))
    };
    let (prompt, completion) = (tokens("prompt_tokens"), tokens("completion_tokens"));
    let (cost, source) = match (reported_cost, pricing.price) {
        (Some(cost), _) => (cost.0, CostSource::Header),
        (None, Some(price)) => (
            pricing::cost(price, prompt.unwrap_or(0), completion.unwrap_or(0)).0,
            CostSource::PriceTable,
        ),
        // The default price for a model the price table does not know (the record says so).
        (None, None) => {
            tracing::warn!(model = %pricing.model, config = %pricing.config, "no price known; recording at the default price");
            (
                pricing::cost(
                    UNKNOWN_MODEL_PRICE,
                    prompt.unwrap_or(0),
                    completion.unwrap_or(0),
                )
                .0,
                CostSource::DefaultPrice,
            )
        }
    };
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: tokens("total_tokens").or_else(|| Some(prompt?.saturating_add(completion?))),
        cost_micro_usd: cost,
        cost_source: source,
        http_status: Some(200),
        error: None,
    }
}

/// Embeddings bill their input only.
pub(crate) fn bill_input_only(usage: &mut Usage) {
    usage.completion_tokens = Some(0);
    usage.total_tokens = usage.total_tokens.or(usage.prompt_tokens);
}

/// Owns a streaming request's budget ticket and records what was used exactly once: when the
/// usage chunk arrives, at the end of the stream, or when dropped (client gone), whichever is
/// first.
pub(super) struct StreamRecorder {
    ticket: Mutex<Option<Ticket>>,
    pricing: Mutex<Option<Pricing>>,
    reported_cost: Option<MicroUsd>,
    pub(super) scan: Mutex<SseScan>,
    /// The team's limit slot, given back when the stream ends (the recorder is dropped).
    admission: Option<Admission>,
}

impl StreamRecorder {
    pub(super) fn new(
        ticket: Ticket,
        pricing: Pricing,
        reported_cost: Option<MicroUsd>,
        admission: Option<Admission>,
    ) -> Self {
        Self {
            ticket: Mutex::new(Some(ticket)),
            pricing: Mutex::new(Some(pricing)),
            reported_cost,
            scan: Mutex::default(),
            admission,
        }
    }

    /// Records the spend now, unless it already was (it is written with the next batch).
    pub(super) fn record(&self) {
        let Some(usage) = self.take_usage() else {
            return;
        };
        if let Some(admission) = &self.admission {
            admission.count_tokens(usage.total_tokens.unwrap_or(0));
        }
        let ticket = self.ticket.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(ticket) = ticket {
            ticket.finish(usage);
        }
    }

    /// The usage to record, the first time only.
    fn take_usage(&self) -> Option<Usage> {
        let pricing = self
            .pricing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        let scan = self.scan.lock().unwrap_or_else(|p| p.into_inner());
        // LiteLLM reports a stream's cost in the usage chunk, not in a header.
        let reported_cost = self
            .reported_cost
            .or_else(|| scan.usage.as_ref().and_then(pricing::usage_cost));
        let usage = match &scan.usage {
            Some(usage) => usage_of(Some(&json!({"usage": usage})), &pricing, reported_cost),
            None => {
                // The client left before the usage chunk: bill what was streamed so far.
                let chars = i64::try_from(scan.content.chars().count()).unwrap_or(i64::MAX);
                let completion = chars.saturating_add(3) / 4;
                let mut usage = usage_of(
                    Some(&json!({"usage": {"prompt_tokens": 0, "completion_tokens": completion}})),
                    &pricing,
                    reported_cost,
                );
                usage.error =
                    Some("stream ended before the usage chunk (client disconnected?)".into());
                usage
            }
        };
        Some(usage)
    }
}

impl Drop for StreamRecorder {
    fn drop(&mut self) {
        self.record();
    }
}
