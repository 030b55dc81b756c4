//! The model chain: the one driver that runs a call against its group's models, used by the
//! worker (an attempt is a whole chat completion, or a call's embeddings) and by the API's
//! streaming job path (an attempt is a stream opened up to its first byte). Models are tried in
//! priority order; a model cooling down is skipped unless all are; a transient failure is retried
//! on the same model with backoff honouring `Retry-After`; transient failures and timeouts count
//! towards the model's cooldown; every attempt is recorded; the failure's class decides between
//! the next model and the end.

mod attempts;
mod completion;
mod record;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use saasllm_shared::domain::outcomes::AttemptOutcome;
use serde_json::Value;

use crate::fallback::Next;
use crate::resilience::{Cooldowns, RetryPolicy};
use crate::upstream::{Upstream, UpstreamError};

pub use attempts::{StreamStart, WholeCompletion, WholeEmbedding};
pub(crate) use completion::OwnedResult;
pub use record::{AttemptRecord, record_metrics};

/// One try of one model, as the chain runs it.
pub trait Attempt: Sync {
    /// What a successful attempt hands back.
    type Output: Send;

    /// Sends `body` (the call's request naming the model) to the upstream.
    fn send(
        &self,
        upstream: &Upstream,
        body: &Value,
    ) -> impl Future<Output = Result<Self::Output, UpstreamError>> + Send;
}

/// The upstream with the process's retry policy and model cooldowns. Cheap to clone; clones
/// share the cooldowns, so one instance per process sees every call's failures.
#[derive(Clone)]
pub struct Engine {
    upstream: Upstream,
    retry: RetryPolicy,
    cooldowns: Arc<Cooldowns>,
}

/// What the chain did: every attempt, and what served the call or why none could.
pub struct ChainOutcome<T> {
    pub attempts: Vec<AttemptRecord>,
    /// The last failure's text when no model served the call.
    pub result: Result<Served<T>, String>,
}

/// The successful attempt's output, with the model that produced it and that model's
/// configuration (for pricing).
pub struct Served<T> {
    pub output: T,
    pub model: String,
    pub config: Value,
}

impl Engine {
    pub fn new(upstream: Upstream, retry: RetryPolicy, cooldowns: Arc<Cooldowns>) -> Self {
        Self {
            upstream,
            retry,
            cooldowns,
        }
    }

    /// The upstream, for requests that pass through without the chain.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Runs `attempt` against `models` (the group's, in priority order) with `request` naming
    /// each model in turn, until one succeeds or a failure stops the chain.
    pub async fn run<A: Attempt>(
        &self,
        model_group: &str,
        models: &[(String, Value)],
        request: &Value,
        attempt: &A,
    ) -> ChainOutcome<A::Output> {
        let mut attempts = Vec::with_capacity(models.len());
        let mut last_error = format!("model group '{model_group}' has no models");
        // Models cooling down are skipped, unless all of them are: then each is tried anyway.
        let all_cooling = models
            .iter()
            .all(|(model, _)| self.cooldowns.is_cooling(model));
        for (model, config) in models {
            if !all_cooling && self.cooldowns.is_cooling(model) {
                attempts.push(AttemptRecord {
                    model: model.clone(),
                    http_status: None,
                    outcome: AttemptOutcome::Skipped,
                    latency_ms: 0,
                    error: Some("model cooling down after repeated failures".into()),
                });
                continue;
            }
            match self
                .try_model(model, config, request, attempt, &mut attempts)
                .await
            {
                Ok(served) => {
                    return ChainOutcome {
                        attempts,
                        result: Ok(served),
                    };
                }
                Err((error, next)) => {
                    last_error = error;
                    if next == Next::Stop {
                        break;
                    }
                }
            }
        }
        ChainOutcome {
            attempts,
            result: Err(last_error),
        }
    }

    /// Tries one model, retrying it while its failures are transient, and records each attempt.
    /// On failure, the last error's text and whether the chain goes on to the next model.
    async fn try_model<A: Attempt>(
        &self,
        model: &str,
        config: &Value,
        request: &Value,
        attempt: &A,
        attempts: &mut Vec<AttemptRecord>,
    ) -> Result<Served<A::Output>, (String, Next)> {
        let mut body = request.clone();
        if let Value::Object(fields) = &mut body {
            fields.insert("model".into(), Value::String(model.to_owned()));
        }
        let mut retries = 0;
        loop {
            let attempt_started = Instant::now();
            let answer = attempt.send(&self.upstream, &body).await;
            let latency_ms = attempt_started.elapsed().as_millis() as i64;
            let error = match answer {
                Ok(output) => {
                    self.cooldowns.succeeded(model);
                    attempts.push(AttemptRecord {
                        model: model.to_owned(),
                        http_status: Some(200),
                        outcome: AttemptOutcome::Succeeded,
                        latency_ms,
                        error: None,
                    });
                    return Ok(Served {
                        output,
                        model: model.to_owned(),
                        config: config.clone(),
                    });
                }
                Err(error) => error,
            };
            let next = error.next();
            let retry_in = self.after_failure(model, &error, &mut retries);
            tracing::info!(model, error = %error, ?next, ?retry_in, "upstream attempt failed");
            attempts.push(AttemptRecord {
                model: model.to_owned(),
                http_status: error.http_status(),
                outcome: match (retry_in, next) {
                    (Some(_), _) => AttemptOutcome::Retry,
                    (None, Next::Fallback) => AttemptOutcome::Fallback,
                    (None, Next::Stop) => AttemptOutcome::Fatal,
                },
                latency_ms,
                error: Some(error.to_string()),
            });
            match retry_in {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err((error.to_string(), next)),
            }
        }
    }

    /// Counts a failure towards the model's cooldown and says how long to wait before asking
    /// the same model again, if it should be asked again.
    fn after_failure(
        &self,
        model: &str,
        error: &UpstreamError,
        retries: &mut u32,
    ) -> Option<std::time::Duration> {
        // Rate limits, server errors, refused connections and timeouts count towards the
        // model's cooldown; a request the model cannot serve does not.
        let cooling_started =
            (error.is_transient() || error.timed_out()) && self.cooldowns.failed(model);
        if cooling_started {
            tracing::warn!(model, "model failing repeatedly; cooling down");
        }
        if error.is_transient() && !cooling_started {
            *retries += 1;
            self.retry.delay(*retries, error.retry_after())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests;
