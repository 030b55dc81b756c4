//! Sends webhook deliveries: claims the due ones from PostgreSQL, POSTs each signed
//! (Standard Webhooks), records every attempt, and retries with exponential backoff until the
//! receiver answers 2xx or the retry window ends. Sends run concurrently, each bounded by a
//! request timeout, so a slow or dead receiver holds one slot and never the others. A target the
//! address policy refuses is never connected to, and its delivery fails at once.

use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use saasllm_shared::db;
use saasllm_shared::db::webhooks::{AttemptResult, ClaimedDelivery, DeliveryStatus};
use saasllm_shared::domain::backoff::{Backoff, Jitter};
use saasllm_shared::domain::net_policy::TargetPolicy;
use saasllm_shared::domain::webhook;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::webhook_client::{self, TARGET_NOT_ALLOWED};

/// Settings of the webhook sender.
#[derive(Debug, Clone, Copy)]
pub struct WebhookSettings {
    /// How often due deliveries are looked for.
    pub poll: Duration,
    /// Deliveries in flight at once in this process.
    pub concurrency: usize,
    /// How long a receiver has to answer one attempt.
    pub timeout: Duration,
    /// Delay before the second attempt; doubled for each further attempt.
    pub retry_base: Duration,
    /// Longest delay between two attempts.
    pub retry_max: Duration,
    /// Age of a delivery after which a failed attempt is its last.
    pub retry_window: Duration,
    /// Which addresses deliveries may connect to.
    pub targets: TargetPolicy,
}

impl WebhookSettings {
    /// The delay after failed attempt number `attempt` (1 for the first): `retry_base` doubled
    /// per earlier failure, at most `retry_max`, then randomized by ±20% so that deliveries that
    /// failed together (a receiver outage) do not all come back at the same instant.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let backoff = Backoff {
            base: self.retry_base,
            max: self.retry_max,
            jitter: Jitter::Spread(0.2),
        };
        backoff.delay(attempt)
    }

    /// How long a claimed delivery is withheld from other workers: beyond the request timeout,
    /// so only a worker that died mid-attempt lets another one send it again.
    fn claim_lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(5)
    }
}

/// Sends due deliveries until cancelled, then lets those in flight finish (each is bounded by
/// the request timeout; one cut short is sent again when its claim expires).
pub async fn run(db: PgPool, settings: WebhookSettings, cancel: CancellationToken) {
    let sender = match Sender::new(settings) {
        Ok(sender) => sender,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are not sent by this process");
            return;
        }
    };
    let mut in_flight = JoinSet::new();
    let mut interval = tokio::time::interval(settings.poll);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The last claim filled every free slot, so more deliveries may be due: claim again as soon
    // as a slot frees rather than at the next tick.
    let mut backlog = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = interval.tick() => {}
            Some(_) = in_flight.join_next(), if backlog => {}
        }
        while in_flight.try_join_next().is_some() {}
        let free = settings.concurrency.saturating_sub(in_flight.len());
        if free == 0 {
            backlog = true;
            continue;
        }
        match db::webhooks::claim_due(&db, free as i64, settings.claim_lease()).await {
            Ok(claims) => {
                backlog = claims.len() == free;
                for claim in claims {
                    in_flight.spawn(sender.clone().deliver(db.clone(), claim));
                }
            }
            Err(e) => {
                backlog = false;
                tracing::warn!(error = %e, "cannot claim webhook deliveries; retrying next interval");
            }
        }
    }
    while in_flight.join_next().await.is_some() {}
}

/// The HTTP client and settings every send shares.
#[derive(Clone)]
struct Sender {
    client: reqwest::Client,
    settings: WebhookSettings,
}

impl Sender {
    fn new(settings: WebhookSettings) -> reqwest::Result<Self> {
        let client = webhook_client::client(settings.timeout, settings.targets)?;
        Ok(Self { client, settings })
    }

