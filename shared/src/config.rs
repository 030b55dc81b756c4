//! Settings shared by the API and the worker, read from environment variables (or flags) by clap.
//! Each binary flattens the parts it needs; tests build these structs directly.

use std::convert::Infallible;
use std::time::Duration;

use secrecy::SecretString;

use crate::domain::money::MicroUsd;

/// Lease of a running call: a call whose holder stops renewing it is re-queued this long after
/// the last renewal. Workers take it as their default (`CALL_LEASE_SECS` overrides it); an API
/// process streaming a call itself always holds it this long.
pub const CALL_LEASE: Duration = Duration::from_secs(30);

/// Parses a secret flag or variable without ever echoing its value.
pub fn parse_secret(value: &str) -> Result<SecretString, Infallible> {
    Ok(SecretString::from(value.to_owned()))
}

/// What every process reads, the API and the worker alike: where its PostgreSQL, Redis and
/// upstream are, and how it logs.
#[derive(Debug, Clone, clap::Args)]
pub struct ProcessConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub redis: RedisConfig,
    #[command(flatten)]
    pub llm: LlmConfig,
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

/// PostgreSQL, the source of truth.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseConfig {
    /// PostgreSQL connection URL. The database is created if it does not exist, and migrations run at start.
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/saasllm",
        value_parser = parse_secret
    )]
    pub url: SecretString,
    /// Maximum connections in this process's PostgreSQL pool.
    #[arg(
        id = "database_max_connections",
        long = "database-max-connections",
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 32
    )]
    pub max_connections: u32,
}

/// Redis, which carries call ids and wake-ups (never the only copy of anything).
#[derive(Debug, Clone, clap::Args)]
pub struct RedisConfig {
    /// Redis connection URL; with `REDIS_CLUSTER=true`, one or more seed node URLs separated by
    /// commas (the other nodes are discovered from them).
    #[arg(id = "redis_url", long = "redis-url", env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", value_parser = parse_secret)]
    pub url: SecretString,
    /// Connect to a Redis Cluster instead of a standalone Redis.
    #[arg(
        long = "redis-cluster",
        env = "REDIS_CLUSTER",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub cluster: bool,
    /// Name of this deployment's queue: every Redis key it uses starts with `{QUEUE_NAME}`, so
    /// several deployments can share one Redis, and on Redis Cluster all keys of one deployment
    /// share a hash tag (one slot). Must not be empty nor contain `{` or `}`.
    #[arg(long = "queue-name", env = "QUEUE_NAME", default_value = "saasllm")]
    pub queue_name: String,
}

impl RedisConfig {
    /// A standalone Redis at `url`, the queue named `queue_name`.
    pub fn standalone(url: &str, queue_name: &str) -> Self {
        Self {
            url: SecretString::from(url.to_owned()),
            cluster: false,
            queue_name: queue_name.to_owned(),
        }
    }
}

/// The OpenAI-compatible upstream (a LiteLLM proxy, or any compatible endpoint).
#[derive(Debug, Clone, clap::Args)]
pub struct LlmConfig {
    /// Base URL of the upstream; `/v1/chat/completions` is appended.
    #[arg(
        id = "llm_base_url",
        long = "llm-base-url",
        env = "LLM_BASE_URL",
        default_value = "http://127.0.0.1:4000"
    )]
    pub base_url: String,
    /// Bearer key sent to the upstream (for LiteLLM, its master key). Optional.
    #[arg(id = "llm_api_key", long = "llm-api-key", env = "LLM_API_KEY", value_parser = parse_secret)]
    pub api_key: Option<SecretString>,
    /// Timeout of one upstream request, in seconds; a timeout moves to the next model of the group.
    #[arg(
        long = "llm-timeout-secs",
        env = "LLM_TIMEOUT_SECS",
        default_value_t = 120
    )]
    pub timeout_secs: u64,
}

/// How credits translate to money.
#[derive(Debug, Clone, clap::Args)]
pub struct BillingConfig {
    /// US dollars of LLM spend one credit buys on the OpenAI-compatible path (budget = credits x this).
    #[arg(long = "usd-per-credit", env = "USD_PER_CREDIT", default_value = "0.10", value_parser = MicroUsd::parse_usd)]
    pub usd_per_credit: MicroUsd,
}

/// Log output.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryConfig {
    /// `text` for people, `json` for log pipelines.
    #[arg(
        long = "log-format",
        env = "LOG_FORMAT",
        default_value = "text",
        value_enum
    )]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info` or `saasllm_api=debug,info`.
    #[arg(long = "log-level", env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
