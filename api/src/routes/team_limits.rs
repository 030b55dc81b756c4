//! A team's limits (admin): calls running at once, upstream requests and tokens per minute.

use axum::extract::State;
use axum::response::Json as JsonResponse;
use saasllm_shared::db;
use saasllm_shared::domain::limits::TeamLimits;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audited::commit_recorded;
use crate::auth::{AdminAuth, team_not_found};
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::lookup;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(set_limits))
}

/// Sets the team's limits (admin): calls running at once, upstream requests per minute and tokens
/// per minute, each 1 to 1,000,000,000 or null for unlimited. Queued calls over a limit wait for
/// the dispatcher; synchronous requests over it get 429 with `Retry-After`.
#[utoipa::path(
    put,
    path = "/api/teams/{team_id}/limits",
    tag = "teams",
    params(("team_id" = String, Path)),
    request_body(content = LimitsBody, example = json!({"max_concurrent_calls": 8, "requests_per_minute": 600, "tokens_per_minute": null})),
    responses((status = 200, description = "The limits now in force", body = serde_json::Value,
        example = json!({"team_id": "team_engineering", "limits": {"max_concurrent_calls": 8, "requests_per_minute": 600, "tokens_per_minute": null}}))),
    security(("admin_key" = []), ("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(team_id = %team_id))]
async fn set_limits(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    Json(body): Json<LimitsBody>,
) -> Result<JsonResponse<serde_json::Value>, ApiError> {
    let check = |name: &str, value: Option<i64>| -> Result<Option<i32>, ApiError> {
        match value {
            None => Ok(None),
            Some(n) if (1..=1_000_000_000).contains(&n) => Ok(Some(n as i32)),
            Some(_) => Err(ApiError::BadRequest(format!(
                "{name} must be between 1 and 1000000000, or null for unlimited"
            ))),
        }
    };
    let limits = TeamLimits {
        max_concurrent_calls: check("max_concurrent_calls", body.max_concurrent_calls)?,
        requests_per_minute: check("requests_per_minute", body.requests_per_minute)?,
        tokens_per_minute: check("tokens_per_minute", body.tokens_per_minute)?,
    };
    let mut tx = state.db.begin().await?;
    lookup::lock_team(&mut tx, &team_id).await?;
    let before = db::teams::limits(&mut *tx, &team_id)
        .await?
        .ok_or_else(|| team_not_found(&team_id))?;
    let limits = db::teams::set_limits(&mut *tx, &team_id, &limits)
        .await?
        .ok_or_else(|| team_not_found(&team_id))?;
    commit_recorded(
        &admin,
        tx,
        "team.set_limits",
        ("team", &team_id),
        Some(json!(before)),
        Some(json!(limits)),
    )
    .await?;
    // The dispatcher reads limits from Redis; the reconciler copies them there too, so a Redis
    // error here only delays the change by one reconciler interval.
    if let Err(e) = state.queue.set_limits(&[(team_id.clone(), limits)]).await {
        tracing::warn!(error = %e, "could not copy the new limits to Redis; the reconciler will");
    }
    Ok(JsonResponse(json!({"team_id": team_id, "limits": limits})))
}

/// The body of `PUT /api/teams/{team_id}/limits`; a field left out or null is unlimited.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LimitsBody {
    #[serde(default, deserialize_with = "crate::extract::whole_number::optional")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    max_concurrent_calls: Option<i64>,
    #[serde(default, deserialize_with = "crate::extract::whole_number::optional")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    requests_per_minute: Option<i64>,
    #[serde(default, deserialize_with = "crate::extract::whole_number::optional")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    tokens_per_minute: Option<i64>,
}
