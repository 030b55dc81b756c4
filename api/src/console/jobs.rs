//! Jobs: a filtered list (team, status, type, created range) paged by keyset, and a job with its
//! calls, each call's attempts (models tried, errors), tokens, cost and latency; cancel. A team
//! sees only its own jobs: the filter is pinned to it and another team's job is a 404.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use chrono::{DateTime, NaiveDate, Utc};
use maud::{Markup, html};
use saasllm_shared::db;
use saasllm_shared::db::calls::CallRow;
use saasllm_shared::db::listings::{self, AttemptRow, JobFilter, JobListing};
use saasllm_shared::domain::status::JobStatus;
use serde::Deserialize;
use uuid::Uuid;

use crate::console::dispatch::{Api, segment};
use crate::console::session::{ConsoleForm, Session};
use crate::console::view::{self, Notice, Page, PageResult, pushed};
use crate::error::ApiError;
use crate::job_access::visible_job;
use crate::state::AppState;
use crate::usage_period;

const PAGE: i64 = 50;
const CALLS_PAGE: i64 = 50;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    team_id: Option<String>,
    status: Option<String>,
    job_type: Option<String>,
    /// First day (UTC) of the created range, `YYYY-MM-DD`.
    from: Option<String>,
    /// Last day (UTC) of the created range, inclusive.
    to: Option<String>,
    /// `<created_at RFC 3339>_<job_id>` of the last job of the previous page.
    before: Option<String>,
}

