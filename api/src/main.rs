//! `saasllm-api`: parse configuration, start tracing, build, serve until SIGTERM.

use clap::Parser;
use saasllm_api::{ApiConfig, Application};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ApiConfig::parse();
    saasllm_shared::telemetry::init(&config.process.telemetry);
    if config.migrate_only {
        // The database layer logs how many migrations it applied, if any.
        saasllm_shared::db::connect_and_migrate(&config.process.database).await?;
        return Ok(());
    }
    let app = Application::build(&config).await?;
    app.run_until(saasllm_shared::shutdown::signal()).await?;
    Ok(())
}
