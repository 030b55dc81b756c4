//! Usage reports for a month: `GET /api/teams/{id}/usage?period=YYYY-MM` (team or admin) and
//! `GET /api/organizations/{id}/usage?period=YYYY-MM` (admin), in the guide's shape.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::response::Json as JsonResponse;
use axum::routing::get;
use chrono::{DateTime, NaiveDate, Utc};
use saasllm_shared::db;
use saasllm_shared::db::usage::UsageRow;
use saasllm_shared::domain::money::MicroUsd;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{AdminAuth, Caller, team_not_found};
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/teams/{team_id}/usage", get(team_usage))
        .route(
            "/api/organizations/{organization_id}/usage",
            get(organization_usage),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeriodQuery {
    period: Option<String>,
}

/// `YYYY-MM` -> [first instant of the month, first instant of the next).
fn month(period: Option<&str>) -> Result<(String, DateTime<Utc>, DateTime<Utc>), ApiError> {
    let period = period.ok_or_else(|| {
        ApiError::BadRequest("period query parameter is required (YYYY-MM)".into())
    })?;
    let invalid = || {
        ApiError::BadRequest(format!(
            "Invalid period '{period}': expected YYYY-MM, e.g. 2025-10"
        ))
    };
    let (year, month) = period.split_once('-').ok_or_else(invalid)?;
    if year.len() != 4 || month.len() != 2 {
        return Err(invalid());
    }
    let (year, month): (i32, u32) = (
        year.parse().map_err(|_| invalid())?,
        month.parse().map_err(|_| invalid())?,
    );
    let start = NaiveDate::from_ymd_opt(year, month, 1).ok_or_else(invalid)?;
    let end = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    }
    .ok_or_else(invalid)?;
    let at_midnight = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .ok_or_else(invalid)
    };
    Ok((period.to_owned(), at_midnight(start)?, at_midnight(end)?))
}

/// The guide's `summary` and `job_types` blocks over some rows.
fn report(rows: &[&UsageRow], credits_used: i64) -> (Value, Value) {
    let jobs: i64 = rows.iter().map(|r| r.jobs).sum();
    let cost: i64 = rows.iter().map(|r| r.cost_micro_usd).sum();
    let mut job_types: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for row in rows {
        let entry = job_types.entry(&row.job_type).or_default();
        entry.0 += row.jobs;
        entry.1 += row.cost_micro_usd;
    }
    let summary = json!({
        "total_jobs": jobs,
        "successful_jobs": rows.iter().map(|r| r.completed).sum::<i64>(),
        "failed_jobs": rows.iter().map(|r| r.failed).sum::<i64>(),
        "total_cost_usd": MicroUsd(cost).as_usd(),
        "total_tokens": rows.iter().map(|r| r.tokens).sum::<i64>(),
        "avg_cost_per_job": if jobs == 0 { 0.0 } else { MicroUsd(cost).as_usd() / jobs as f64 },
        "credits_used": credits_used,
    });
    let job_types: serde_json::Map<String, Value> = job_types
        .into_iter()
        .map(|(name, (count, cost))| {
            (
                name.to_owned(),
                json!({"count": count, "cost_usd": MicroUsd(cost).as_usd()}),
            )
        })
        .collect();
    (summary, Value::Object(job_types))
}

async fn team_usage(
    caller: Caller,
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    Query(query): Query<PeriodQuery>,
) -> Result<JsonResponse<Value>, ApiError> {
    caller.ensure_can_see_team(&team_id)?;
    let (period, from, to) = month(query.period.as_deref())?;
    if db::teams::find(&state.db, &team_id).await?.is_none() {
        return Err(team_not_found(&team_id));
    }
    let teams = [team_id.clone()];
    let rows = db::usage::by_team_and_type(&state.db, &teams, from, to).await?;
    let credits: i64 = db::usage::credits_used(&state.db, &teams, from, to)
        .await?
        .iter()
        .map(|(_, n)| n)
        .sum();
    let (summary, job_types) = report(&rows.iter().collect::<Vec<_>>(), credits);
    Ok(JsonResponse(json!({
        "team_id": team_id,
        "period": period,
        "summary": summary,
        "job_types": job_types,
    })))
}

async fn organization_usage(
    _admin: AdminAuth,
    State(state): State<AppState>,
    Path(organization_id): Path<String>,
    Query(query): Query<PeriodQuery>,
) -> Result<JsonResponse<Value>, ApiError> {
    let (period, from, to) = month(query.period.as_deref())?;
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
    let rows = db::usage::by_team_and_type(&state.db, &team_ids, from, to).await?;
    let credits = db::usage::credits_used(&state.db, &team_ids, from, to).await?;
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
    let teams: serde_json::Map<String, Value> = team_ids
        .iter()
        .map(|team| {
            let own: Vec<&UsageRow> = rows.iter().filter(|r| &r.team_id == team).collect();
            let (summary, job_types) = report(&own, credits_of(team));
            (
                team.clone(),
                json!({"summary": summary, "job_types": job_types}),
            )
        })
        .collect();
    Ok(JsonResponse(json!({
        "organization_id": organization_id,
        "period": period,
        "summary": summary,
        "job_types": job_types,
        "teams": teams,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_calendar_months() {
        let (_, from, to) = month(Some("2025-12")).expect("valid");
        assert_eq!(from.to_rfc3339(), "2025-12-01T00:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        for bad in [
            None,
            Some("2025-13"),
            Some("2025-1"),
            Some("25-10"),
            Some("2025/10"),
            Some("abcd-ef"),
        ] {
            assert!(month(bad).is_err(), "{bad:?}");
        }
    }
}
