//! `GET /metrics`: Prometheus text format. Counters and histograms are recorded where things
//! happen (HTTP layer, workers); gauges of state (queue depth, oldest queued call, credits held)
//! are read from Redis and PostgreSQL at scrape time, so every process reports the same truth.

use std::sync::OnceLock;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// The process-wide recorder (installed once, however many apps a process builds).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = saasllm_shared::telemetry::prometheus_builder().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        handle
    })
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(render))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Metrics in Prometheus text format", content_type = "text/plain"))
)]
async fn render(State(state): State<AppState>) -> Response {
    let queue_depth = state.queue.len().await.ok();
    let gauges: Result<(i64, Option<f64>, i64), sqlx::Error> = sqlx::query_as(
        "select (select count(*) from llm_calls where status = 'queued'),
                (select extract(epoch from now() - min(enqueued_at))::float8 from llm_calls where status = 'queued'),
                (select coalesce(sum(credits_reserved), 0)::int8 from credit_balances)",
    )
    .fetch_one(&state.db)
    .await;
    if let Some(depth) = queue_depth {
        metrics::gauge!("queue_redis_depth").set(depth as f64);
    }
    if let Ok((queued, oldest, held)) = gauges {
        metrics::gauge!("llm_calls_queued").set(queued as f64);
        metrics::gauge!("llm_calls_oldest_queued_age_seconds").set(oldest.unwrap_or(0.0));
        metrics::gauge!("credits_held").set(held as f64);
    }
    let mut response = handle().render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Counts requests by route template (never the raw path: ids would make labels unbounded),
/// method and status, and records their latency.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
