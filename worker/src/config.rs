//! Settings of the worker (`saasllm-worker --help`); the API flattens `WorkerOptions` too, for
//! the workers it runs in-process.

use std::time::Duration;

use saasllm_shared::config::{DatabaseConfig, LlmConfig, RedisConfig, TelemetryConfig};

use crate::reconciler::ReconcilerSettings;

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
    /// Lease of a running call, in seconds; renewed while it runs. A call whose worker dies is
    /// re-queued once its lease has expired.
    #[arg(
        long = "call-lease-secs",
        env = "CALL_LEASE_SECS",
        default_value_t = 30
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
}

impl WorkerOptions {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs.max(3))
    }

    pub fn reconciler(&self) -> ReconcilerSettings {
        ReconcilerSettings {
            interval: Duration::from_secs(self.reconcile_interval_secs.max(1)),
            grace: Duration::from_secs(self.reconcile_grace_secs),
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
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub redis: RedisConfig,
    #[command(flatten)]
    pub llm: LlmConfig,
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
    /// Address to serve Prometheus metrics on (`GET /metrics`), e.g. 0.0.0.0:9100; off when unset.
    /// Gauges of shared state (queue depth, credits held) are on the API's `/metrics`.
    #[arg(long = "metrics-addr", env = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        WorkerConfig::command().debug_assert();
    }
}
