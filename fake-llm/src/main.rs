//! `fake-llm`: serve the deterministic OpenAI-compatible fake on a fixed address until Ctrl-C or
//! SIGTERM, for benchmarks, docker-compose and the README demo.

use std::net::SocketAddr;

use clap::Parser;
use saasllm_fake_llm::{FakeLlm, FakeLlmConfig};
use tracing_subscriber::EnvFilter;

/// Deterministic OpenAI-compatible chat-completions server (behaviour chosen by model name).
#[derive(Debug, Parser)]
#[command(name = "fake-llm", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "FAKE_LLM_ADDR", default_value = "127.0.0.1:4000")]
    addr: SocketAddr,

    /// Latency added before every response, in milliseconds.
    #[arg(long, env = "FAKE_LLM_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,

    /// Do not keep a log of requests; nothing reads it in the binary and it grows without bound
    /// under benchmarks.
    #[arg(long, env = "FAKE_LLM_NO_RECORD")]
    no_record: bool,

    /// Append one JSON line per chat-completion request (call id header, model, start and end
    /// times) to this file.
    #[arg(long, env = "FAKE_LLM_REQUEST_LOG")]
    request_log: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(saasllm_shared::telemetry::colour_logs())
        .init();

    let llm = FakeLlm::try_start_with(FakeLlmConfig {
        latency_ms: cli.latency_ms,
        addr: cli.addr,
    })?;
    if cli.no_record {
        llm.set_recording(false);
    }
    if let Some(path) = &cli.request_log {
        llm.log_intervals_to(path)?;
    }
    tracing::info!(
        addr = %llm.addr(),
        base_url = %llm.base_url(),
        latency_ms = cli.latency_ms,
        recording = !cli.no_record,
        "fake LLM listening"
    );
    // Ctrl-C locally, SIGTERM under docker/Kubernetes.
    saasllm_shared::shutdown::signal().await;
    tracing::info!(
        total_requests = llm.total_requests(),
        max_concurrent = llm.max_concurrent(),
        "shutting down"
    );
    llm.shutdown().await?;
    Ok(())
}
