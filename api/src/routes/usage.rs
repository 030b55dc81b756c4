//! Usage reports: `GET /api/teams/{id}/usage` (team or admin) and
//! `GET /api/organizations/{id}/usage` (admin) for a month (`period=YYYY-MM`) or a range of days
//! (`from`/`to`), in the guide's shape plus a per-day series.

use axum::extract::State;
use axum::response::Json as JsonResponse;
use saasllm_shared::db;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AdminAuth, Caller};
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::lookup;
use crate::state::AppState;
use crate::usage_period::PeriodQuery;

mod report;

use report::{OrganizationUsageReport, TeamUsageReport, UsageRows};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(team_usage))
        .routes(routes!(organization_usage))
}

/// A team's usage: jobs created in the period, their outcome, tokens and LLM cost, by job type
/// and by day.
#[utoipa::path(
    get,
    path = "/api/teams/{team_id}/usage",
    tag = "usage",
    params(("team_id" = String, Path), PeriodQuery),
    responses((status = 200, description = "The team's usage", body = TeamUsageReport)),
    security(("bearer" = []), ("admin_key" = []))
)]
async fn team_usage(
    caller: Caller,
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    Query(query): Query<PeriodQuery>,
) -> Result<JsonResponse<TeamUsageReport>, ApiError> {
    caller.ensure_can_see_team(&team_id)?;
    let range = query.range()?;
    lookup::team(&state.db, &team_id).await?;
    let rows = UsageRows::load(&state.db, std::slice::from_ref(&team_id), &range).await?;
    Ok(JsonResponse(TeamUsageReport::new(team_id, range, &rows)))
}

/// An organization's usage (admin): totals, by job type, by day, and per team.
#[utoipa::path(
    get,
    path = "/api/organizations/{organization_id}/usage",
    tag = "usage",
    params(("organization_id" = String, Path), PeriodQuery),
    responses((status = 200, description = "The organization's usage", body = OrganizationUsageReport)),
    security(("admin_key" = []), ("bearer" = []))
)]
async fn organization_usage(
    _admin: AdminAuth,
    State(state): State<AppState>,
    Path(organization_id): Path<String>,
    Query(query): Query<PeriodQuery>,
) -> Result<JsonResponse<OrganizationUsageReport>, ApiError> {
    let range = query.range()?;
    lookup::organization(&state.db, &organization_id).await?;
    let team_ids: Vec<String> = db::teams::list_by_organization(&state.db, &organization_id)
        .await?
        .into_iter()
        .map(|t| t.team_id)
        .collect();
    let rows = UsageRows::load(&state.db, &team_ids, &range).await?;
    let teams = team_ids
        .iter()
        .map(|team| (team.clone(), rows.block(Some(team))))
        .collect();
    Ok(JsonResponse(OrganizationUsageReport::new(
        organization_id,
        range,
        &rows,
        teams,
    )))
}
