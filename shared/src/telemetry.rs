//! Tracing set-up (human-readable or JSON lines, filtered by `RUST_LOG`) and the Prometheus
//! recorder settings shared by the API and the worker.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetryConfig};

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(config: &TelemetryConfig) {
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_logs())
        .with_target(true);
    let _already_set = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Whether log lines may carry ANSI colour codes: only for a person at a terminal (never in a
/// file, a pipe or a log collector), and never when `NO_COLOR` is set to anything non-empty
/// (<https://no-color.org>). Logs go to stdout, so that is the stream checked.
pub fn colour_logs() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::IsTerminal::is_terminal(&std::io::stdout())
}

/// Latency buckets in seconds, from sub-millisecond (the API layer) to minutes (LLM calls).
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

/// A Prometheus recorder builder with the project's histogram buckets for every `*_seconds`
/// metric, so API and worker histograms can be aggregated together.
pub fn prometheus_builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .expect("static bucket list is valid")
}
