//! Settings of the worker (`saasllm-worker --help`); the API flattens `WorkerOptions` too, for
//! the workers it runs in-process.

use std::sync::Arc;
use std::time::Duration;

use saasllm_shared::config::{CALL_LEASE, ProcessConfig};
use saasllm_shared::domain::net_policy::TargetPolicy;

use crate::engine::Engine;
use crate::leases;
use crate::reconciler::ReconcilerSettings;
use crate::resilience::{Cooldowns, RetryPolicy};
use crate::upstream::Upstream;
use crate::webhooks::WebhookSettings;

/// Tuning of a worker process.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerOptions {
    /// Calls one worker process runs at the same time.
    #[arg(
        long = "worker-concurrency",
        env = "WORKER_CONCURRENCY",
        default_value_t = 64
    )]
    pub concurrency: usize,
    /// Calls one worker process takes from the queue and claims at once (one Redis script, one
    /// PostgreSQL statement), at most its free slots. Finished results are written in groups of
    /// up to the same size. 1 takes and writes calls one by one.
    #[arg(
        long = "worker-batch-size",
        env = "WORKER_BATCH_SIZE",
        default_value_t = 32
    )]
    pub batch_size: usize,
    /// Milliseconds a saturated worker process waits for more of its slots to free up before it
    /// claims a smaller batch. Slots already free are taken at once, so this delays nothing on
    /// a worker with room to spare; on a busy one it trades a few milliseconds per call for
    /// fewer, larger claims (fewer commits). 0 claims whatever is free at once.
    #[arg(
        long = "worker-claim-wait-ms",
        env = "WORKER_CLAIM_WAIT_MS",
        default_value_t = 3
    )]
    pub claim_wait_ms: u64,
    /// Lease of a running call, in seconds; renewed while it runs. A call whose worker dies is
    /// re-queued once its lease has expired.
    #[arg(
        long = "call-lease-secs",
        env = "CALL_LEASE_SECS",
        default_value_t = CALL_LEASE.as_secs()
    )]
    pub lease_secs: u64,
    /// Seconds between reconciler passes (lost queue entries, expired leases, expired jobs).
    #[arg(
        long = "reconcile-interval-secs",
        env = "RECONCILE_INTERVAL_SECS",
        default_value_t = 2
    )]
    pub reconcile_interval_secs: u64,
    /// Seconds a popped call may take to be claimed before the reconciler pushes it again.
    #[arg(
        long = "reconcile-grace-secs",
        env = "RECONCILE_GRACE_SECS",
        default_value_t = 10
    )]
    pub reconcile_grace_secs: u64,
    /// On SIGTERM, seconds in-flight calls get to finish before the process exits.
    #[arg(
        long = "shutdown-timeout-secs",
        env = "SHUTDOWN_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub shutdown_timeout_secs: u64,
    /// Retries of a transient upstream failure (429, 5xx, refused connection) on the same model
    /// before falling back to the next model of the group.
    #[arg(
        long = "upstream-retries",
        env = "UPSTREAM_RETRIES",
        default_value_t = 2
    )]
    pub upstream_retries: u32,
    /// Ceiling of the first retry's delay in milliseconds (doubled per retry, fully jittered).
    #[arg(
        long = "upstream-retry-base-ms",
        env = "UPSTREAM_RETRY_BASE_MS",
        default_value_t = 200
    )]
    pub upstream_retry_base_ms: u64,
    /// Longest wait before a retry, in milliseconds; an upstream `Retry-After` beyond it makes the
    /// call fall back to the next model instead of waiting.
    #[arg(
        long = "upstream-retry-max-ms",
        env = "UPSTREAM_RETRY_MAX_MS",
        default_value_t = 5_000
    )]
    pub upstream_retry_max_ms: u64,
    /// Consecutive transient failures of one model after which calls skip it for a while
    /// (0 disables cooldowns).
    #[arg(
        long = "model-cooldown-failures",
        env = "MODEL_COOLDOWN_FAILURES",
        default_value_t = 5
    )]
    pub model_cooldown_failures: u32,
    /// Seconds a failing model is skipped (it is still tried when every model of a group is
    /// cooling down).
    #[arg(
        long = "model-cooldown-secs",
        env = "MODEL_COOLDOWN_SECS",
        default_value_t = 30
    )]
    pub model_cooldown_secs: u64,
    /// Milliseconds between looks for due webhook deliveries.
    #[arg(
        long = "webhook-poll-ms",
        env = "WEBHOOK_POLL_MS",
        default_value_t = 1_000
    )]
    pub webhook_poll_ms: u64,
    /// Webhook deliveries one worker process sends at the same time.
    #[arg(
        long = "webhook-concurrency",
        env = "WEBHOOK_CONCURRENCY",
        default_value_t = 32
    )]
    pub webhook_concurrency: usize,
    /// Seconds a webhook receiver has to answer one attempt.
    #[arg(
        long = "webhook-timeout-secs",
        env = "WEBHOOK_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub webhook_timeout_secs: u64,
    /// Delay before the second webhook attempt in milliseconds, doubled for each further attempt.
    #[arg(
        long = "webhook-retry-base-ms",
        env = "WEBHOOK_RETRY_BASE_MS",
        default_value_t = 5_000
    )]
    pub webhook_retry_base_ms: u64,
    /// Longest delay between two webhook attempts, in milliseconds.
    #[arg(
        long = "webhook-retry-max-ms",
        env = "WEBHOOK_RETRY_MAX_MS",
        default_value_t = 3_600_000
    )]
    pub webhook_retry_max_ms: u64,
    /// Seconds after an event during which its delivery is retried; an attempt that fails after
    /// that marks the delivery failed.
    #[arg(
        long = "webhook-retry-window-secs",
        env = "WEBHOOK_RETRY_WINDOW_SECS",
        default_value_t = 93_600
    )]
    pub webhook_retry_window_secs: u64,
    /// Let callback URLs point at loopback, private, link-local and other non-public addresses
    /// and at internal host names (development and tests only). The API checks it when a job is
    /// created, workers on every delivery.
    #[arg(
        long = "webhook-allow-private-targets",
        env = "WEBHOOK_ALLOW_PRIVATE_TARGETS",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub webhook_allow_private_targets: bool,
}

