//! Usage reports: `GET /api/teams/{id}/usage` (team or admin) and
//! `GET /api/organizations/{id}/usage` (admin) for a month (`period=YYYY-MM`) or a range of days
//! (`from`/`to`), in the guide's shape plus a per-day series.

use axum::extract::State;
use axum::response::Json as JsonResponse;
use saasllm_shared::db;
use saasllm_shared::db::usage::UsageRow;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AdminAuth, Caller};
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::lookup;
use crate::state::AppState;
use crate::usage_period::PeriodQuery;

mod report;

use report::{
    DailyUsage, OrganizationUsageReport, TeamUsageBlock, TeamUsageReport, UsageRows, openai_report,
    report,
};

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
    let UsageRows {
        by_type: rows,
        credits,
        daily,
        openai,
    } = UsageRows::load(&state.db, std::slice::from_ref(&team_id), &range).await?;
    let credits: i64 = credits.iter().map(|(_, n)| n).sum();
    let (summary, job_types) = report(&rows.iter().collect::<Vec<_>>(), credits);
    Ok(JsonResponse(TeamUsageReport {
        team_id,
        period: range.label,
        from: range.first_day,
        to: range.last_day,
        summary,
        job_types,
        openai: openai_report(openai.iter()),
        daily: daily.iter().map(DailyUsage::from).collect(),
    }))
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
    let UsageRows {
        by_type: rows,
        credits,
        daily,
        openai,
    } = UsageRows::load(&state.db, &team_ids, &range).await?;
    let credits_of = |team: &str| {
        credits
            .iter()
            .filter(|(t, _)| t == team)
            .map(|(_, n)| n)
            .sum::<i64>()
    };
    let (summary, job_types) = report(
        &rows.iter().collect::<Vec<_>>(),
        credits.iter().map(|(_, n)| n).sum(),
    );
    let teams = team_ids
        .iter()
        .map(|team| {
            let own: Vec<&UsageRow> = rows.iter().filter(|r| &r.team_id == team).collect();
            let (summary, job_types) = report(&own, credits_of(team));
            let openai = openai_report(openai.iter().filter(|r| &r.team_id == team));
            let block = TeamUsageBlock {
                summary,
                job_types,
                openai,
            };
            (team.clone(), block)
        })
        .collect();
    Ok(JsonResponse(OrganizationUsageReport {
        organization_id,
        period: range.label,
        from: range.first_day,
        to: range.last_day,
        summary,
        job_types,
        openai: openai_report(openai.iter()),
        daily: daily.iter().map(DailyUsage::from).collect(),
        teams,
    }))
}
