//! A job's webhook deliveries and every attempt made, so a team can see why its receiver did or
//! did not get an event.

use axum::extract::State;
use axum::response::Json as JsonResponse;
use saasllm_shared::db;
use saasllm_shared::db::webhooks::DeliveryStatus;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::Path;
use crate::job_access::visible_job;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_webhooks))
}

/// The job's webhook deliveries (`pending`, `delivered` or `failed`), each with its payload and
/// its attempts in order.
#[utoipa::path(
    get,
    path = "/api/jobs/{job_id}/webhooks",
    tag = "jobs",
    params(("job_id" = Uuid, Path)),
    responses((status = 200, description = "The job's deliveries and their attempts", body = serde_json::Value,
        example = json!({"job_id": "0193...", "deliveries": [{"delivery_id": "0193...", "event_type": "job.settled",
            "url": "https://hooks.example.com/saasllm", "status": "delivered", "attempt_count": 2,
            "next_attempt_at": null, "last_http_status": 200, "last_error": null,
            "created_at": "2026-11-28T10:00:00Z", "delivered_at": "2026-11-28T10:00:05Z", "payload": {"type": "job.settled"},
            "attempts": [
                {"attempt_number": 1, "attempted_at": "2026-11-28T10:00:00Z", "http_status": 503, "error": "receiver answered 503", "latency_ms": 12},
                {"attempt_number": 2, "attempted_at": "2026-11-28T10:00:05Z", "http_status": 200, "error": null, "latency_ms": 9}]}]}))),
    security(("bearer" = []), ("admin_key" = []))
)]
async fn list_webhooks(
    caller: Caller,
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<JsonResponse<serde_json::Value>, ApiError> {
    let job = visible_job(&state, &caller, &job_id).await?;
    let deliveries = db::webhooks::list_for_job(&state.db, job.job_id).await?;
    let deliveries: Vec<_> = deliveries
        .into_iter()
        .map(|(delivery, attempts)| {
            let pending = delivery.status == DeliveryStatus::Pending;
            json!({
                "delivery_id": delivery.delivery_id,
                "event_type": delivery.event_type,
                "url": delivery.url,
                "status": delivery.status.as_str(),
                "attempt_count": delivery.attempts,
                "next_attempt_at": pending.then_some(delivery.next_attempt_at),
                "last_http_status": delivery.last_http_status,
                "last_error": delivery.last_error,
                "created_at": delivery.created_at,
                "delivered_at": delivery.delivered_at,
                "payload": delivery.payload,
                "attempts": attempts.iter().map(|a| json!({
                    "attempt_number": a.attempt_number,
                    "attempted_at": a.attempted_at,
                    "http_status": a.http_status,
                    "error": a.error,
                    "latency_ms": a.latency_ms,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(JsonResponse(json!({
        "job_id": job.job_id,
        "deliveries": deliveries,
    })))
}
