//! `GET /health`: the state of PostgreSQL and Redis; 503 when either is down.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health))
}

/// The state of the service and of its dependencies.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses(
        (status = 200, description = "PostgreSQL and Redis answer", content_type = "application/json",
         example = json!({"status": "healthy", "version": "0.1.0", "checks": {"postgres": {"status": "ok"}, "redis": {"status": "ok"}}})),
        (status = 503, description = "PostgreSQL or Redis does not answer; `checks` says which", content_type = "application/json"),
    )
)]
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let postgres = async {
        let query = sqlx::query_scalar!(r#"select 1 as "one!""#).fetch_one(&state.db);
        match tokio::time::timeout(CHECK_TIMEOUT, query).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    };
    let (postgres, redis) = tokio::join!(postgres, state.redis.ping(CHECK_TIMEOUT));
    let healthy = postgres.is_ok() && redis.is_ok();
    let describe = |r: &Result<(), String>| match r {
        Ok(()) => json!({"status": "ok"}),
        Err(e) => json!({"status": "error", "error": e}),
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "version": env!("CARGO_PKG_VERSION"),
        "checks": { "postgres": describe(&postgres), "redis": describe(&redis) },
    });
    if !healthy {
        tracing::warn!(%body, "health check failed");
    }
    (status, axum::Json(body))
}
