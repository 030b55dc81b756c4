//! Runs one call: claim it under a lease, try the group's models in priority order, record every
//! attempt and the result (fenced by the lease), then settle the job if it is waiting on this call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use saasllm_shared::db;
use saasllm_shared::db::calls::{Attempt, CallResult, ClaimedCall};
use saasllm_shared::db::jobs::Settlement;
use saasllm_shared::domain::pricing;
use saasllm_shared::domain::status::{CallStatus, JobStatus};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use saasllm_shared::queue::{CallQueue, Dispatched};

use crate::backend::Claimed;
use crate::fallback::Next;
use crate::leases::InFlight;
use crate::resilience::{Cooldowns, RetryPolicy};
use crate::results::ResultWriter;
use crate::upstream::Upstream;

/// Executes claimed calls.
#[derive(Clone)]
pub struct Executor {
    pub db: PgPool,
    pub upstream: Upstream,
    pub worker_id: String,
    pub lease: Duration,
    pub retry: RetryPolicy,
    pub cooldowns: Arc<Cooldowns>,
    pub queue: CallQueue,
    pub results: ResultWriter,
    pub in_flight: Arc<InFlight>,
}

/// One attempt, kept until the result is written with it.
pub struct AttemptRecord {
    pub model: String,
    pub http_status: Option<i32>,
    pub outcome: &'static str,
    pub latency_ms: i64,
    pub error: Option<String>,
}

