//! `saasllm-worker`: parse configuration, start tracing, run until SIGTERM, exit 0.

use clap::Parser;
use saasllm_shared::redis_conn::RedisHandle;
use saasllm_worker::{Upstream, WorkerConfig, run};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = WorkerConfig::parse();
    saasllm_shared::telemetry::init(&config.process.telemetry);
    if let Some(addr) = config.metrics_addr {
        saasllm_shared::telemetry::prometheus_builder()
            .with_http_listener(addr)
            .install()
            .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
        // Present from the first scrape, before any call has run.
        metrics::gauge!("worker_calls_in_flight").set(0.0);
        tracing::info!(%addr, "metrics listening");
    }
    let db = saasllm_shared::db::connect_and_migrate(&config.process.database).await?;
    let redis = RedisHandle::new(&config.process.redis)?;
    let engine = config.worker.engine(Upstream::new(&config.process.llm)?);
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        saasllm_shared::shutdown::signal().await;
        on_signal.cancel();
    });
    run(db, redis, engine, config.worker, cancel).await
}
