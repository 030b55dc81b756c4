//! Usage reports: `GET /api/teams/{id}/usage` (team or admin) and
//! `GET /api/organizations/{id}/usage` (admin) for a month (`period=YYYY-MM`) or a range of days
//! (`from`/`to`), in the guide's shape plus a per-day series.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Json as JsonResponse;
use chrono::{DateTime, Days, NaiveDate, Utc};
use saasllm_shared::db;
use saasllm_shared::db::usage::{DailyUsageRow, UsageRow};
use saasllm_shared::domain::money::MicroUsd;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AdminAuth, Caller, team_not_found};
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::state::AppState;

/// Longest `from`..`to` range, so one request cannot ask for an unbounded daily series.
const MAX_RANGE_DAYS: u64 = 732;

/// Years a report may cover. No job predates 2000, and chrono parses years far outside what
/// PostgreSQL timestamps hold (`-262143-01-01`), which would fail the query instead of the check.
const YEARS: std::ops::RangeInclusive<i32> = 2000..=9999;

fn within_years(name: &str, text: &str, day: NaiveDate) -> Result<NaiveDate, ApiError> {
    use chrono::Datelike;
    if YEARS.contains(&day.year()) {
        return Ok(day);
    }
    Err(ApiError::BadRequest(format!(
        "Invalid {name} '{text}': the year must be between {} and {}",
        YEARS.start(),
        YEARS.end()
    )))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(team_usage))
        .routes(routes!(organization_usage))
}

/// The period: a calendar month, or a range of UTC days.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PeriodQuery {
    /// A calendar month, `YYYY-MM` (UTC), year 2000 to 9999. Required unless `from` and `to`
    /// are given.
    #[param(pattern = "^[2-9][0-9]{3}-(0[1-9]|1[0-2])$")]
    period: Option<String>,
    /// First day, `YYYY-MM-DD` (UTC), inclusive; with `to`, instead of `period`.
    #[param(pattern = "^[2-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")]
    from: Option<String>,
    /// Last day, `YYYY-MM-DD` (UTC), inclusive, not before `from` and at most 732 days after.
    #[param(pattern = "^[2-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")]
    to: Option<String>,
}

/// A resolved period: its label, the half-open instant range, and its first and last day.
struct Range {
    label: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    first_day: NaiveDate,
    last_day: NaiveDate,
}

/// Whether `text` has exactly the shape given, `d` standing for an ASCII digit.
fn digits_in_shape(text: &str, shape: &str) -> bool {
    text.len() == shape.len()
        && text.bytes().zip(shape.bytes()).all(|(c, s)| match s {
            b'd' => c.is_ascii_digit(),
            other => c == other,
        })
}

fn at_midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

impl PeriodQuery {
    fn range(&self) -> Result<Range, ApiError> {
        match (&self.period, &self.from, &self.to) {
            (Some(period), None, None) => month(Some(period)),
            (None, Some(from), Some(to)) => days(from, to),
            (None, None, None) => month(None),
            (Some(_), _, _) => Err(ApiError::BadRequest(
                "Give either period (YYYY-MM) or from and to (YYYY-MM-DD), not both".into(),
            )),
            _ => Err(ApiError::BadRequest(
                "from and to must be given together (YYYY-MM-DD, both inclusive)".into(),
            )),
        }
    }
}

/// `YYYY-MM` -> the calendar month.
fn month(period: Option<&str>) -> Result<Range, ApiError> {
    let period = period.ok_or_else(|| {
        ApiError::BadRequest(
            "period query parameter is required (YYYY-MM), or from and to (YYYY-MM-DD)".into(),
        )
    })?;
    let invalid = || {
        ApiError::BadRequest(format!(
            "Invalid period '{period}': expected YYYY-MM, e.g. 2025-10"
        ))
    };
    if !digits_in_shape(period, "dddd-dd") {
        return Err(invalid());
    }
    let (year, month) = period.split_once('-').ok_or_else(invalid)?;
    let (year, month): (i32, u32) = (
        year.parse().map_err(|_| invalid())?,
        month.parse().map_err(|_| invalid())?,
    );
    let first_day = NaiveDate::from_ymd_opt(year, month, 1).ok_or_else(invalid)?;
    let first_day = within_years("period", period, first_day)?;
    let next_month = first_day
        .checked_add_months(chrono::Months::new(1))
        .ok_or_else(invalid)?;
    let last_day = next_month.pred_opt().ok_or_else(invalid)?;
    Ok(Range {
        label: period.to_owned(),
        start: at_midnight(first_day),
        end: at_midnight(next_month),
        first_day,
        last_day,
    })
}

/// `from`..=`to`, whole UTC days.
fn days(from: &str, to: &str) -> Result<Range, ApiError> {
    let parse = |name: &str, text: &str| {
        let invalid = || {
            ApiError::BadRequest(format!(
                "Invalid {name} '{text}': expected YYYY-MM-DD, e.g. 2025-10-01"
            ))
        };
        // chrono alone would also take `2025-1-5` or `+2025-01-01`.
        if !digits_in_shape(text, "dddd-dd-dd") {
            return Err(invalid());
        }
        let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| invalid())?;
        within_years(name, text, day)
    };
    let (first_day, last_day) = (parse("from", from)?, parse("to", to)?);
    if last_day < first_day {
        return Err(ApiError::BadRequest(format!(
            "to ({last_day}) is before from ({first_day})"
        )));
    }
    let span = (last_day - first_day).num_days() as u64 + 1;
    if span > MAX_RANGE_DAYS {
        return Err(ApiError::BadRequest(format!(
            "from..to may span at most {MAX_RANGE_DAYS} days, not {span}"
        )));
    }
    let end = last_day
        .checked_add_days(Days::new(1))
        .ok_or_else(|| ApiError::BadRequest(format!("Invalid to '{to}'")))?;
    Ok(Range {
        label: format!("{first_day}/{last_day}"),
        start: at_midnight(first_day),
        end: at_midnight(end),
        first_day,
        last_day,
    })
}