    /// One attempt of one delivery, recorded with its outcome.
    async fn deliver(self, db: PgPool, claim: ClaimedDelivery) {
        let result = self.attempt(&claim).await;
        let attempt = u32::try_from(claim.attempts).unwrap_or(0) + 1;
        let recorded = db::webhooks::record_attempt(
            &db,
            &claim,
            &result,
            self.settings.retry_delay(attempt),
            self.settings.retry_window,
        )
        .await;
        let delivery_id = claim.delivery_id;
        match recorded {
            Ok(Some(status)) => {
                let outcome = match status {
                    DeliveryStatus::Delivered => "delivered",
                    DeliveryStatus::Pending => "retry",
                    DeliveryStatus::Failed => "failed",
                };
                metrics::counter!("webhook_deliveries_total", "outcome" => outcome).increment(1);
                match status {
                    DeliveryStatus::Delivered => {
                        tracing::debug!(%delivery_id, attempt, "webhook delivered");
                    }
                    DeliveryStatus::Pending => tracing::info!(
                        %delivery_id, attempt, http_status = result.http_status, error = result.error.as_deref(),
                        "webhook attempt failed; will retry"
                    ),
                    DeliveryStatus::Failed => tracing::warn!(
                        %delivery_id, attempt, http_status = result.http_status, error = result.error.as_deref(),
                        "webhook attempt failed at the end of the retry window; giving up"
                    ),
                }
            }
            Ok(None) => {
                tracing::info!(%delivery_id, attempt, "webhook claim was taken over; attempt not recorded");
            }
            Err(e) => tracing::warn!(
                %delivery_id, attempt, error = %e,
                "cannot record webhook attempt; the delivery is retried when its claim expires"
            ),
        }
    }

    /// POSTs the payload, signed, and reports what came back.
    async fn attempt(&self, claim: &ClaimedDelivery) -> AttemptResult {
        let Some(key) = claim
            .secret
            .as_deref()
            .and_then(|secret| webhook::parse_secret(secret).ok())
        else {
            // No later attempt could sign it either (the job's or the team's secret is gone or
            // unreadable): the delivery fails now rather than at the end of the retry window.
            return AttemptResult {
                http_status: None,
                error: Some("no usable signing secret; nothing was sent".into()),
                latency: Duration::ZERO,
                is_final: true,
            };
        };
        // The URL was checked when it was set, but under the policy of that time, and the
        // client resolves only host names: an address literal is checked here.
        let permitted = reqwest::Url::parse(&claim.url)
            .is_ok_and(|url| self.settings.targets.check_url(&url).is_ok());
        if !permitted {
            return AttemptResult {
                http_status: None,
                error: Some(TARGET_NOT_ALLOWED.into()),
                latency: Duration::ZERO,
                is_final: true,
            };
        }
        let body = claim.payload.to_string().into_bytes();
        let webhook_id = claim.delivery_id.to_string();
        let timestamp = Utc::now().timestamp();
        let signature = webhook::sign(&key, &webhook_id, timestamp, &body);
        let started = Instant::now();
        let sent = self
            .client
            .post(&claim.url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("webhook-id", &webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let latency = started.elapsed();
        match sent {
            Ok(response) => {
                let status = response.status();
                AttemptResult {
                    http_status: Some(status.as_u16()),
                    error: (!status.is_success())
                        .then(|| format!("receiver answered {}", status.as_u16())),
                    latency,
                    is_final: false,
                }
            }
            Err(e) => {
                let (error, is_final) = webhook_client::describe(&e);
                // The details stay in the operator's log; the URL is left out (it may carry the
                // receiver's token).
                tracing::debug!(delivery_id = %claim.delivery_id, error = ?e.without_url(), "webhook attempt failed");
                AttemptResult {
                    http_status: None,
                    error: Some(error.into()),
                    latency,
                    is_final,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WebhookSettings {
        WebhookSettings {
            poll: Duration::from_secs(1),
            concurrency: 4,
            timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(3_600),
            retry_window: Duration::from_secs(93_600),
            targets: TargetPolicy::default(),
        }
    }

    #[test]
    fn retry_delays_double_from_the_base_up_to_the_cap_with_jitter() {
        let settings = settings();
        for (attempt, nominal) in [(1, 5.0), (2, 10.0), (3, 20.0), (4, 40.0), (10, 2_560.0)] {
            for _ in 0..100 {
                let delay = settings.retry_delay(attempt).as_secs_f64();
                assert!(
                    (nominal * 0.8..=nominal * 1.2).contains(&delay),
                    "attempt {attempt}: {delay}"
                );
            }
        }
        for attempt in [11, 20, 40, u32::MAX] {
            let delay = settings.retry_delay(attempt).as_secs_f64();
            assert!((2_880.0..=3_600.0).contains(&delay), "{attempt}: {delay}");
        }
    }

    #[test]
    fn a_claim_outlives_the_attempt_it_covers() {
        assert!(settings().claim_lease() > settings().timeout);
    }
}