fn blank_to_none(value: Option<&String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn day(text: Option<&String>, name: &str) -> Result<Option<NaiveDate>, ApiError> {
    blank_to_none(text)
        .map(|t| usage_period::day(name, &t))
        .transpose()
}

fn filter_of(session: &Session, query: &ListQuery) -> Result<JobFilter, ApiError> {
    let status = blank_to_none(query.status.as_ref())
        .map(|s| {
            JobStatus::ALL
                .into_iter()
                .find(|known| known.as_str() == s)
                .ok_or_else(|| ApiError::BadRequest(format!("Unknown job status '{s}'")))
        })
        .transpose()?;
    let before = blank_to_none(query.before.as_ref())
        .map(|cursor| {
            let (at, id) = cursor.split_once('_').unwrap_or_default();
            Ok::<_, ApiError>((
                DateTime::parse_from_rfc3339(at)
                    .map_err(|_| ApiError::BadRequest("Invalid page cursor".into()))?
                    .with_timezone(&Utc),
                id.parse::<Uuid>()
                    .map_err(|_| ApiError::BadRequest("Invalid page cursor".into()))?,
            ))
        })
        .transpose()?;
    Ok(JobFilter {
        // A team key sees its own jobs whatever the query says.
        team_id: match session.caller.team_id() {
            Some(own) => Some(own.to_owned()),
            None => blank_to_none(query.team_id.as_ref()),
        },
        status,
        job_type: blank_to_none(query.job_type.as_ref()),
        created_from: day(query.from.as_ref(), "from")?.map(usage_period::at_midnight),
        created_to: day(query.to.as_ref(), "to")?
            .and_then(|d| d.succ_opt())
            .map(usage_period::at_midnight),
        before,
    })
}

/// `GET /console/jobs`
pub async fn list(
    session: Session,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> PageResult {
    let filter = filter_of(&session, &query)?;
    let jobs = listings::jobs(&state.db, &filter, PAGE).await?;
    let next = (jobs.len() as i64 == PAGE)
        .then(|| jobs.last())
        .flatten()
        .map(|last| next_page(&query, last));
    let content = html! {
        form.filters method="get" action="/console/jobs" hx-get="/console/jobs" hx-target="main" hx-select="main" hx-push-url="true" {
            @if session.is_admin() {
                label { "Team" input name="team_id" value=[query.team_id.as_deref()]; }
            }
            label { "Status" select name="status" {
                option value="" { "any" }
                @for status in JobStatus::ALL {
                    option value=(status.as_str()) selected[query.status.as_deref() == Some(status.as_str())] { (status.as_str()) }
                }
            } }
            label { "Type" input name="job_type" value=[query.job_type.as_deref()]; }
            label { "From" input type="date" name="from" value=[query.from.as_deref()]; }
            label { "To" input type="date" name="to" value=[query.to.as_deref()]; }
            button type="submit" { "Filter" }
        }
        div.table-wrap { table {
            thead { tr { th { "Job" } @if session.is_admin() { th { "Team" } } th { "Type" } th { "Status" }
                         th.num { "Calls" } th { "Created" } th.hide-narrow { "Credit" } } }
            tbody {
                @for listing in &jobs {
                    @let job = &listing.job;
                    tr {
                        td { a.mono href={ "/console/jobs/" (job.job_id) } { (job.job_id) } }
                        @if session.is_admin() { td { a href={ "/console/teams/" (segment(&job.team_id)) } { (job.team_id) } } }
                        td.wrap { (job.job_type) }
                        td { span class={ "status " (job.status.as_str()) } { (job.status.as_str()) } }
                        td.num { (view::count(listing.calls)) }
                        td { (view::time(job.created_at)) }
                        td.hide-narrow { (job.credit_hold) }
                    }
                }
                @if jobs.is_empty() { tr { td colspan="7" .muted { "No jobs match." } } }
            }
        } }
        @if let Some(next) = next {
            p.pager { a href={ "/console/jobs?" (next) } { "Older →" } }
        }
    };
    Ok(Page {
        session: &session,
        title: "Jobs".into(),
        section: "jobs",
        notice: None,
    }
    .render(content))
}

/// The query of the next (older) page of the list: the same filters, before `last`.
fn next_page(query: &ListQuery, last: &JobListing) -> String {
    let mut next = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in [
        ("team_id", &query.team_id),
        ("status", &query.status),
        ("job_type", &query.job_type),
        ("from", &query.from),
        ("to", &query.to),
    ] {
        if let Some(value) = value {
            next.append_pair(name, value);
        }
    }
    let cursor = format!("{}_{}", last.job.created_at.to_rfc3339(), last.job.job_id);
    next.append_pair("before", &cursor);
    next.finish()
}

#[derive(Deserialize)]
pub struct CallsQuery {
    after: Option<Uuid>,
}

/// `GET /console/jobs/{id}`
pub async fn page(
    session: Session,
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    Query(query): Query<CallsQuery>,
) -> PageResult {
    render(&session, &state, &job_id, query.after, None).await
}

async fn render(
    session: &Session,
    state: &AppState,
    job_id: &str,
    after: Option<Uuid>,
    notice: Option<Notice>,
) -> PageResult {
    let job = visible_job(state, &session.caller, job_id).await?;
    let calls = db::calls::page_for_job(&state.db, job.job_id, None, after, CALLS_PAGE).await?;
    let ids: Vec<Uuid> = calls.iter().map(|c| c.call_id).collect();
    let (attempts, totals) = tokio::try_join!(
        listings::attempts(&state.db, &ids),
        db::calls::totals_for_job(&state.db, job.job_id)
    )?;
    let open = job.status.accepts_calls();
    let content = html! {
        div.cards {
            div.card { div.label { "Status" } div.value { span class={ "status " (job.status.as_str()) } { (job.status.as_str()) } } }
            div.card { div.label { "Team" } div.value { (job.team_id) } }
            div.card { div.label { "Type" } div.value { (job.job_type) } }
            div.card { div.label { "Credit" } div.value { (job.credit_hold) } }
            div.card { div.label { "Cost of calls" } div.value { (view::usd(totals.cost_micro_usd)) } }
            div.card { div.label { "Tokens" } div.value { (view::count(totals.tokens)) } }
        }
        p.muted { "Created " (view::time(job.created_at)) " · completed " (view::maybe_time(job.completed_at))
                  " · expires " (view::time(job.expires_at))
                  @if let Some(error) = &job.error_message { " · error: " (error) } }
        @if open {
            form method="post" action={ "/console/jobs/" (job.job_id) "/cancel" } {
                (view::csrf(session))
                button.danger type="submit" { "Cancel job" }
            }
        }
        h2 { "Calls" }
        (calls_table(&calls, &attempts))
        @if calls.len() as i64 == CALLS_PAGE {
            @if let Some(last) = calls.last() {
                p.pager { a href={ "/console/jobs/" (job.job_id) "?after=" (last.call_id) } { "More calls →" } }
            }
        }
    };
    let response = Page {
        session,
        title: format!("Job {}", job.job_id),
        section: "jobs",
        notice,
    }
    .render(content);
    Ok(pushed(response, &format!("/console/jobs/{}", job.job_id)))
}

/// A page of the job's calls, each with its attempts.
fn calls_table(calls: &[CallRow], attempts: &[AttemptRow]) -> Markup {
    html! {
        div.table-wrap { table {
            thead { tr { th { "Call" } th { "Group" } th { "Status" } th { "Attempts (model: outcome)" } th.num { "Tokens" }
                         th.num { "Cost" } th.num { "Latency" } th { "Error" } } }
            tbody {
                @for call in calls {
                    tr {
                        td { span.mono title=(call.call_id) { (call.call_id.to_string()[..8]) "…" } @if let Some(custom) = &call.custom_id { br; span.muted { (custom) } } }
                        td { (call.model_group) }
                        td { span class={ "status " (call.status.as_str()) } { (call.status.as_str()) } }
                        td.wrap {
                            @for attempt in attempts.iter().filter(|a| a.call_id == call.call_id) {
                                span class={ "status " (attempt.outcome) } title=[attempt.error.as_deref()] {
                                    (attempt.model_name) ": " (attempt.outcome)
                                    @if let Some(status) = attempt.http_status { " (" (status) ")" }
                                    " " (attempt.latency_ms) " ms"
                                } " "
                            }
                        }
                        td.num { (view::or_dash(call.total_tokens)) }
                        td.num { (call.cost_micro_usd.map_or_else(|| "–".to_owned(), view::usd)) }
                        td.num { (call.latency_ms.map_or_else(|| "–".to_owned(), |ms| format!("{ms} ms"))) }
                        td.wrap { (view::or_dash(call.error.as_deref())) }
                    }
                }
                @if calls.is_empty() { tr { td colspan="8" .muted { "No calls." } } }
            }
        } }
    }
}

/// `POST /console/jobs/{id}/cancel`: `POST /api/jobs/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    Extension(api): Extension<Api>,
    Path(job_id): Path<String>,
    form: ConsoleForm,
) -> PageResult {
    let session = &form.session;
    let path = format!("/api/jobs/{}/cancel", segment(&job_id));
    let notice = match api.call(session, Method::POST, &path, None, None).await {
        Ok(_) => Notice::Done(
            "Job cancelled: its queued calls will not run and its credit is released".into(),
        ),
        Err(refusal) if refusal.status == 404 => {
            return Err(ApiError::NotFound(refusal.detail).into());
        }
        Err(refusal) => Notice::Refused(refusal.detail),
    };
    render(session, &state, &job_id, None, Some(notice)).await
}