/// The guide's `summary` block.
#[derive(Serialize, ToSchema)]
struct Summary {
    total_jobs: i64,
    successful_jobs: i64,
    failed_jobs: i64,
    total_cost_usd: f64,
    total_tokens: i64,
    avg_cost_per_job: f64,
    /// Credits deducted in the period.
    credits_used: i64,
}

/// One job type's figures in `job_types`.
#[derive(Serialize, ToSchema)]
struct JobTypeUsage {
    count: i64,
    cost_usd: f64,
}

/// One UTC day's figures, for charts (days without jobs are left out).
#[derive(Serialize, ToSchema)]
struct DailyUsage {
    date: NaiveDate,
    total_jobs: i64,
    successful_jobs: i64,
    failed_jobs: i64,
    total_cost_usd: f64,
    total_tokens: i64,
}

impl From<&DailyUsageRow> for DailyUsage {
    fn from(row: &DailyUsageRow) -> Self {
        Self {
            date: row.day,
            total_jobs: row.jobs,
            successful_jobs: row.completed,
            failed_jobs: row.failed,
            total_cost_usd: MicroUsd(row.cost_micro_usd).as_usd(),
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
    daily: Vec<DailyUsage>,
}

/// A team's figures inside an organization report.
#[derive(Serialize, ToSchema)]
struct TeamUsageBlock {
    summary: Summary,
    job_types: BTreeMap<String, JobTypeUsage>,
}

#[derive(Serialize, ToSchema)]
struct OrganizationUsageReport {
    organization_id: String,
    period: String,
    from: NaiveDate,
    to: NaiveDate,
    summary: Summary,
    job_types: BTreeMap<String, JobTypeUsage>,
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
                cost_usd: MicroUsd(cost).as_usd(),
            },
        );
    }
    let summary = Summary {
        total_jobs: jobs,
        successful_jobs: rows.iter().map(|r| r.completed).sum(),
        failed_jobs: rows.iter().map(|r| r.failed).sum(),
        total_cost_usd: MicroUsd(cost).as_usd(),
        total_tokens: rows.iter().map(|r| r.tokens).sum(),
        avg_cost_per_job: if jobs == 0 {
            0.0
        } else {
            MicroUsd(cost).as_usd() / jobs as f64
        },
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
    let (rows, credits, daily) = tokio::try_join!(
        db::usage::by_team_and_type(&state.db, &teams, range.start, range.end),
        db::usage::credits_used(&state.db, &teams, range.start, range.end),
        db::usage::by_day(&state.db, &teams, range.start, range.end),
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
    let (rows, credits, daily) = tokio::try_join!(
        db::usage::by_team_and_type(&state.db, &team_ids, range.start, range.end),
        db::usage::credits_used(&state.db, &team_ids, range.start, range.end),
        db::usage::by_day(&state.db, &team_ids, range.start, range.end),
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
            (team.clone(), TeamUsageBlock { summary, job_types })
        })
        .collect();
    Ok(JsonResponse(OrganizationUsageReport {
        organization_id,
        period: range.label,
        from: range.first_day,
        to: range.last_day,
        summary,
        job_types,
        daily: daily.iter().map(DailyUsage::from).collect(),
        teams,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_calendar_months() {
        let range = month(Some("2025-12")).expect("valid");
        assert_eq!(range.start.to_rfc3339(), "2025-12-01T00:00:00+00:00");
        assert_eq!(range.end.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert_eq!(range.last_day.to_string(), "2025-12-31");
        let february = month(Some("2024-02")).expect("valid");
        assert_eq!(february.last_day.to_string(), "2024-02-29");
        for bad in [
            None,
            Some("2025-13"),
            Some("2025-1"),
            Some("25-10"),
            Some("2025/10"),
            Some("abcd-ef"),
            Some("2025-+1"),
            Some("+025-01"),
        ] {
            assert!(month(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn day_ranges_are_inclusive_and_bounded() {
        let range = days("2025-10-30", "2025-11-02").expect("valid");
        assert_eq!(range.start.to_rfc3339(), "2025-10-30T00:00:00+00:00");
        assert_eq!(range.end.to_rfc3339(), "2025-11-03T00:00:00+00:00");
        assert_eq!(range.label, "2025-10-30/2025-11-02");
        assert!(days("2025-10-02", "2025-10-01").is_err());
        assert!(days("2025-10-01", "2025-13-01").is_err());
        assert!(days("2020-01-01", "2025-01-01").is_err());
        assert!(days("2025-10-01", "2025-10-01").is_ok());
        assert!(days("2025-1-01", "2025-10-01").is_err());
        assert!(days("2025-10-01", "2025-10-1").is_err());
        assert!(days("+2025-10-01", "2025-10-01").is_err());
    }

    #[test]
    fn years_outside_2000_to_9999_are_refused_before_reaching_the_database() {
        assert!(days("-262143-01-01", "2025-01-01").is_err());
        assert!(days("9999-12-01", "+10000-01-01").is_err());
        assert!(days("1999-12-31", "2000-01-01").is_err());
        assert!(days("9999-12-01", "9999-12-31").is_ok());
        assert!(month(Some("1999-12")).is_err());
        assert!(month(Some("9999-12")).is_ok());
    }
}
