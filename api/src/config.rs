//! Settings of the API process (`saasllm-api --help` lists them with their variables).

use std::net::SocketAddr;

use saasllm_shared::config::{BillingConfig, ProcessConfig};
use saasllm_worker::WorkerOptions;
use secrecy::SecretString;

/// Everything the API process reads at start.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "saasllm-api",
    version,
    about = "SaaS LiteLLM: multi-tenant, credit-metered LLM API"
)]
pub struct ApiConfig {
    /// Address to listen on.
    #[arg(long = "bind-addr", env = "BIND_ADDR", default_value = "0.0.0.0:8000")]
    pub bind_addr: SocketAddr,
    /// Admin key (`X-Admin-Key` or `Authorization: Bearer`). When unset, one is generated at start
    /// and printed once to standard error.
    #[arg(long = "admin-api-key", env = "ADMIN_API_KEY", value_parser = parse_admin_key)]
    pub admin_api_key: Option<SecretString>,
    /// Largest accepted request body, in bytes.
    #[arg(long = "max-body-bytes", env = "MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Jobs not completed within this many seconds expire and release their credit hold.
    #[arg(long = "job-ttl-secs", env = "JOB_TTL_SECS", default_value_t = 86_400)]
    pub job_ttl_secs: u64,
    /// How long a synchronous llm-call waits for its result before answering 504 (the call goes on).
    #[arg(
        long = "sync-call-timeout-secs",
        env = "SYNC_CALL_TIMEOUT_SECS",
        default_value_t = 300
    )]
    pub sync_call_timeout_secs: u64,
    /// How long complete waits for a job's unfinished calls before answering 202 `completing`.
    #[arg(
        long = "complete-wait-secs",
        env = "COMPLETE_WAIT_SECS",
        default_value_t = 30
    )]
    pub complete_wait_secs: u64,
    /// Apply the database migrations, then exit (a deployment's migration step, e.g. a Kubernetes
    /// Job run before new API and worker versions roll out).
    #[arg(long = "migrate-only", env = "MIGRATE_ONLY", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub migrate_only: bool,
    /// Run queue workers inside the API process (the all-in-one mode). Set to false when running
    /// `saasllm-worker` processes separately.
    #[arg(long = "embedded-worker", env = "EMBEDDED_WORKER", default_value_t = true, action = clap::ArgAction::Set)]
    pub embedded_worker: bool,
    /// Most client connections served at once; further ones wait in the listen backlog until
    /// one closes (bounds the memory slow or idle clients can hold).
    #[arg(
        long = "max-connections",
        env = "MAX_CONNECTIONS",
        default_value_t = 4_096
    )]
    pub max_connections: u64,
    /// Seconds a client has to send a request's headers; a connection that sends none for this
    /// long (slow or idle keep-alive) is closed.
    #[arg(
        long = "header-read-timeout-secs",
        env = "HEADER_READ_TIMEOUT_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub header_read_timeout_secs: u64,
    /// Seconds a request body may pause between two pieces before the request is refused.
    #[arg(
        long = "body-read-timeout-secs",
        env = "BODY_READ_TIMEOUT_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub body_read_timeout_secs: u64,
    /// Address of a second listener serving only `GET /metrics` without a key, for Prometheus on
    /// a private network (e.g. 127.0.0.1:9100). On the public port `/metrics` takes the admin key.
    #[arg(long = "metrics-addr", env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Largest slice of a team's /v1 budget this process reserves at once, in USD (a slice also
    /// takes at most a quarter of what is free).
    #[arg(long = "budget-slice-max-usd", env = "BUDGET_SLICE_MAX_USD", default_value_t = 1.0,
          value_parser = parse_slice_usd)]
    pub budget_slice_max_usd: f64,
    /// Lease of a budget slice: a process that stops renewing it (it died) has its slice
    /// returned by the reconciler this long after its last renewal.
    #[arg(long = "budget-slice-lease-secs", env = "BUDGET_SLICE_LEASE_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(3..=3_600))]
    pub budget_slice_lease_secs: u64,
    /// A budget slice unused this long goes back to its team.
    #[arg(long = "budget-slice-idle-secs", env = "BUDGET_SLICE_IDLE_SECS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub budget_slice_idle_secs: u64,
    /// How long a sign-in to the web console (`/console`) lasts, in seconds.
    #[arg(long = "console-session-secs", env = "CONSOLE_SESSION_SECS", default_value_t = 8 * 3_600,
          value_parser = clap::value_parser!(u64).range(60..=30 * 86_400))]
    pub console_session_secs: u64,
    #[command(flatten)]
    pub worker: WorkerOptions,
    #[command(flatten)]
    pub process: ProcessConfig,
    #[command(flatten)]
    pub billing: BillingConfig,
}

/// A slice size between one micro-dollar and $1,000,000.
fn parse_slice_usd(value: &str) -> Result<f64, String> {
    let usd: f64 = value
        .parse()
        .map_err(|_| format!("'{value}' is not a number of USD"))?;
    if !(0.000_001..=1_000_000.0).contains(&usd) {
        return Err("must be between 0.000001 and 1000000".into());
    }
    Ok(usd)
}

/// The admin key, refused when it is empty or one of the placeholders that example files and
/// tutorials ship with: a deployment started from an unedited `.env` must not run with a key the
/// whole internet knows.
fn parse_admin_key(value: &str) -> Result<SecretString, String> {
    const PLACEHOLDERS: [&str; 8] = [
        "change-me",
        "changeme",
        "change_me",
        "replace-me",
        "your-admin-key",
        "admin",
        "password",
        "secret",
    ];
    let trimmed = value.trim();
    let lowered = trimmed.to_ascii_lowercase();
    if trimmed.is_empty() {
        return Err("is empty: set a long random value (e.g. `openssl rand -hex 32`)".into());
    }
    if PLACEHOLDERS.contains(&lowered.as_str()) || lowered.starts_with("replace") {
        return Err(format!(
            "is the placeholder `{trimmed}`: set a long random value (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(SecretString::from(value.to_owned()))
}

impl ApiConfig {
    /// The budget slice settings these options describe.
    pub fn budget_slices(&self) -> crate::budget::SliceSettings {
        crate::budget::SliceSettings {
            max_micro_usd: (self.budget_slice_max_usd * 1_000_000.0).round() as i64,
            lease: std::time::Duration::from_secs(self.budget_slice_lease_secs),
            idle_return: std::time::Duration::from_secs(self.budget_slice_idle_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        ApiConfig::command().debug_assert();
    }

    #[test]
    fn placeholder_admin_keys_are_refused() {
        for placeholder in [
            "change-me",
            "CHANGE-ME",
            " changeme ",
            "REPLACE-with-a-key",
            "",
        ] {
            assert!(parse_admin_key(placeholder).is_err(), "{placeholder:?}");
        }
        assert!(parse_admin_key("3f9c0e4b7a1d").is_ok());
    }
}
