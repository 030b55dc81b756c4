//! What the chain keeps of each attempt, and the metrics of a finished chain.

use saasllm_shared::db::calls::Attempt;
use saasllm_shared::domain::outcomes::AttemptOutcome;
use saasllm_shared::domain::status::CallStatus;

/// One attempt, kept until the result is written with it.
pub struct AttemptRecord {
    pub model: String,
    pub http_status: Option<i32>,
    pub outcome: AttemptOutcome,
    pub latency_ms: i64,
    pub error: Option<String>,
}

impl AttemptRecord {
    /// The attempt as a row to write.
    pub fn as_row(&self) -> Attempt<'_> {
        Attempt {
            model_name: &self.model,
            http_status: self.http_status,
            outcome: self.outcome,
            latency_ms: self.latency_ms,
            error: self.error.as_deref(),
        }
    }
}

/// Counts a finished call, its attempts and its fallbacks (labels are admin-configured names,
/// so they stay bounded).
pub fn record_metrics(model_group: &str, attempts: &[AttemptRecord], status: CallStatus) {
    let outcome = if status == CallStatus::Succeeded {
        "succeeded"
    } else {
        "failed"
    };
    metrics::counter!("llm_calls_total", "model_group" => model_group.to_owned(), "outcome" => outcome).increment(1);
    for attempt in attempts {
        metrics::counter!("llm_upstream_attempts_total", "model" => attempt.model.clone(), "outcome" => attempt.outcome.as_str())
            .increment(1);
        if attempt.outcome != AttemptOutcome::Skipped {
            metrics::histogram!("llm_upstream_duration_seconds", "model" => attempt.model.clone())
                .record(attempt.latency_ms as f64 / 1000.0);
        }
        if attempt.outcome == AttemptOutcome::Fallback {
            metrics::counter!("llm_fallbacks_total", "model_group" => model_group.to_owned())
                .increment(1);
        }
    }
}