impl WorkerOptions {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs).max(leases::MIN_LEASE)
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.upstream_retries,
            base_delay: Duration::from_millis(self.upstream_retry_base_ms),
            max_delay: Duration::from_millis(self.upstream_retry_max_ms),
        }
    }

    pub fn cooldowns(&self) -> Cooldowns {
        Cooldowns::new(
            self.model_cooldown_failures,
            Duration::from_secs(self.model_cooldown_secs),
        )
    }

    /// The model chain over `upstream` with these retries and a cooldown table of its own.
    pub fn engine(&self, upstream: Upstream) -> Engine {
        Engine::new(upstream, self.retry_policy(), Arc::new(self.cooldowns()))
    }

    pub fn reconciler(&self) -> ReconcilerSettings {
        ReconcilerSettings {
            interval: Duration::from_secs(self.reconcile_interval_secs.max(1)),
            grace: Duration::from_secs(self.reconcile_grace_secs),
        }
    }

    pub fn webhooks(&self) -> WebhookSettings {
        WebhookSettings {
            poll: Duration::from_millis(self.webhook_poll_ms.max(10)),
            concurrency: self.webhook_concurrency.max(1),
            timeout: Duration::from_secs(self.webhook_timeout_secs.max(1)),
            retry_base: Duration::from_millis(self.webhook_retry_base_ms.max(1)),
            retry_max: Duration::from_millis(self.webhook_retry_max_ms.max(1)),
            retry_window: Duration::from_secs(self.webhook_retry_window_secs),
            targets: self.webhook_targets(),
        }
    }

    /// The webhook target policy, the same for the API's creation check and for delivery.
    pub fn webhook_targets(&self) -> TargetPolicy {
        TargetPolicy {
            allow_private: self.webhook_allow_private_targets,
        }
    }
}

/// Everything `saasllm-worker` reads at start.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "saasllm-worker",
    version,
    about = "SaaS LiteLLM queue worker: runs LLM calls with model-group fallback"
)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub worker: WorkerOptions,
    #[command(flatten)]
    pub process: ProcessConfig,
    /// Address to serve Prometheus metrics on (`GET /metrics`), e.g. 0.0.0.0:9100; off when unset.
    /// Gauges of shared state (queue depth, credits held) are on the API's `/metrics`.
    #[arg(long = "metrics-addr", env = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        WorkerConfig::command().debug_assert();
    }

    #[test]
    fn webhooks_are_retried_for_more_than_a_day_by_default() {
        let config = WorkerConfig::parse_from(["saasllm-worker"]);
        assert!(config.worker.webhooks().retry_window > Duration::from_secs(24 * 3_600));
    }

    #[test]
    fn private_webhook_targets_are_refused_unless_allowed_explicitly() {
        let default = WorkerConfig::parse_from(["saasllm-worker"]);
        assert!(!default.worker.webhooks().targets.allow_private);
        let allowed =
            WorkerConfig::parse_from(["saasllm-worker", "--webhook-allow-private-targets", "true"]);
        assert!(allowed.worker.webhooks().targets.allow_private);
    }
}
