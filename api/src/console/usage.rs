//! Usage by day for an organization, a team or everyone (a team: itself), with charts and a
//! CSV export of the same rows.

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use chrono::{Duration, NaiveDate, Utc};
use maud::html;
use saasllm_shared::db;
use saasllm_shared::db::usage::DailyUsageRow;
use serde::Deserialize;

use crate::console::chart::{self, Bar};
use crate::console::session::Session;
use crate::console::view::{self, Page, PageResult};
use crate::error::ApiError;
use crate::state::AppState;
use crate::usage_period;

/// Longest range a usage page covers.
const MAX_DAYS: i64 = 366;

#[derive(Deserialize, Default)]
pub struct UsageQuery {
    organization_id: Option<String>,
    team_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// Whose usage, over which days.
struct Scope {
    label: String,
    team_ids: Vec<String>,
    from: NaiveDate,
    to: NaiveDate,
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

async fn scope(session: &Session, state: &AppState, query: &UsageQuery) -> Result<Scope, ApiError> {
    let to = match given(&query.to) {
        Some(text) => usage_period::day("to", text)?,
        None => Utc::now().date_naive(),
    };
    let from = match given(&query.from) {
        Some(text) => usage_period::day("from", text)?,
        None => to
            .checked_sub_signed(Duration::days(29))
            .ok_or_else(|| ApiError::BadRequest("'to' is out of range".into()))?,
    };
    if from > to || (to - from).num_days() >= MAX_DAYS {
        return Err(ApiError::BadRequest(format!(
            "'from' must be on or before 'to', at most {MAX_DAYS} days apart"
        )));
    }
    let (label, team_ids) = match (
        session.caller.team_id(),
        given(&query.team_id),
        given(&query.organization_id),
    ) {
        (Some(own), _, _) => (format!("team {own}"), vec![own.to_owned()]),
        (None, Some(team), _) => match db::teams::find(&state.db, team).await? {
            Some(_) => (format!("team {team}"), vec![team.to_owned()]),
            None => return Err(crate::auth::team_not_found(team)),
        },
        (None, None, Some(org)) => {
            if db::organizations::find(&state.db, org).await?.is_none() {
                return Err(ApiError::NotFound(format!(
                    "Organization '{org}' not found"
                )));
            }
            let teams = db::teams::list_by_organization(&state.db, org).await?;
            (
                format!("organization {org}"),
                teams.into_iter().map(|t| t.team_id).collect(),
            )
        }
        (None, None, None) => {
            let teams = db::listings::team_ids(&state.db).await?;
            ("every team".to_owned(), teams)
        }
    };
    Ok(Scope {
        label,
        team_ids,
        from,
        to,
    })
}

/// The scope the query asks for and its rows, or why there are none.
async fn report(
    session: &Session,
    state: &AppState,
    query: &UsageQuery,
) -> Result<(Scope, Vec<DailyUsageRow>), ApiError> {
    let scope = scope(session, state, query).await?;
    let end = scope
        .to
        .succ_opt()
        .ok_or_else(|| ApiError::BadRequest("Dates out of range".into()))?;
    let rows = db::usage::by_day(
        &state.db,
        &scope.team_ids,
        usage_period::at_midnight(scope.from),
        usage_period::at_midnight(end),
    )
    .await?;
    Ok((scope, rows))
}

/// `GET /console/usage`
pub async fn page(
    session: Session,
    State(state): State<AppState>,
    Query(query): Query<UsageQuery>,
) -> PageResult {
    let (scope, days) = report(&session, &state, &query).await?;
    let series = |f: fn(&DailyUsageRow) -> i64| -> Vec<Bar> {
        let mut bars = Vec::new();
        let mut day = scope.from;
        while day <= scope.to {
            let value = days.iter().find(|d| d.day == day).map_or(0, f);
            bars.push(Bar {
                label: day.format("%m-%d").to_string(),
                value: value as f64,
            });
            match day.succ_opt() {
                Some(next) => day = next,
                None => break,
            }
        }
        bars
    };
    let csv_query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(
            [
                ("organization_id", &query.organization_id),
                ("team_id", &query.team_id),
            ]
            .into_iter()
            .filter_map(|(n, v)| given(v).map(|v| (n, v.to_owned()))),
        )
        .append_pair("from", &scope.from.to_string())
        .append_pair("to", &scope.to.to_string())
        .finish();
    let content = html! {
        form.filters method="get" action="/console/usage" {
            @if session.is_admin() {
                label { "Organization" input name="organization_id" value=[given(&query.organization_id)]; }
                label { "Team" input name="team_id" value=[given(&query.team_id)]; }
            }
            label { "From" input type="date" name="from" value=(scope.from); }
            label { "To" input type="date" name="to" value=(scope.to); }
            button type="submit" { "Show" }
            a href={ "/console/usage.csv?" (csv_query) } download { "Download CSV" }
        }
        p.muted { "Jobs created " (scope.from) " to " (scope.to) " (UTC), " (scope.label) "." }
        div.charts {
            (chart::bars("Jobs per day", &series(|d| d.jobs), chart::count))
            (chart::bars("LLM cost per day", &series(|d| d.cost_micro_usd), chart::usd))
        }
        div.table-wrap { table {
            thead { tr { th { "Day" } th.num { "Jobs" } th.num { "Completed" } th.num { "Failed" } th.num { "Tokens" } th.num { "Cost" } } }
            tbody {
                @for day in &days {
                    tr { td { (day.day) } td.num { (view::count(day.jobs)) } td.num { (view::count(day.completed)) }
                         td.num { (view::count(day.failed)) } td.num { (view::count(day.tokens)) } td.num { (view::usd(day.cost_micro_usd)) } }
                }
                @if days.is_empty() { tr { td colspan="6" .muted { "No jobs in this range." } } }
            }
        } }
    };
    Ok(Page {
        session: &session,
        title: "Usage".into(),
        section: "usage",
        notice: None,
    }
    .render(content))
}

/// `GET /console/usage.csv`: the usage page's rows as CSV.
pub async fn csv(
    session: Session,
    State(state): State<AppState>,
    Query(query): Query<UsageQuery>,
) -> PageResult {
    let (scope, days) = report(&session, &state, &query).await?;
    let mut body = String::from("day,jobs,completed,failed,tokens,cost_usd\n");
    for d in &days {
        body.push_str(&format!(
            "{},{},{},{},{},{}.{:06}\n",
            d.day,
            d.jobs,
            d.completed,
            d.failed,
            d.tokens,
            d.cost_micro_usd / 1_000_000,
            d.cost_micro_usd % 1_000_000
        ));
    }
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    view::set_headers(
        headers,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
    );
    let name = format!(
        "attachment; filename=\"usage-{}-{}.csv\"",
        scope.from, scope.to
    );
    if let Ok(value) = HeaderValue::from_str(&name) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
