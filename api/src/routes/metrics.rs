//! `GET /metrics`: Prometheus text format. Counters and histograms are recorded where things
//! happen (HTTP layer, workers); gauges of state (queue depth, oldest queued call, credits held)
//! are read from Redis and PostgreSQL at scrape time, so every process reports the same truth.
//! The metrics name every model group and count every tenant's calls, so on the public port they
//! take the admin key; `METRICS_ADDR` serves them without a key on a private address.
//! Label values never come from the client as sent: unknown methods count as `other` and
//! unmatched paths as `unmatched`, so no request can add a series.

use std::sync::OnceLock;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AdminAuth;
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

/// The keyless metrics listener's router (`METRICS_ADDR`): only `GET /metrics`.
pub fn keyless_router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(state)
}

/// Prometheus metrics (text exposition format). Takes the admin key; `METRICS_ADDR` serves the
/// same without a key on a private address.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "Metrics in Prometheus text format", content_type = "text/plain"),
        (status = 401, description = "Missing or unknown key", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not the admin key", body = crate::openapi::ErrorBody),
    ),
    security(("admin_key" = []), ("bearer" = []))
)]
async fn render(_admin: AdminAuth, state: State<AppState>) -> Response {
    scrape(state).await
}

async fn scrape(State(state): State<AppState>) -> Response {
    let queue_depth = state.queue.len().await.ok();
    // A scalar subquery's count and coalesced sum are never null; the age is null with no
    // queued call.
    let gauges = sqlx::query!(
        r#"select (select count(*) from llm_calls where finished_at is null and status = 'queued') as "queued!",
                (select extract(epoch from now() - min(enqueued_at))::float8 from llm_calls
                 where finished_at is null and status = 'queued') as "oldest?",
                (select coalesce(sum(credits_reserved), 0)::int8 from credit_balances) as "held!""#
    )
    .fetch_one(&state.db)
    .await
    .map(|r| (r.queued, r.oldest, r.held));
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
    let method = method_label(request.method());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The method as a label: the standard ones by name, anything else (a client may send any token
/// as a method) as `other`.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::PATCH, "PATCH"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN
        .iter()
        .find(|(known, _)| known == method)
        .map_or("other", |(_, label)| label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        let invented = Method::from_bytes(b"XYZZY").expect("a token is a valid method");
        assert_eq!(method_label(&invented), "other");
    }
}
