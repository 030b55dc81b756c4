//! `saasllm-worker`: parse configuration, start tracing, run until SIGTERM, exit 0.

use clap::Parser;
use saasllm_shared::redis_conn::RedisHandle;
use saasllm_worker::upstream::Upstream;
use saasllm_worker::{WorkerConfig, run};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = WorkerConfig::parse();
    saasllm_shared::telemetry::init(&config.telemetry);
    let db = saasllm_shared::db::connect_and_migrate(&config.database).await?;
    let redis = RedisHandle::new(&config.redis)?;
    let upstream = Upstream::new(&config.llm)?;
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        saasllm_shared::shutdown::signal().await;
        on_signal.cancel();
    });
    run(db, redis, upstream, config.worker, cancel).await
}
