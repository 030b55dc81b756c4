//! Usage reports: `GET /api/teams/{id}/usage` (team or admin) and
//! `GET /api/organizations/{id}/usage` (admin) for a month (`period=YYYY-MM`) or a range of days
//! (`from`/`to`), in the guide's shape plus a per-day series.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Json as JsonResponse;
use chrono::NaiveDate;
use saasllm_shared::db;
use saasllm_shared::db::usage::{DailyUsageRow, OpenAiUsageRow, UsageRow};
use saasllm_shared::domain::money::{MicroUsd, Usd};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AdminAuth, Caller, team_not_found};
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::routes::usage_period::PeriodQuery;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(team_usage))
        .routes(routes!(organization_usage))
}

/// The guide's `summary` block.
#[derive(Serialize, ToSchema)]
struct Summary {
    total_jobs: i64,
    successful_jobs: i64,
    failed_jobs: i64,
    total_cost_usd: Usd,
    total_tokens: i64,
    /// `total_cost_usd / total_jobs`, rounded to the micro-dollar.
    avg_cost_per_job: Usd,
    /// Credits deducted in the period.
    credits_used: i64,
}

/// One job type's figures in `job_types`.
#[derive(Serialize, ToSchema)]
struct JobTypeUsage {
    count: i64,
    cost_usd: Usd,
}

/// Spend of the OpenAI-compatible path in the period (`/v1` requests and the lines of batches,
/// which also count as jobs of type `openai_batch` above), by endpoint.
#[derive(Serialize, ToSchema, Default)]
struct OpenAiUsage {
    requests: i64,
    cost_usd: Usd,
    total_tokens: i64,
    /// `chat` and `embeddings`, each with its `requests`, `cost_usd` and `total_tokens`.
    #[schema(value_type = Object)]
    endpoints: BTreeMap<String, OpenAiEndpointUsage>,
}

#[derive(Serialize, ToSchema)]
struct OpenAiEndpointUsage {
    requests: i64,
    cost_usd: Usd,
    total_tokens: i64,
}

fn openai_report<'a>(rows: impl Iterator<Item = &'a OpenAiUsageRow>) -> OpenAiUsage {
    let mut endpoints: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for row in rows {
        let entry = endpoints
            .entry(row.endpoint.as_str().to_owned())
            .or_default();
        entry.0 += row.requests;
        entry.1 += row.cost_micro_usd;
        entry.2 += row.tokens;
    }
    let total = |pick: fn(&(i64, i64, i64)) -> i64| endpoints.values().map(pick).sum::<i64>();
    OpenAiUsage {
        requests: total(|e| e.0),
        cost_usd: MicroUsd(total(|e| e.1)).usd(),
        total_tokens: total(|e| e.2),
        endpoints: endpoints
            .iter()
            .map(|(name, &(requests, cost, tokens))| {
                let usage = OpenAiEndpointUsage {
                    requests,
                    cost_usd: MicroUsd(cost).usd(),
                    total_tokens: tokens,
                };
                (name.clone(), usage)
            })
            .collect(),
    }
}

/// One UTC day's figures, for charts (days without jobs are left out).
#[derive(Serialize, ToSchema)]
struct DailyUsage {
    date: NaiveDate,
    total_jobs: i64,
    successful_jobs: i64,
    failed_jobs: i64,
    total_cost_usd: Usd,
    total_tokens: i64,
}

impl From<&DailyUsageRow> for DailyUsage {
    fn from(row: &DailyUsageRow) -> Self {
        Self {
            date: row.day,
            total_jobs: row.jobs,
            successful_jobs: row.completed,
            failed_jobs: row.failed,
            total_cost_usd: MicroUsd(row.cost_micro_usd).usd(),
            total_tokens: row.tokens,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct TeamUsageReport {
    team_id: String,
    /// `YYYY-MM`, or `YYYY-MM-DD/YYYY-MM-DD` for a from..to range.
    period: String,
    from: NaiveDate,
    to: NaiveDate,
    summary: Summary,
    job_types: BTreeMap<String, JobTypeUsage>,
    openai: OpenAiUsage,
    daily: Vec<DailyUsage>,
}

/// A team's figures inside an organization report.
#[derive(Serialize, ToSchema)]
struct TeamUsageBlock {
    summary: Summary,
    job_types: BTreeMap<String, JobTypeUsage>,
    openai: OpenAiUsage,
}

#[derive(Serialize, ToSchema)]
struct OrganizationUsageReport {
    organization_id: String,
    period: String,
    from: NaiveDate,
    to: NaiveDate,
    summary: Summary,
    job_types: BTreeMap<String, JobTypeUsage>,
    openai: OpenAiUsage,
    daily: Vec<DailyUsage>,
    teams: BTreeMap<String, TeamUsageBlock>,
}

/// The guide's `summary` and `job_types` blocks over some rows.
fn report(rows: &[&UsageRow], credits_used: i64) -> (Summary, BTreeMap<String, JobTypeUsage>) {
    let jobs: i64 = rows.iter().map(|r| r.jobs).sum();
    let cost: i64 = rows.iter().map(|r| r.cost_micro_usd).sum();
    let mut job_types: BTreeMap<String, JobTypeUsage> = BTreeMap::new();
    let mut type_costs: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for row in rows {
        let entry = type_costs.entry(&row.job_type).or_default();
        entry.0 += row.jobs;
        entry.1 += row.cost_micro_usd;
    }
    for (name, (count, cost)) in type_costs {
        job_types.insert(
            name.to_owned(),
            JobTypeUsage {
                count,
                cost_usd: MicroUsd(cost).usd(),
            },
        );
    }
    let summary = Summary {
        total_jobs: jobs,
        successful_jobs: rows.iter().map(|r| r.completed).sum(),
        failed_jobs: rows.iter().map(|r| r.failed).sum(),
        total_cost_usd: MicroUsd(cost).usd(),
        total_tokens: rows.iter().map(|r| r.tokens).sum(),
        avg_cost_per_job: MicroUsd(cost).mean(jobs).usd(),
        credits_used,
    };
    (summary, job_types)
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
    if db::teams::find(&state.db, &team_id).await?.is_none() {
        return Err(team_not_found(&team_id));
    }
    let teams = [team_id.clone()];
    let (rows, credits, daily, openai) = tokio::try_join!(
        db::usage::by_team_and_type(&state.db, &teams, range.start, range.end),
        db::usage::credits_used(&state.db, &teams, range.start, range.end),
        db::usage::by_day(&state.db, &teams, range.start, range.end),
        db::usage::openai_by_endpoint(&state.db, &teams, range.start, range.end),
    )?;
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
    if db::organizations::find(&state.db, &organization_id)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound(format!(
            "Organization '{organization_id}' not found"
        )));
    }
    let team_ids: Vec<String> = db::teams::list_by_organization(&state.db, &organization_id)
        .await?
        .into_iter()
        .map(|t| t.team_id)
        .collect();
    let (rows, credits, daily, openai) = tokio::try_join!(
        db::usage::by_team_and_type(&state.db, &team_ids, range.start, range.end),
        db::usage::credits_used(&state.db, &team_ids, range.start, range.end),
        db::usage::by_day(&state.db, &team_ids, range.start, range.end),
        db::usage::openai_by_endpoint(&state.db, &team_ids, range.start, range.end),
    )?;
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