impl AttemptRecord {
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

/// Writes a call's attempts and result under its lease, then settles the job if it waits on
/// this call. Returns false when the lease was lost (nothing written).
pub async fn record_result(
    db: &PgPool,
    call: &ClaimedCall,
    attempts: &[AttemptRecord],
    result: &CallResult<'_>,
) -> sqlx::Result<bool> {
    let rows: Vec<Attempt<'_>> = attempts.iter().map(AttemptRecord::as_row).collect();
    // The result and the job check after its commit share one connection: sqlx pings a
    // connection each time it goes back to the pool, so this saves a round trip per call.
    let mut conn = db.acquire().await?;
    let written = db::calls::finish(&mut *conn, call, &rows, result).await?;
    if written {
        // Test-only crash point, inert unless SAASLLM_FAULT_CRASH lists it (see `fault`).
        crate::fault::crash_point(crate::fault::AFTER_COMMIT);
        let status = db::jobs::status(&mut *conn, call.job_id).await?;
        drop(conn);
        if status == Some(JobStatus::Completing) {
            settle_completing(db, call.job_id).await?;
        }
    }
    Ok(written)
}

impl Executor {
    /// Runs one claimed call to its result. The team's concurrency slot is given back, and the
    /// call's tokens counted towards its minute, as soon as the upstream has answered: before
    /// the result is committed, so a client that sees the result and sends its next request
    /// finds the limits already up to date. The result is written with others finishing at the
    /// same time (one commit per group). On an error the call is left to its lease: the process
    /// stops extending it and the reconciler queues the call again once it expires.
    #[tracing::instrument(skip_all, fields(call_id = %claimed.call.call_id, job_id = %claimed.call.job_id, team_id = %claimed.call.team_id, request_id))]
    pub async fn handle(&self, claimed: Claimed) -> anyhow::Result<()> {
        // The slot is held until the result is written: only then may the fetcher take another.
        let Claimed {
            call,
            dispatched,
            slot,
        } = claimed;
        if let Some(request_id) = &call.request_id {
            tracing::Span::current().record("request_id", request_id.as_str());
        }
        let in_flight = metrics::gauge!("worker_calls_in_flight");
        in_flight.increment(1.0);
        let outcome = self.run_chain(&call).await;
        in_flight.decrement(1.0);
        // Test-only crash point, inert unless SAASLLM_FAULT_CRASH lists it (see `fault`).
        crate::fault::crash_point(crate::fault::AFTER_UPSTREAM);
        let tokens = match &outcome {
            Ok((attempts, result)) => {
                record_metrics(&call.model_group, attempts, result.status);
                result.total_tokens.unwrap_or(0)
            }
            Err(_) => 0,
        };
        self.end_team_slot(&dispatched, tokens).await;
        let call_id = call.call_id;
        let written = match outcome {
            Ok((attempts, result)) => self.results.write(call, attempts, result).await,
            Err(e) => Err(e),
        };
        self.in_flight.remove(call_id);
        drop(slot);
        match written {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::warn!(
                    "lease lost before the result was written; another worker owns the call"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Frees the call's team concurrency slot and counts its tokens towards the team's minute.
    async fn end_team_slot(&self, next: &Dispatched, tokens: i64) {
        if !(next.holds_slot || next.counts_tokens) {
            return;
        }
        self.in_flight.slot_ended(next.call_id);
        let tokens = if next.counts_tokens { tokens } else { 0 };
        let member = next.call_id.to_string();
        if let Err(e) = self.queue.finish(&next.team_id, &member, tokens).await {
            // The slot lapses by itself when its hold expires.
            tracing::warn!(error = %e, "could not give back the team's concurrency slot");
        }
    }

    async fn run_chain(
        &self,
        call: &ClaimedCall,
    ) -> anyhow::Result<(Vec<AttemptRecord>, OwnedResult)> {
        let started = Instant::now();
        let models = call.models.0.clone();
        let mut attempts = Vec::with_capacity(models.len());
        let mut last_error = format!("model group '{}' has no models", call.model_group);
        // Models cooling down are skipped, unless all of them are: then each is tried anyway.
        let all_cooling = models
            .iter()
            .all(|(model, _)| self.cooldowns.is_cooling(model));
        'models: for (model, config) in models {
            if !all_cooling && self.cooldowns.is_cooling(&model) {
                attempts.push(AttemptRecord {
                    model,
                    http_status: None,
                    outcome: "skipped",
                    latency_ms: 0,
                    error: Some("model cooling down after repeated failures".into()),
                });
                continue;
            }
            let mut body = call.request.clone();
            if let Value::Object(fields) = &mut body {
                fields.insert("model".into(), Value::String(model.clone()));
            }
            let mut retries = 0;
            loop {
                let attempt_started = Instant::now();
                let answer = self.upstream.chat(&body, call.call_id).await;
                let latency_ms = attempt_started.elapsed().as_millis() as i64;
                match answer {
                    Ok(completion) => {
                        self.cooldowns.succeeded(&model);
                        attempts.push(AttemptRecord {
                            model: model.clone(),
                            http_status: Some(200),
                            outcome: "succeeded",
                            latency_ms,
                            error: None,
                        });
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
                        let total_tokens = completion.total_tokens.or_else(|| {
                            Some(completion.prompt_tokens? + completion.completion_tokens?)
                        });
                        return Ok((
                            attempts,
                            OwnedResult {
                                status: CallStatus::Succeeded,
                                model_used: Some(model),
                                content: completion.content,
                                finish_reason: completion.finish_reason,
                                response: Some(completion.body),
                                prompt_tokens: completion.prompt_tokens,
                                completion_tokens: completion.completion_tokens,
                                total_tokens,
                                cost_micro_usd: cost.map(|c| c.0),
                                latency_ms: started.elapsed().as_millis() as i64,
                                error: None,
                            },
                        ));
                    }
                    Err(error) => {
                        let next = error.next();
                        // Rate limits, server errors, refused connections and timeouts count
                        // towards the model's cooldown; a request the model cannot serve does not.
                        let cooling_started = (error.is_transient() || error.timed_out())
                            && self.cooldowns.failed(&model);
                        if cooling_started {
                            tracing::warn!(model, "model failing repeatedly; cooling down");
                        }
                        let retry_in = if error.is_transient() && !cooling_started {
                            retries += 1;
                            self.retry.delay(retries, error.retry_after())
                        } else {
                            None
                        };
                        tracing::info!(model, error = %error, ?next, ?retry_in, "upstream attempt failed");
                        attempts.push(AttemptRecord {
                            model: model.clone(),
                            http_status: error.http_status(),
                            outcome: match (retry_in, next) {
                                (Some(_), _) => "retry",
                                (None, Next::Fallback) => "fallback",
                                (None, Next::Stop) => "fatal",
                            },
                            latency_ms,
                            error: Some(error.to_string()),
                        });
                        last_error = error.to_string();
                        match (retry_in, next) {
                            (Some(delay), _) => tokio::time::sleep(delay).await,
                            (None, Next::Fallback) => continue 'models,
                            (None, Next::Stop) => break 'models,
                        }
                    }
                }
            }
        }
        Ok((
            attempts,
            OwnedResult {
                status: CallStatus::Failed,
                model_used: None,
                content: None,
                finish_reason: None,
                response: None,
                prompt_tokens: None,
                completion_tokens: None,
                total_tokens: None,
                cost_micro_usd: None,
                latency_ms: started.elapsed().as_millis() as i64,
                error: Some(last_error),
            },
        ))
    }
}

/// The result of the chain, owned until it is written.
pub struct OwnedResult {
    status: CallStatus,
    model_used: Option<String>,
    content: Option<String>,
    finish_reason: Option<String>,
    response: Option<Value>,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    total_tokens: Option<i64>,
    cost_micro_usd: Option<i64>,
    latency_ms: i64,
    error: Option<String>,
}

impl OwnedResult {
    pub fn as_row(&self) -> CallResult<'_> {
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
        metrics::counter!("llm_upstream_attempts_total", "model" => attempt.model.clone(), "outcome" => attempt.outcome)
            .increment(1);
        if attempt.outcome != "skipped" {
            metrics::histogram!("llm_upstream_duration_seconds", "model" => attempt.model.clone())
                .record(attempt.latency_ms as f64 / 1000.0);
        }
        if attempt.outcome == "fallback" {
            metrics::counter!("llm_fallbacks_total", "model_group" => model_group.to_owned())
                .increment(1);
        }
    }
}

/// Extends the lease while a call runs, so a long call is not taken for a dead one. Abort the
/// handle when the call is finished.
pub fn keep_lease(db: PgPool, call: &ClaimedCall, lease: Duration) -> tokio::task::JoinHandle<()> {
    let (call_id, token) = (call.call_id, call.lease_token);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(lease / 3);
        interval.tick().await;
        loop {
            interval.tick().await;
            match db::calls::extend_lease(&db, call_id, token, lease.as_secs_f64()).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "could not extend lease"),
            }
        }
    })
}

/// Settles a job found `completing` (waiting on its calls) after a call's result was committed.
/// The status is read after that commit: whichever of the call's writer and the complete request
/// commits last sees the other's write, so one of them settles.
async fn settle_completing(db: &PgPool, job_id: Uuid) -> sqlx::Result<()> {
    if db::jobs::settle(db, job_id).await? == Settlement::Settled {
        tracing::info!(%job_id, "job settled after its last call");
    }
    Ok(())
}
