//! Settings of the API process (`saasllm-api --help` lists them with their variables).

use std::net::SocketAddr;

use saasllm_shared::config::{
    BillingConfig, DatabaseConfig, LlmConfig, RedisConfig, TelemetryConfig, parse_secret,
};
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
    #[arg(long = "admin-api-key", env = "ADMIN_API_KEY", value_parser = parse_secret)]
    pub admin_api_key: Option<SecretString>,
    /// Largest accepted request body, in bytes.
    #[arg(long = "max-body-bytes", env = "MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub redis: RedisConfig,
    #[command(flatten)]
    pub llm: LlmConfig,
    #[command(flatten)]
    pub billing: BillingConfig,
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        ApiConfig::command().debug_assert();
    }
}
